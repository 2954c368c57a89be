"""The static check of an app's source: monkey-patching is an error, blocking calls in async
code are warnings with file, line and the asyncio alternative; clean code has no findings."""

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO, ROLE, load_module

FIXTURES = REPO / "tests" / "fixtures" / "app_source"
SCRIPT = ROLE / "files" / "check_app_source.py"


@pytest.fixture(scope="module")
def checker():
    return load_module("check_app_source", SCRIPT)


def findings(checker, path):
    return [(f["severity"], f["file"], f["line"], f["call"]) for f in checker.check(str(path))["findings"]]


def test_gevent_monkey_patching_is_an_error(checker):
    assert findings(checker, FIXTURES / "gevent_app") == [
        ("error", "main.py", 3, "gevent.monkey.patch_all")]


def test_eventlet_monkey_patching_is_an_error(checker):
    assert findings(checker, FIXTURES / "eventlet_app") == [("error", "main.py", 3, "eventlet.monkey_patch")]


def test_blocking_calls_in_async_code_are_warnings(checker):
    assert findings(checker, FIXTURES / "blocking_app") == [
        ("warning", "main.py", 14, "time.sleep"),
        ("warning", "main.py", 15, "time.sleep"),
        ("warning", "main.py", 16, "requests.get"),
        ("warning", "main.py", 21, "urllib.request.urlopen"),
        ("warning", "main.py", 23, "subprocess.run"),
    ]


def test_warnings_name_the_asyncio_alternative(checker):
    messages = {f["call"]: f["message"] for f in checker.check(str(FIXTURES / "blocking_app"))["findings"]}
    assert "await asyncio.sleep" in messages["time.sleep"]
    assert "httpx.AsyncClient" in messages["requests.get"]
    assert "asyncio.create_subprocess_exec" in messages["subprocess.run"]


@pytest.mark.parametrize("path", [FIXTURES / "clean_app", REPO / "examples" / "app"])
def test_clean_code_has_no_findings(checker, path):
    assert checker.check(str(path)) == {"findings": [], "unparsable": []}


def test_reads_a_wheel(checker, tmp_path):
    wheel = tmp_path / "blocking-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(FIXTURES / "gevent_app" / "main.py", "gevent_app/main.py")
    assert findings(checker, wheel) == [("error", "gevent_app/main.py", 3, "gevent.monkey.patch_all")]


@pytest.mark.parametrize("args, status", [
    (["gevent_app"], 1), (["blocking_app"], 0), (["blocking_app", "--strict"], 1), (["clean_app", "--strict"], 0)])
def test_command_line(args, status):
    result = subprocess.run([sys.executable, str(SCRIPT), str(FIXTURES / args[0]), *args[1:]],
                            capture_output=True, text=True)
    assert result.returncode == status, result.stdout
    if args[0] == "blocking_app":
        assert "main.py:14: warning: time.sleep() blocks the event loop" in result.stdout


def test_digest_follows_the_content_not_the_debris(checker, tmp_path):
    import shutil

    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "app", app, ignore=shutil.ignore_patterns("__pycache__"))
    first = checker.digest(str(app))
    (app / "example_app" / "__pycache__").mkdir()
    (app / "example_app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (app / "build").mkdir()
    (app / "build" / "junk.txt").write_text("x")
    assert checker.digest(str(app)) == first
    (app / "requirements.txt").write_text("fastapi>=0.115,<1\nhttpx\n")
    assert checker.digest(str(app)) != first


def test_command_line_json_has_findings_and_digest(tmp_path):
    import json

    out = subprocess.run([sys.executable, str(SCRIPT), "--json", str(FIXTURES / "clean_app")],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["findings"] == [] and len(result["digest"]) == 64


@pytest.mark.parametrize("name", ["gevent_app", "blocking_app", "clean_app"])
def test_the_role_runs_the_same_check_in_ansibles_process(name):
    """plugins/filter/asgi_app_source.py calls this script's code: same findings, same digest
    (releases keep their names), without a command on the controller."""
    import json

    source_filter = load_module("asgi_app_source_filter", REPO / "plugins" / "filter" / "asgi_app_source.py")
    out = subprocess.run([sys.executable, str(SCRIPT), "--json", str(FIXTURES / name)],
                         capture_output=True, text=True, check=False).stdout
    assert source_filter.source_check(str(FIXTURES / name), str(SCRIPT)) == json.loads(out)


def test_a_source_it_cannot_read_fails_naming_it(tmp_path):
    from ansible.errors import AnsibleFilterError

    source_filter = load_module("asgi_app_source_filter", REPO / "plugins" / "filter" / "asgi_app_source.py")
    package = tmp_path / "myapp-1.0.txt"
    package.write_text("not an archive")
    with pytest.raises(AnsibleFilterError, match="myapp-1.0.txt"):
        source_filter.source_check(str(package), str(SCRIPT))
