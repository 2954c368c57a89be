"""The static check of an app's source (plugins/module_utils/asgi_app_source.py): monkey-patching
is an error, blocking calls in async code are warnings with file, line and the asyncio
alternative; clean code has no findings. What is listed, digested and archived is in
tests/test_app_source.py."""

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile

import pytest

from ansible_collections.asgi.gunicorn.plugins.module_utils import (
    asgi_app_source as app_source,
)
from support import REPO

FIXTURES = REPO / "tests" / "fixtures" / "app_source"
SCRIPT = REPO / "plugins" / "module_utils" / "asgi_app_source.py"
GEVENT = (FIXTURES / "gevent_app" / "main.py").read_bytes()


def findings(path):
    return [(f["severity"], f["file"], f["line"], f["call"])
            for f in app_source.inspect_source(str(path))["findings"]]


def check_command(*args):
    return subprocess.run([sys.executable, str(SCRIPT), "check", *map(str, args)],
                          capture_output=True, text=True, check=False)


def test_gevent_monkey_patching_is_an_error():
    assert findings(FIXTURES / "gevent_app") == [("error", "main.py", 3, "gevent.monkey.patch_all")]


def test_eventlet_monkey_patching_is_an_error():
    assert findings(FIXTURES / "eventlet_app") == [("error", "main.py", 3, "eventlet.monkey_patch")]


def test_blocking_calls_in_async_code_are_warnings():
    assert findings(FIXTURES / "blocking_app") == [
        ("warning", "main.py", 14, "time.sleep"),
        ("warning", "main.py", 15, "time.sleep"),
        ("warning", "main.py", 16, "requests.get"),
        ("warning", "main.py", 21, "urllib.request.urlopen"),
        ("warning", "main.py", 23, "subprocess.run"),
    ]


def test_warnings_name_the_asyncio_alternative():
    result = app_source.inspect_source(str(FIXTURES / "blocking_app"))
    messages = {f["call"]: f["message"] for f in result["findings"]}
    assert "await asyncio.sleep" in messages["time.sleep"]
    assert "httpx.AsyncClient" in messages["requests.get"]
    assert "asyncio.create_subprocess_exec" in messages["subprocess.run"]


@pytest.mark.parametrize("path", [FIXTURES / "clean_app", REPO / "examples" / "app"])
def test_clean_code_has_no_findings(path):
    result = app_source.inspect_source(str(path))
    assert (result["findings"], result["unparsable"]) == ([], [])


def test_a_file_that_does_not_parse_is_named_not_checked(tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\0\n")
    result = app_source.inspect_source(str(tmp_path))
    assert result["findings"] == []
    assert [problem.split(":")[0] for problem in result["unparsable"]] == ["broken.py", "nul.py"]


def test_reads_a_wheel(tmp_path):
    wheel = tmp_path / "blocking-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("gevent_app/main.py", GEVENT)
        archive.writestr("blocking-1.0.dist-info/METADATA", "Name: blocking\n")
    assert findings(wheel) == [("error", "gevent_app/main.py", 3, "gevent.monkey.patch_all")]
    assert app_source.inspect_source(str(wheel))["files"] == 2


def test_reads_an_sdist(tmp_path):
    sdist = tmp_path / "blocking-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        info = tarfile.TarInfo("blocking-1.0/gevent_app/main.py")
        info.size = len(GEVENT)
        archive.addfile(info, io.BytesIO(GEVENT))
    assert findings(sdist) == [("error", "blocking-1.0/gevent_app/main.py", 3, "gevent.monkey.patch_all")]


def test_a_package_is_digested_as_its_bytes(tmp_path):
    """A wheel or sdist is deployed as it is: the release is named after its bytes."""
    wheel = tmp_path / "clean-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(FIXTURES / "clean_app" / "main.py", "clean_app/main.py")
    result = app_source.inspect_source(str(wheel))
    assert result["digest"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert (result["files"], result["bytes"]) == (1, wheel.stat().st_size)


@pytest.mark.parametrize("args, status", [
    (["gevent_app"], 1), (["blocking_app"], 0), (["blocking_app", "--strict"], 1), (["clean_app", "--strict"], 0)])
def test_command_line(args, status):
    result = check_command(FIXTURES / args[0], *args[1:])
    assert result.returncode == status, result.stdout
    if args[0] == "blocking_app":
        assert "main.py:14: warning: time.sleep() blocks the event loop" in result.stdout


def test_command_line_json_has_findings_and_digest():
    result = json.loads(check_command("--json", FIXTURES / "clean_app").stdout)
    assert result["findings"] == [] and len(result["digest"]) == 64
    assert (result["files"], result["bytes"]) == (1, (FIXTURES / "clean_app" / "main.py").stat().st_size)


def test_command_line_says_which_source_it_cannot_read(tmp_path):
    package = tmp_path / "myapp-1.0.txt"
    package.write_text("not an archive")
    result = check_command(package)
    assert result.returncode == 2
    assert "myapp-1.0.txt is not a directory, a wheel, a zip or a .tar.gz" in result.stderr
