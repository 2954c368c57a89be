"""Helpers for the fast tests: the role's Python and templates, without any host."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "asgi_app"


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sizing():
    """plugins/filter/asgi_app.py, the filters the role computes derived values with."""
    return load_module("asgi_app_filters", REPO / "plugins" / "filter" / "asgi_app.py")


@pytest.fixture(scope="session")
def host_resources():
    """roles/asgi_app/files/host_resources.py, the script the role runs on the target."""
    return load_module("host_resources", ROLE / "files" / "host_resources.py")


@pytest.fixture(scope="session")
def render():
    """Render one of the role's templates as the role would: render(template, resources, **vars)."""
    return load_module("render_role", REPO / "tools" / "render_role.py").render
