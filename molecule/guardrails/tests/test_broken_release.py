"""A broken new version onto a host serving a good one: the play fails with the Python
traceback, and the good version keeps answering HTTP, WebSocket and SSE throughout."""

import shutil
from pathlib import Path

import pytest

import probes
from guardrails import NAME, deploy

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "app"

BROKEN = {
    "import error": (
        "import a_module_that_is_not_installed  # noqa: F401\n",
        ["ModuleNotFoundError: No module named 'a_module_that_is_not_installed'"]),
    "lifespan startup raises": (
        "from contextlib import asynccontextmanager\n\n\n"
        "@asynccontextmanager\nasync def _lifespan(app):\n"
        "    raise RuntimeError('cannot reach the database')\n    yield\n\n\n",
        ["lifespan.startup.failed", "RuntimeError: cannot reach the database"]),
}


def broken_copy(tmp_path, kind):
    source = tmp_path / "app"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    main = source / "example_app" / "main.py"
    prefix, _ = BROKEN[kind]
    text = main.read_text()
    if kind == "lifespan startup raises":
        text = text.replace('app = FastAPI(title="asgi-app example", version=VERSION)',
                            'app = FastAPI(title="asgi-app example", version=VERSION, lifespan=_lifespan)')
        assert "lifespan=_lifespan" in text
    main.write_text(prefix + text)
    return source


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_release_fails_and_the_running_one_keeps_serving(host, tmp_path, app_url, kind):
    current = host.file(f"/opt/{NAME}/current").linked_to
    main_pid = host.check_output(f"systemctl show {NAME} -p MainPID --value")
    with probes.Watch(app_url) as watch:
        rc, output = deploy({"asgi_app_src": str(broken_copy(tmp_path, kind))})
    result = watch.result
    print(f"\n{kind}: play rc={rc}; during the deploy the running version answered "
          f"{result.requests} HTTP requests ({result.failed} failed), echoed "
          f"{result.ws_echoes} WebSocket messages ({result.ws_errors} wrong), sent {result.sse_events} SSE events")
    assert rc != 0
    for text in BROKEN[kind][1]:
        assert text in output, output[-3000:]
    assert "failed its checks and was removed" in output
    assert "Traceback (most recent call last)" in output
    # The running version was not touched, and answered throughout.
    assert host.file(f"/opt/{NAME}/current").linked_to == current
    assert host.check_output(f"systemctl show {NAME} -p MainPID --value") == main_pid
    # ... without closing a WebSocket or ending an SSE stream.
    assert result.failed == 0 and result.ws_errors == 0, result
    assert result.ws_closes == {} and result.ws_resets == 0, result
    assert result.sse_ends == {"clean": 0, "broken": 0}, result
    assert result.requests > 20 and result.ws_echoes > 5 and result.sse_events > 5
    assert probes.http_get(app_url + "/health").status == 200
    # Only the running release is left (plus none half-built).
    releases = host.check_output(f"ls /opt/{NAME}/releases").split()
    assert releases == [Path(current).name]
