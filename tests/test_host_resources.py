"""host_resources.py on copies of /proc and /sys as hosts of several kinds show them."""

import json
import platform
import subprocess
import sys

import pytest

MEMINFO = "MemTotal:       16384000 kB\nMemFree:        1000 kB\n"
LIMITS = ("Limit                     Soft Limit           Hard Limit           Units\n"
          "Max open files            1024                 524288               files\n")


def make_tree(root, files):
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return root


def base(online="0-7", allowed="0-7", cgroup="0::/init.scope\n", pid1="systemd"):
    return {
        "/proc/1/comm": pid1 + "\n",
        "/sys/devices/system/cpu/online": online + "\n",
        "/proc/1/status": f"Name:\tsystemd\nCpus_allowed_list:\t{allowed}\n",
        "/proc/1/cgroup": cgroup,
        "/proc/meminfo": MEMINFO,
        "/proc/1/limits": LIMITS,
    }


@pytest.fixture
def importable(monkeypatch, host_resources):
    """Pretend that only the given modules are importable by the interpreter running the script."""

    def only(*names):
        monkeypatch.setattr(host_resources.importlib.util, "find_spec",
                            lambda name: object() if name in names else None)

    return only


def test_bare_metal_cgroup_v2(tmp_path, host_resources, importable):
    importable("ensurepip")
    root = make_tree(tmp_path, {**base(), "/sys/fs/cgroup/cpu.max": "max 100000\n",
                                "/sys/fs/cgroup/system.slice/cpu.max": "max 100000\n"})
    assert host_resources.collect(str(root)) == {
        "service_manager": "systemd", "online_cpus": 8, "affinity_cpus": 8, "cpu_quota": None,
        "memory_mb": 16000, "nofile_hard": 524288, "python_venv": True, "apps": [],
        "machine": platform.machine()}


def test_uv_version(tmp_path, host_resources):
    """The version of the uv binary the role installed, or "" for one that is missing or broken."""
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\necho 'uv 0.13.8 (x86_64-unknown-linux-gnu)'\n")
    uv.chmod(0o755)
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert host_resources.collect(str(make_tree(tmp_path / "root", base())), uv=str(uv))["uv"] == "0.13.8"
    assert host_resources.uv_version(str(broken)) == ""
    assert host_resources.uv_version(str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("pid1, run_systemd, manager", [
    ("systemd", True, "systemd"),
    # A container whose PID 1 is a plain command, as the guardrails scenario starts one.
    ("sleep", False, "sleep"),
    ("tini", False, "tini"),
    # PID 1 still named after /sbin/init: systemd's runtime directory decides.
    ("init", True, "systemd"),
    ("init", False, "init"),
    (None, False, "unknown"),
])
def test_service_manager(tmp_path, host_resources, pid1, run_systemd, manager):
    files = base()
    if pid1 is None:
        del files["/proc/1/comm"]
    else:
        files["/proc/1/comm"] = pid1 + "\n"
    root = make_tree(tmp_path, files)
    if run_systemd:
        (root / "run" / "systemd" / "system").mkdir(parents=True)
    assert host_resources.collect(str(root))["service_manager"] == manager


@pytest.mark.parametrize("modules, ready", [
    (("ensurepip",), True),
    # Debian's python3.X without python3.X-venv has no ensurepip: `python3 -m venv` fails.
    (("packaging",), False),
    ((), False),
])
def test_python_venv_support(tmp_path, host_resources, importable, modules, ready):
    importable(*modules)
    assert host_resources.collect(str(make_tree(tmp_path, base())))["python_venv"] is ready


def test_affinity_of_the_service_manager(tmp_path, host_resources):
    root = make_tree(tmp_path, base(online="0-15", allowed="0-1,8-9"))
    result = host_resources.collect(str(root))
    assert (result["online_cpus"], result["affinity_cpus"]) == (16, 4)


def test_cgroup_v2_container_quota_and_memory(tmp_path, host_resources):
    files = base(cgroup="0::/docker/abc/init.scope\n")
    files.update({
        "/sys/fs/cgroup/docker/abc/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/docker/abc/memory.max": str(2 * 1024**3) + "\n",
        "/sys/fs/cgroup/docker/abc/system.slice/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/docker/cpu.max": "400000 100000\n",
    })
    result = host_resources.collect(str(make_tree(tmp_path, files)))
    assert result["cpu_quota"] == 1.5
    assert result["memory_mb"] == 2048


def test_quota_on_the_services_slice_counts(tmp_path, host_resources):
    files = base(cgroup="0::/init.scope\n")
    files["/sys/fs/cgroup/system.slice/cpu.max"] = "200000 100000\n"
    assert host_resources.collect(str(make_tree(tmp_path, files)))["cpu_quota"] == 2.0


def test_cgroup_v1_hybrid_host(tmp_path, host_resources):
    files = base(cgroup="4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc/init.scope\n")
    files.update({
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(1024**3) + "\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    result = host_resources.collect(str(make_tree(tmp_path, files)))
    assert result["cpu_quota"] == 3.0
    assert result["memory_mb"] == 1024


def test_unlimited_v1_memory_is_no_limit(tmp_path, host_resources):
    files = base(cgroup="4:memory:/\n0::/\n")
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert host_resources.collect(str(make_tree(tmp_path, files)))["memory_mb"] == 16000


def test_releases_and_current_of_the_app(tmp_path, host_resources):
    """What release.yml, switch.yml and prune.yml read of asgi_app_root: as prune's find lists
    them (directories, not hidden, links not followed), each with its .complete marker."""
    root = make_tree(tmp_path, {**base(),
                                "/opt/app/releases/aaa/.complete": "ok\n",
                                "/opt/app/releases/bbb/venv/bin/python": "",
                                "/opt/app/releases/.tmp/x": "",
                                "/opt/app/releases/notes.txt": ""})
    releases = root / "opt" / "app" / "releases"
    (releases / "link").symlink_to(releases / "aaa")
    (root / "opt" / "app" / "current").symlink_to("/opt/app/releases/aaa")
    app = host_resources.collect(str(root), "/opt/app")["app"]
    assert app["current"] == "/opt/app/releases/aaa"
    assert [(r["path"], r["complete"]) for r in app["releases"]] == [
        ("/opt/app/releases/aaa", True), ("/opt/app/releases/bbb", False)]
    assert app["releases"][0]["mtime"] == (releases / "aaa").stat().st_mtime


def test_a_first_deploy_finds_no_release(tmp_path, host_resources):
    root = make_tree(tmp_path, base())
    assert host_resources.collect(str(root), "/opt/app")["app"] == {
        "releases": [], "current": "", "entries": {"/opt/app": None}}
    assert "app" not in host_resources.collect(str(root))


def test_current_as_a_directory_is_no_running_release(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), "/opt/app/current/app.py": ""})
    assert host_resources.collect(str(root), "/opt/app")["app"]["current"] == ""


@pytest.mark.parametrize("text, count", [("0", 1), ("0-3", 4), ("0-3,8,10-11", 7), ("", 0)])
def test_cpu_lists(host_resources, text, count):
    assert host_resources.count_cpu_list(text) == count


def test_runs_as_a_script_and_prints_json(tmp_path, host_resources):
    root = make_tree(tmp_path, base(online="0-3", allowed="0-3"))
    out = subprocess.run([sys.executable, host_resources.__file__, "--root", str(root)],
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["online_cpus"] == 4
    assert "app" not in result
    assert result["service_manager"] == "systemd"
    assert isinstance(result["python_venv"], bool)


def test_feeds_the_worker_plan(tmp_path, host_resources, sizing):
    files = base(online="0-31", allowed="0-31", cgroup="0::/machine/vm1/init.scope\n")
    files["/sys/fs/cgroup/machine/vm1/cpu.max"] = "400000 100000\n"
    plan = sizing.worker_plan(host_resources.collect(str(make_tree(tmp_path, files))), "mixed")
    assert plan["workers"] == 9
    assert "limited by cgroup CPU quota" in plan["cpus"]


def test_runs_as_a_script_with_the_app_root(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), "/opt/app/releases/aaa/.complete": ""})
    out = subprocess.run([sys.executable, host_resources.__file__, "--root", str(root),
                          "--app-root", "/opt/app"], check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["app"]["releases"][0]["path"] == "/opt/app/releases/aaa"


def role_units(name, user=None, listen="0.0.0.0:8000", config=None):
    """The files of an app the role deployed, as the role writes them (only the lines read)."""
    config = config or f"/etc/{name}/gunicorn_config.py"
    return {
        f"/etc/systemd/system/{name}.service": (
            f"# Ansible managed\n[Service]\nExecStart=/opt/{name}/current/venv/bin/gunicorn --config {config}\n"
            f"User={user or name}\nGroup={user or name}\n"),
        f"/etc/systemd/system/{name}.socket": f"[Socket]\nListenStream={listen}\nBacklog=2048\n",
    }


def test_the_apps_the_role_runs_on_the_host(tmp_path, host_resources):
    files = {**base(), **role_units("chat", listen="0.0.0.0:8001"), "/etc/chat/gunicorn_config.py": "workers = 3\n",
             **role_units("shop", user="svc", listen="/run/shop/gunicorn.sock", config="/srv/shop.py"),
             "/srv/shop.py": "# 2 usable CPU(s)\nworkers = 5\n",
             # Not the role's: a gunicorn unit without a socket unit, and an ordinary service.
             "/etc/systemd/system/legacy.service": "[Service]\nExecStart=/opt/legacy/current/venv/bin/gunicorn "
                                                   "--config /etc/legacy.py\n",
             "/etc/systemd/system/ssh.service": "[Service]\nExecStart=/usr/sbin/sshd -D\n",
             "/etc/systemd/system/ssh.socket": "[Socket]\nListenStream=22\n"}
    root = make_tree(tmp_path, files)
    (root / "etc" / "systemd" / "system" / "sockets.target.wants").mkdir()
    assert host_resources.collect(str(root))["apps"] == [
        {"name": "chat", "user": "chat", "group": "chat", "listen": "0.0.0.0:8001", "workers": 3},
        {"name": "shop", "user": "svc", "group": "svc", "listen": "/run/shop/gunicorn.sock", "workers": 5}]


def test_an_app_whose_config_cannot_be_read_has_no_worker_count(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), **role_units("chat")})
    assert host_resources.collect(str(root))["apps"][0]["workers"] is None


PASSWD = ("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
          "shop:x:998:998::/opt/shop:/usr/sbin/nologin\nclerk:x:997:998::/opt/clerk:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nwww-data:x:33:\nshop:x:998:\n"


def test_what_a_removal_reads_of_the_app(tmp_path, host_resources):
    """The entries of each of the app's directories (None: not there) and its accounts."""
    root = make_tree(tmp_path, {**base(), "/etc/passwd": PASSWD, "/etc/group": GROUP,
                                "/opt/shop/releases/aaa/.complete": "", "/etc/shop/environment": "",
                                "/etc/shop/gunicorn_config.py": ""})
    (root / "opt" / "shop" / "current").symlink_to("/opt/shop/releases/aaa")
    app = host_resources.collect(str(root), "/opt/shop", ["/etc/shop", "/run/shop"], "shop", "shop")["app"]
    assert app["entries"] == {"/opt/shop": ["current", "releases"],
                              "/etc/shop": ["environment", "gunicorn_config.py"], "/run/shop": None}
    assert app["user"] == {"name": "shop", "uid": 998, "gid": 998, "home": "/opt/shop"}
    assert app["group"] == {"name": "shop", "gid": 998, "primary_of": ["shop", "clerk"]}


def test_accounts_that_are_not_there(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), "/etc/passwd": PASSWD, "/etc/group": GROUP})
    app = host_resources.collect(str(root), "/opt/chat", [], "chat", "chat")["app"]
    assert (app["user"], app["group"]) == (None, None)


def test_runs_as_a_script_with_the_removal_arguments(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), "/etc/passwd": PASSWD, "/etc/group": GROUP, "/etc/shop/environment": ""})
    out = subprocess.run([sys.executable, host_resources.__file__, "--root", str(root), "--app-root", "/opt/shop",
                          "--app-dir", "/etc/shop", "--app-dir", "/run/shop", "--user", "shop", "--group", "shop"],
                         check=True, capture_output=True, text=True).stdout
    app = json.loads(out)["app"]
    assert app["entries"] == {"/opt/shop": None, "/etc/shop": ["environment"], "/run/shop": None}
    assert app["user"]["home"] == "/opt/shop"
