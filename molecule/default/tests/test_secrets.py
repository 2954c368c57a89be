"""A secret of asgi_app_environment reaches the app, and no command line on the host nor any line
of Ansible's output, at the highest verbosity, while a deploy changes it and the new value goes
live."""

import secrets
import time

import pytest

from deploys import deploy

# Every 50 ms, as a user with no privileges: the command line of every process on the host.
WATCH = ("setpriv --reuid=nobody --regid=nogroup --clear-groups -- sh -c "
         "'while :; do echo --sample--; ps -eo args; sleep 0.05; done' > {out} 2>&1 & echo $!")


@pytest.fixture
def command_lines(host):
    """What an unprivileged user's ps saw meanwhile: a function returning (samples, text)."""
    out = f"/tmp/ps-watch-{time.time_ns()}"
    pid = host.check_output(WATCH.format(out=out))

    def seen():
        text = host.check_output(f"cat {out}")
        return text.count("--sample--"), text

    yield seen
    host.run(f"kill {pid}; rm -f {out}")


def test_a_changed_secret_reaches_the_app_and_no_command_line_nor_output(host, app_name, command_lines):
    secret = "s3cret-" + secrets.token_hex(12)
    main_pid = host.check_output(f"systemctl show -p MainPID --value {app_name}.service")
    started = time.monotonic()
    try:
        rc, output, changed = deploy("-vvv", asgi_app_environment={"DB_PASSWORD": secret})
        took = time.monotonic() - started
        # The watcher sees other users' command lines: one with a marker, run as root meanwhile.
        marker = "marker-" + secrets.token_hex(6)
        host.run(f"sh -c 'sleep 0.3; : {marker}'")
        time.sleep(0.2)
        samples, text = command_lines()
        assert rc == 0, output[-5000:]
        assert "handover: changed: environment" in output, output[-5000:]
        assert changed > 0
        # The value went live: in the environment file systemd gives the service, which restarted.
        assert f'DB_PASSWORD="{secret}"' in host.file(f"/etc/{app_name}/environment").content_string
        assert host.check_output(f"systemctl show -p MainPID --value {app_name}.service") != main_pid
        print(f"\ndeploy with -vvv: {took:.0f} s, {len(output.splitlines())} lines of output; "
              f"{samples} samples of every command line on the host")
        assert samples >= 10 * took / 2, samples  # one every 50 ms, give or take ps itself
        assert marker in text, "the watcher does not see other users' command lines"
        assert secret not in text, [line for line in text.splitlines() if secret in line]
        assert secret not in output, [line for line in output.splitlines() if secret in line]
    finally:
        rc, output, _ = deploy()
        assert rc == 0, output[-5000:]
