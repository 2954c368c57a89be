"""Helpers for the fast tests: the role's Python and templates, without any host."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

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
def render(sizing):
    """Render one of the role's templates as the role would, for the given resources and variables."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trusted(value):
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, dict):
            return {key: trusted(item) for key, item in value.items()}
        if isinstance(value, list):
            return [trusted(item) for item in value]
        return value

    def _render(template, resources, **overrides):
        variables = {}
        for source in ("defaults/main.yml", "vars/main.yml"):
            variables.update(yaml.safe_load((ROLE / source).read_text()))
        variables.update(ansible_managed="Ansible managed", **overrides)
        variables["__asgi_app_plan"] = sizing.worker_plan(
            resources, workload=variables["asgi_app_workload"], workers=variables["asgi_app_workers"],
            worker_memory_mb=variables["asgi_app_worker_memory_mb"],
            memory_budget_mb=variables["asgi_app_memory_budget_mb"])
        variables["__asgi_app_timeouts"] = sizing.timeout_chain(
            variables["asgi_app_graceful_timeout"], variables["asgi_app_uvicorn_graceful_timeout"],
            variables["asgi_app_timeout_stop_sec"])
        templar = Templar(loader=DataLoader(), variables=trusted(variables))
        return templar.template(trust_as_template((ROLE / "templates" / template).read_text()))

    return _render
