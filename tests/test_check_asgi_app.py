"""check_asgi_app.py: the import-and-lifespan check a new release must pass before it serves."""

import os
import subprocess
import sys

import pytest

from support import REPO, ROLE

FIXTURES = REPO / "tests" / "fixtures" / "asgi_apps"


def check(target):
    result = subprocess.run([sys.executable, str(ROLE / "files" / "check_asgi_app.py"), target],
                            capture_output=True, text=True, timeout=120, cwd=FIXTURES,
                            env={**os.environ, "PYTHONPATH": str(FIXTURES), "PYTHONDONTWRITEBYTECODE": "1"})
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("target, said", [
    ("candidates:good", "its lifespan startup and shutdown ran"),
    ("candidates:without_lifespan", "it does not use lifespan"),
    ("candidates:create_app()", "its lifespan startup and shutdown ran"),
    ("candidates:create_app('with a title', )", "its lifespan startup and shutdown ran"),
    ("candidates:create_app(title='keyword')", "its lifespan startup and shutdown ran"),
])
def test_asgi_applications_pass(target, said):
    rc, output = check(target)
    assert rc == 0, output
    assert said in output


@pytest.mark.parametrize("target, said", [
    ("broken_import:app", "ModuleNotFoundError: No module named 'a_module_that_is_not_installed'"),
    ("candidates:missing", "AttributeError"),
    ("candidates:failing_lifespan", "RuntimeError: database unreachable"),
    ("candidates:wsgi", "like a WSGI application"),
    # Refused by gunicorn's own loader, with its own reasons.
    ("candidates:not_callable", "Application object must be callable"),
    ("candidates:Holder.app", "Failed to parse 'Holder.app' as an attribute name or function call"),
    ("candidates:create_app(make())", "Failed to parse arguments as literal values"),
    ("candidates:create_app(1, 2)", "create_app() takes from 0 to 1 positional arguments but 2 were given"),
    ("candidates:FastAPI", "is a class"),
    ("candidates:sync_three_arguments", "not an awaitable"),
])
def test_what_cannot_serve_is_refused_with_the_reason(target, said):
    rc, output = check(target)
    assert rc == 1
    assert said in output, output
    if "Error" in said:
        assert "Traceback (most recent call last)" in output


def test_example_app_passes():
    result = subprocess.run([sys.executable, str(ROLE / "files" / "check_asgi_app.py"), "example_app.main:app"],
                            capture_output=True, text=True, timeout=120, cwd=REPO / "examples" / "app",
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr

