"""Applications we did not write, deployed as a user would and changed step by step.

items (FastAPI, SQLAlchemy/asyncpg, Alembic, built by a factory) runs on two app hosts against
PostgreSQL on a third; bigtree (3,000 files, a .venv of 2,600 beside them, a dist/ page) beside
it on the first. The tests run in order, each a step of an operator's week, and the last prints
the table of them all: the play's result, what it changed, how long it took, what each host
served and the rows in the database.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import testinfra

import probes

REPO = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SOURCES = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "sources"
APP_HOSTS = {"asgi-real-apps-app-1": "http://127.0.0.1:{}".format(os.environ.get("ASGI_APP_TEST_PORT", "18000")),
             "asgi-real-apps-app-2": "http://127.0.0.1:18003"}
BIGTREE = "http://127.0.0.1:18001"
DJSITE = "http://127.0.0.1:18004"
SITE = {"Host": "shop.example.test"}
FIRST_HOST = "asgi-real-apps-app-1"
STEPS = []

# bigtree's settings on the first app host, as converge.yml gives them.
BIGTREE_VARS = {"asgi_app_hosts": FIRST_HOST, "asgi_app_name": "bigtree", "asgi_app_module": "bigtree.main:app",
                "asgi_app_bind": "0.0.0.0:8001", "asgi_app_workers": 1, "asgi_app_environment": {},
                "asgi_app_release_commands": []}


def target(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def run_play(playbook, extra_vars=None, **environment):
    """ansible-playbook with the scenario's inventory: (rc, output, seconds, changed per host)."""
    command = ["ansible-playbook", "-i", INVENTORY, str(REPO / "playbooks" / playbook)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **environment})
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    changed = {host: int(count) for host, count in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}
    return result.returncode, output, seconds, changed


def served():
    """The version each app host's items answers with."""
    versions = {}
    for name, url in APP_HOSTS.items():
        try:
            versions[name] = httpx.get(url + "/version", timeout=10).json()["version"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            versions[name] = type(exc).__name__
    return versions


def database(query):
    """A query on the database host, read apart from the app (psql as postgres)."""
    return target("asgi-real-apps-db").check_output(
        f"runuser -u postgres -- psql -d items -tAc {json.dumps(query)}")


def record(step, rc, seconds, changed, load=None):
    row = {"step": step, "rc": rc, "seconds": round(seconds, 1),
           "changed": " ".join(f"{n}" for _, n in sorted(changed.items())) or "-",
           "served": " ".join(v for _, v in sorted(served().items())),
           "rows": database("SELECT count(*) FROM items"),
           "schema": database("SELECT version_num FROM alembic_version"),
           "requests": f"{load.requests} ({load.failed} failed)" if load else "-"}
    STEPS.append(row)
    print(f"\n{step}: " + ", ".join(f"{key} {value}" for key, value in row.items() if key != "step"))
    return row


def release_dirs(name="items"):
    return {host: sorted(target(host).check_output(f"ls /opt/{name}/releases").split()) for host in APP_HOSTS}


def test_converge_migrated_and_serves_1_0_0():
    assert set(served().values()) == {"1.0.0"}, served()
    assert database("SELECT version_num FROM alembic_version") == "0001"
    record("converge: items 1.0.0 on both hosts, bigtree and djsite beside it", 0, 0, {})


def test_items_holds_the_versions_its_hashed_requirements_pin_on_every_host():
    """items' requirements.txt pins each package with its hashes: uv installed it with
    --require-hashes, and the server packages after it without moving any of its pins."""
    pinned = dict(re.findall(r"^([a-z0-9-]+)==(\S+) ", (REPO / "molecule/real-apps/apps/items/requirements.txt")
                             .read_text(), re.MULTILINE))
    assert len(pinned) >= 15, pinned
    for host in APP_HOSTS:
        frozen = dict(line.split("==") for line in target(host).check_output(
            "/usr/local/lib/asgi-app/uv-0.13.8/uv pip freeze --python /opt/items/current/venv/bin/python")
            .splitlines())
        assert {name: frozen.get(name) for name in pinned} == pinned, host
        assert {"gunicorn", "uvicorn", "uvicorn-worker"} <= set(frozen) - set(pinned), host


def test_the_app_writes_rows_and_uploads():
    url = APP_HOSTS[FIRST_HOST]
    for name in ("anvil", "bellows", "chisel"):
        assert httpx.post(url + "/items", json={"name": name}, timeout=10).status_code == 201
    assert httpx.put(url + "/uploads/report.txt", content=b"written under 1.0.0", timeout=10).status_code in (200, 201)
    # The other host sees the same data: the database and... its own state directory.
    assert httpx.get(APP_HOSTS["asgi-real-apps-app-2"] + "/items/count", timeout=10).json()["count"] == 3
    state = target(FIRST_HOST).file("/var/lib/items/uploads/report.txt")
    assert state.content_string == "written under 1.0.0" and state.user == "items"


def test_2_0_0_migrates_once_under_load_and_keeps_the_data():
    with probes.Watch(APP_HOSTS["asgi-real-apps-app-2"], concurrency=4, websockets=0, sse=0,
                      path="/items/count") as watch:
        rc, output, seconds, changed = run_play("deploy.yml", {"asgi_app_src": str(SOURCES / "items-2")})
    row = record("deploy 2.0.0 (migration 0002 adds a column)", rc, seconds, changed, watch.result)
    assert rc == 0, output[-4000:]
    assert set(served().values()) == {"2.0.0"}
    assert row["schema"] == "0002" and row["rows"] == "3"
    # The release command ran once, on the first host, before it went live; not on the second.
    assert output.count("Running upgrade 0001 -> 0002") == 1, "the migration ran more than once"
    ran_on_first = rf"changed: \[{FIRST_HOST}(?: -> {FIRST_HOST})?\] => \(item=alembic upgrade head\)"
    assert re.search(ran_on_first, output), output[-4000:]
    assert watch.result.failed == 0, watch.result.errors
    url = APP_HOSTS[FIRST_HOST]
    assert httpx.post(url + "/items", json={"name": "drill", "color": "red"}, timeout=10).status_code == 201
    assert {"name": "drill", "color": "red"}.items() <= httpx.get(url + "/items", timeout=10).json()[-1].items()
    assert httpx.get(url + "/uploads/report.txt", timeout=10).content == b"written under 1.0.0"


def test_a_failing_migration_leaves_2_0_0_serving_on_every_host():
    before = release_dirs()
    with probes.Watch(APP_HOSTS[FIRST_HOST], concurrency=4, websockets=0, sse=0, path="/items/count") as one, \
            probes.Watch(APP_HOSTS["asgi-real-apps-app-2"], concurrency=4, websockets=0, sse=0,
                         path="/items/count") as two:
        rc, output, seconds, changed = run_play("deploy.yml", {"asgi_app_src": str(SOURCES / "items-3")})
    row = record("deploy 3.0.0 (its migration fails)", rc, seconds, changed, one.result)
    print(f"app-2 under load: {two.result.requests} requests ({two.result.failed} failed)")
    assert rc != 0
    flat = " ".join(output.split())
    assert 'failed its release command "alembic upgrade head"' in flat, output[-4000:]
    assert "Running upgrade 0002 -> 0003" in output
    assert "current still points to the running release" in flat
    assert set(served().values()) == {"2.0.0"}
    assert row["schema"] == "0002" and row["rows"] == "4"
    assert release_dirs() == before, "the failed release was left on a host"
    assert one.result.failed == 0 and two.result.failed == 0, (one.result.errors, two.result.errors)


def test_rollback_returns_to_1_0_0_with_the_data():
    rc, output, seconds, changed = run_play("rollback.yml")
    row = record("rollback.yml (to 1.0.0; the schema stays at 0002)", rc, seconds, changed)
    assert rc == 0, output[-4000:]
    assert set(served().values()) == {"1.0.0"}
    assert row["rows"] == "4"
    url = APP_HOSTS[FIRST_HOST]
    assert len(httpx.get(url + "/items", timeout=10).json()) == 4
    assert httpx.get(url + "/uploads/report.txt", timeout=10).content == b"written under 1.0.0"


def test_a_big_source_tree_deploys_in_seconds_and_a_page_change_is_a_new_release():
    app = target(FIRST_HOST)
    assert httpx.get(BIGTREE + "/", timeout=10).text.strip().endswith("first page") or \
        "first page" in httpx.get(BIGTREE + "/", timeout=10).text
    # What converge transferred: the tree without its .venv and __pycache__, with env/ and dist/.
    release = app.check_output("readlink -f /opt/bigtree/current")
    deployed = int(app.check_output(f"find {release}/app -type f | wc -l"))
    assert not app.file(f"{release}/app/.venv").exists
    assert app.file(f"{release}/app/env").is_directory and app.file(f"{release}/app/dist/index.html").is_file
    page = SOURCES / "bigtree" / "dist" / "index.html"
    page.write_text(page.read_text().replace("first page", "second page"))
    rc, output, seconds, changed = run_play("deploy.yml", {**BIGTREE_VARS, "asgi_app_src": str(SOURCES / "bigtree")})
    record(f"bigtree: only dist/index.html changed ({deployed} files deployed)", rc, seconds, changed)
    assert rc == 0, output[-4000:]
    assert app.check_output("readlink -f /opt/bigtree/current") != release
    assert "second page" in httpx.get(BIGTREE + "/", timeout=10).text
    assert seconds < 120, f"a deploy of {deployed} files took {seconds:.0f} s"


def test_django_behind_nginx_serves_its_static_files_from_nginx():
    app = target(FIRST_HOST)
    page = httpx.get(DJSITE + "/", headers=SITE, timeout=10)
    assert page.status_code == 200 and "/static/site/site.css" in page.text
    css = httpx.get(DJSITE + "/static/site/site.css", headers=SITE, timeout=10)
    assert css.status_code == 200 and "ETag" in css.headers and "Last-Modified" in css.headers
    again = httpx.get(DJSITE + "/static/site/site.css", timeout=10,
                      headers={**SITE, "If-None-Match": css.headers["ETag"]})
    assert again.status_code == 304
    # No listing, nothing outside the directory.
    assert httpx.get(DJSITE + "/static/site/", headers=SITE, timeout=10).status_code in (403, 404)
    assert httpx.get(DJSITE + "/static../db.sqlite3", headers=SITE, timeout=10).status_code != 200
    # The app never saw them: nginx answered (the app logs every request it serves).
    journal = app.check_output("journalctl -u djsite --no-pager -q")
    assert '"GET / HTTP/1.1" 200' in journal and "/static/" not in journal
    # Django refuses a host it does not know, which is why the health check sends the site's name.
    assert httpx.get(DJSITE + "/health", headers={"Host": "127.0.0.1"}, timeout=10).status_code == 400
    # Notes in SQLite and media files in the state directory, written as the app's user.
    assert httpx.post(DJSITE + "/notes", json={"text": "kept"}, headers=SITE, timeout=10).status_code == 201
    assert httpx.put(DJSITE + "/media/hello.txt", content=b"hello", headers=SITE, timeout=10).status_code in (200, 201)
    assert app.file("/var/lib/djsite/media/hello.txt").user == "djsite"
    assert app.file("/var/lib/djsite/db.sqlite3").user == "djsite"
    STEPS.append({"step": "djsite: Django behind nginx, /static/ from nginx (304 on revalidation)", "rc": 0,
                  "seconds": 0, "changed": "-", "served": "-", "rows": "-", "schema": "-", "requests": "-"})


def test_an_environment_that_breaks_the_app_goes_back_to_the_one_that_worked():
    app = target(FIRST_HOST)
    before = app.file("/etc/items/environment").sha256sum
    broken = {"asgi_app_hosts": FIRST_HOST, "asgi_app_health_timeout": 10,
              "asgi_app_environment": {"DATABASE_URL": "postgresql+asyncpg://items:wrong@asgi-real-apps-db:5432/items"}}
    rc, output, seconds, changed = run_play("deploy.yml", broken)
    record("environment only: a password the database refuses", rc, seconds, changed)
    flat = " ".join(output.split())
    assert rc != 0
    # Its standby never answered /health (503: the database refuses the password), so it received
    # no request; the standby's unit, changed with the health timeout, went back too.
    assert "items-standby.service, started on what changed, did not answer /health" in flat, output[-3000:]
    assert "It went back to what served before (environment, items-standby.service), which answers again." in flat
    assert app.file("/etc/items/environment").sha256sum == before
    assert not app.check_output("ls /etc/items").count("~"), "a copy kept to go back to was left behind"
    assert httpx.get(APP_HOSTS[FIRST_HOST] + "/health", timeout=10).status_code == 200


def test_an_app_writing_beside_its_code_is_told_where_it_may_write():
    # bigtree opens a cache file beside its code: the sandbox refuses, and the environment goes back.
    writes = {**BIGTREE_VARS, "asgi_app_src": str(SOURCES / "bigtree"), "asgi_app_health_timeout": 10,
              "asgi_app_environment": {"BIGTREE_CACHE": "/opt/bigtree/current/app/cache.db"}}
    rc, output, seconds, changed = run_play("deploy.yml", writes)
    record("bigtree: an environment that makes it write beside its code", rc, seconds, changed)
    flat = " ".join(output.split())
    assert rc != 0
    assert "Read-only file system" in flat, output[-3000:]
    assert "may write only to its state directory, /var/lib/bigtree ($STATE_DIRECTORY; asgi_app_state_dir)" in flat
    assert "asgi_app_writable_paths" in flat
    assert "It went back to what served before (environment, bigtree-standby.service)" in flat
    assert "second page" in httpx.get(BIGTREE + "/", timeout=10).text


def test_a_health_check_that_fails_says_what_came_back_within_the_timeout():
    # bigtree as a new app whose backend is down: it imports and starts, and /health says 503.
    bad = {**BIGTREE_VARS, "asgi_app_name": "unhealthy", "asgi_app_src": str(SOURCES / "bigtree"),
           "asgi_app_bind": "0.0.0.0:8002", "asgi_app_health_timeout": 15,
           "asgi_app_environment": {"BIGTREE_HEALTH_STATUS": "503"}}
    rc, output, seconds, changed = run_play("deploy.yml", bad, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    record("first deploy of an app whose /health answers 503", rc, seconds, changed)
    flat = " ".join(output.split())
    polled = max(float(s) for s in re.findall(r"Poll the health path until it answers 200 -+ ([\d.]+)s", output))
    print(f"the health check polled for {polled} s (asgi_app_health_timeout 15)")
    assert rc != 0
    assert polled <= 15 + 5, f"the health check took {polled} s, over its 15 s timeout"
    assert "did not answer http://127.0.0.1:8002/health (Host: localhost) with 200 within 15 s" in flat, output[-3000:]
    assert 'status 503, body starting "unhealthy: the backend this page needs is down' in flat
    assert "first deploy" in flat and "nothing to go back to" in flat
    # Removed again: its data stays unless asgi_app_remove_data says otherwise, and the play says so.
    app = target(FIRST_HOST)
    app.run("echo kept > /var/lib/unhealthy/data.txt")
    removed, output, _, _ = run_play("deploy.yml", {**bad, "asgi_app_state": "absent"})
    assert removed == 0, output[-3000:]
    assert "Kept /var/lib/unhealthy, the data of unhealthy" in " ".join(output.split())
    assert app.file("/var/lib/unhealthy/data.txt").content_string == "kept\n"
    assert not app.file("/opt/unhealthy").exists and not app.file("/etc/systemd/system/unhealthy.service").exists


def test_a_spec_gunicorn_refuses_is_refused_in_preflight():
    rc, output, seconds, changed = run_play("deploy.yml", {"asgi_app_module": "items.main:Holder.app"})
    flat = " ".join(output.split())
    assert rc != 0
    assert "asgi_app_module is 'items.main:Holder.app', which gunicorn refuses" in flat
    assert "Failed to parse 'Holder.app' as an attribute name or function call." in flat
    assert "nothing on the host was changed" in flat
    assert set(changed.values()) == {0}
    STEPS.append({"step": "asgi_app_module items.main:Holder.app (refused in preflight)", "rc": rc,
                  "seconds": round(seconds, 1), "changed": " ".join(str(n) for _, n in sorted(changed.items())),
                  "served": " ".join(v for _, v in sorted(served().items())), "rows": "-", "schema": "-",
                  "requests": "-"})


def test_print_the_steps():
    columns = ["step", "rc", "changed", "seconds", "served", "rows", "schema", "requests"]
    widths = {c: max(len(c), *(len(str(s[c])) for s in STEPS)) for c in columns}
    print("\n" + " | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for step in STEPS:
        print(" | ".join(str(step[c]).ljust(widths[c]) for c in columns))
    assert len(STEPS) >= 7
