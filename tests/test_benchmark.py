"""tools/benchmark.py without a test host: how it reads wrk, picks the median, computes the
ceiling, judges the targets and writes the table and the chart. One test runs the real wrk
with tools/wrk-report.lua against a local HTTP server."""

import json
import struct
import subprocess
import sys

import pytest

from support import REPO, JsonHandler, load_module, local_http_server

bench = load_module("benchmark", REPO / "tools" / "benchmark.py")


def wrk_report(requests, seconds=6.0, status=0, read=0, timeout=0, p50=0.201, p99=0.25):
    return {"duration_us": int(seconds * 1e6), "requests": requests, "connect": 0, "read": read,
            "write": 0, "status": status, "timeout": timeout, "p50_us": int(p50 * 1e6),
            "p99_us": int(p99 * 1e6), "max_us": int(p99 * 2e6)}


def test_the_median_run_stands_for_the_repetitions():
    reports = [wrk_report(3000), wrk_report(2400, read=7, p50=0.3), wrk_report(2820, status=20)]
    run = bench.summarise("io", 100, reports)
    # 2xx answers per second: 500, 400 and (2820 - 20) / 6 = 466.7; the median is the third run.
    assert run.runs == [500.0, 400.0, 466.7]
    assert run.rps == 466.7
    assert (run.errors, run.error_kinds) == (20, {"status": 20})
    assert (run.p50_ms, run.p99_ms, run.requests) == (201.0, 250.0, 2820)


def results(rps: dict[str, list[float]], **extra) -> dict:
    """Results as main() assembles them; rps[server] = [io 100, io 1000, io 10000, json]."""
    tests = [("io", 100), ("io", 1000), ("io", 10000), ("json", 256)]
    servers = {}
    for key, values in rps.items():
        runs = [bench.Run(t, c, v, 201.0, 260.0, 0, {}, int(v * 6), [v])
                for (t, c), v in zip(tests, values, strict=True)]
        servers[key] = {"key": key, "label": f"{key} label", "workers": 3, "rss_mb": 60.0,
                        "runs": [bench.asdict(r) for r in runs]}
    data = {"date": "2026-11-26", "latency": 0.2, "duration": 6, "repeat": 3, "timeout": 2,
            "machine": {"cores": 2, "memory_gib": 23.5, "open_files_soft": 20000, "open_files_hard": 20000,
                        "kernel": "6.1", "cpu": "test cpu", "wrk": "wrk 4.1.0"},
            "converge": {"first_s": 44.0, "first_changed": 17, "rerun_s": 9.5, "rerun_changed": 0},
            "servers": servers, **extra}
    data["ceilings"] = bench.ceilings(data, 0.2)
    return data


RPS = {"sync": [25, 25, 20, 3000], "gthread": [40, 40, 35, 3500],
       "uvicorn_worker": [480, 4700, 7000, 8100], "asgi": [470, 3000, 4000, 6000],
       "uvicorn": [485, 4800, 7500, 8800]}


def test_ceiling_is_latency_bound_then_capacity_bound():
    # 100 / 0.2 s = 500 and 1000 / 0.2 s = 5000 clients' worth; 10,000 clients are bounded by
    # what bare uvicorn answered on the JSON endpoint.
    assert results(RPS)["ceilings"] == {"100": 500.0, "1000": 5000.0, "10000": 8800.0}


def test_targets_are_judged_against_the_ceiling_and_bare_uvicorn():
    ws = {"held": 20000, "limit": 20000, "stopped_by": "limit", "kib_per_connection": 40.0, "levels": []}
    checks = {name: (met, value) for name, met, value in bench.targets(results(RPS, websockets=ws))}
    assert checks["UvicornWorker I/O at 100 clients >= 95 % of the ceiling"] == (True, "96 %")
    assert checks["UvicornWorker I/O at 1,000 clients >= 95 % of the ceiling"] == (False, "94 %")
    assert checks["UvicornWorker I/O at 10,000 clients >= 90 % of the ceiling"] == (False, "80 %")
    assert checks["UvicornWorker JSON >= 90 % of bare uvicorn, access log on"] == (True, "92 %")
    assert checks["WebSockets held by one deployment >= 10,000, 0 errors"] == (True, "20,000 held")
    assert checks["first converge <= 90 s"] == (True, "44 s")
    assert checks["no-change re-run <= 10 s with 0 changed"] == (True, "9.5 s, changed=0")


def test_targets_skip_rows_that_were_not_measured():
    partial = results({"uvicorn": RPS["uvicorn"]})
    names = [name for name, _, _ in bench.targets(partial)]
    assert names == ["first converge <= 90 s", "no-change re-run <= 10 s with 0 changed"]


def test_table_is_aligned_markdown_with_the_share_of_the_ceiling():
    lines = bench.table(results(RPS)).splitlines()
    grid = [line for line in lines if line.startswith("|")]
    assert len(grid) == 2 + 5 * 4
    assert len({len(line) for line in grid}) == 1
    assert set(grid[1]) <= set("|-:")
    row = [cell.strip() for cell in grid[2 + 2 * 4 + 1].strip("|").split("|")]  # UvicornWorker, I/O 1,000
    assert row == ["uvicorn_worker label", "3", "I/O 200 ms", "1,000", "4,700", "94 %", "201.0", "260.0", "0", "60"]
    json_row = [cell.strip() for cell in grid[2 + 3].strip("|").split("|")]
    assert json_row[2:6] == ["JSON", "256", "3,000", "-"]
    assert lines[-1] == ("Ceiling of the I/O rows by concurrency: 100: 500 req/s, 1,000: 5,000 req/s, "
                         "10,000: 8,800 req/s.")


def test_written_report_has_the_table_the_chart_and_the_targets(tmp_path):
    ws = {"held": 12500, "limit": 20000, "stopped_by": "failure", "kib_per_connection": 41.5, "levels": []}
    data = results(RPS, websockets=ws)
    out = tmp_path / "benchmarks"
    bench.write(data, out)
    markdown = (tmp_path / "benchmarks.md").read_text()  # beside the directory, as docs/benchmarks.md
    assert bench.table(data) in markdown
    assert "![requests per second by server](benchmarks/worker-types.png)" in markdown
    assert "held 12,500 WebSockets" in markdown and "41.5 KiB" in markdown
    assert "- NOT met: UvicornWorker I/O at 10,000 clients >= 90 % of the ceiling (80 %)" in markdown
    assert "## Access log\n\nNot measured in this run." in markdown
    assert "Every server had answered all of a run's requests a second after it ended." in markdown

    assert json.loads((out / "results.json").read_text()) == data
    png = (out / "worker-types.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 400


def test_role_rows_against_bare_uvicorn():
    data = results(RPS)
    for key in ("uvicorn_worker", "asgi"):
        data["servers"][key]["role_vars"] = {}
    lines = bench.against_bare_uvicorn(data).splitlines()
    assert lines[0] == "- uvicorn_worker label: I/O 100: 99 %, I/O 1,000: 98 %, I/O 10,000: 93 %, JSON 256: 92 %"
    assert len(lines) == 2  # sync and gthread are not the role's


def test_restarts_sentence():
    data = results(RPS)
    data["servers"]["sync"]["restarts"] = 4
    data["servers"]["gthread"]["restarts"] = 1
    assert bench.restarts_sentence(data).endswith(
        "did not begin behind that queue: sync label 4 times, gthread label once.")


def test_access_log_sentence():
    kept = bench.access_log_sentence({"answered": 1000, "journal_lines": 1003, "suppressed": None})
    assert "wrk counted 1,000 answers and the journal holds 1,003 access lines" in kept
    assert "every answer has its line" in kept and "journald suppressed nothing" in kept
    lost = bench.access_log_sentence({"answered": 1000, "journal_lines": 400,
                                      "suppressed": "Suppressed 500 messages from bench.service\n"
                                                    "Suppressed 100 messages from bench.service"})
    assert "600 answers have no line" in lost
    assert "journald said: Suppressed 500 messages from bench.service; Suppressed 100 messages" in lost


@pytest.fixture
def http_server():
    class Handler(JsonHandler):
        def do_GET(self):
            self.send_json(200 if self.path == "/json" else 404, b'{"message": "Hello, World!"}')

    with local_http_server(Handler) as url:
        yield url


def test_wrk_reports_through_the_lua_script(http_server):
    """The real wrk (make unit installs it) with tools/wrk-report.lua: counts and error kinds."""
    ok = bench.wrk(f"{http_server}/json", 4, 1, 2)
    assert ok["requests"] > 50 and ok["status"] == 0 and ok["connect"] == 0
    assert 0 < ok["p50_us"] <= ok["p99_us"] <= ok["max_us"]
    missing = bench.wrk(f"{http_server}/nothing", 2, 1, 2)
    assert missing["requests"] > 0 and missing["status"] == missing["requests"]
    assert bench.summarise("json", 2, [missing]).rps == 0.0


def test_render_writes_the_report_of_saved_results(tmp_path):
    data = results(RPS)
    (tmp_path / "results.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    printed = subprocess.run([sys.executable, "tools/benchmark.py", "--render", str(tmp_path / "results.json"),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert printed == bench.table(data) + "\n"
    assert bench.table(data) in (tmp_path / "out.md").read_text()
    assert (out / "worker-types.png").stat().st_size > 10_000


def recycling(default_runs, unrecycled_runs, recycled):
    runs = {key: bench.asdict(bench.summarise("json", 256, [
        {"duration_us": 5_000_000, "requests": int(rps * 5), "connect": 0, "read": 0, "write": 0, "status": 0,
         "timeout": 0, "p50_us": 20_000, "p99_us": 90_000, "max_us": 200_000} for rps in values]))
        for key, values in (("default", default_runs), ("unrecycled", unrecycled_runs))}
    return {"pairs": len(default_runs), "recycled": recycled,
            "share": round(bench.pair_share(default_runs, unrecycled_runs), 1), **runs}


def test_recycling_is_judged_side_by_side_with_the_same_deployment_without_it():
    def check(default_runs, recycled):
        data = results(RPS, recycling=recycling(default_runs, [9000, 9100, 8900, 9050, 8950], recycled))
        return {name: (met, value) for name, met, value in bench.targets(data)}[
            "recycling (max_requests) costs <= 3 %: the default JSON >= 97 % of the same deployment with "
            "max_requests 0, side by side"]

    # Pair by pair against 9,000, 9,100, 8,900, 9,050 and 8,950 req/s without recycling.
    assert check([8800, 8900, 8700, 8850, 8750], 12) == (True, "97.8 %, 12 workers recycled meanwhile")
    assert check([8600, 8700, 8500, 8650, 8550], 12) == (False, "95.6 %, 12 workers recycled meanwhile")
    # One pair disturbed by something else on the machine does not decide.
    assert check([8800, 8900, 6000, 8850, 8750], 12)[0] is True
    # A run in which no worker reached max_requests measured nothing about recycling.
    assert check([9000] * 5, 0) == (False, "100.0 %, 0 workers recycled meanwhile")


def test_recycling_section_lists_every_run():
    data = results(RPS, recycling=recycling([8800, 8700, 8900], [9000, 9100, 8900], 7))
    text = "\n".join(bench.recycling_section(data))
    assert "3 runs each" in text
    assert "- default: 8,800 req/s (median; runs 8,800, 8,700, 8,900), p99 90.0 ms" in text
    assert "- max_requests 0: 9,000 req/s (median; runs 9,000, 9,100, 8,900)" in text
    assert "the default reached 97.8 % of it (median) while Uvicorn ended 7 workers" in text
    assert bench.recycling_section(results(RPS)) == ["Not measured in this run."]


def go_live_row(key, slowest, failed=0, up=True, **extra):
    return {"key": key, "label": f"{key} label", "steady_p99_s": 0.05, "slowest_s": slowest, "p99_s": 0.06,
            "requests": 5000, "failed": failed, "errors": {"ConnectError": failed} if failed else {},
            "ws_closes": {"1012": 4}, "ws_resets": 0, "event_s": 9.5, "new_code": True, "up_after": up, **extra}


GO_LIVE = {"import_delay_s": 4, "workers": 3, "standby_workers": 3, "worker_memory_mb": 150,
           "clients": {"concurrency": 20, "websockets": 4, "sse": 2},
           "rows": [go_live_row("handover", 0.12, handover={
               "standby_start_s": 4.6, "service_restart_s": 5.1, "standby_stop_s": 0.4, "overlap_s": 10.2,
               "steady_mb": 70, "peak_mb": 150, "peak_service_mb": 80, "peak_standby_mb": 70, "samples": 90}),
               go_live_row("restart", 4.71),
               go_live_row("usr2", 0.2, failed=811, up=False)]}


def test_going_live_is_judged_by_the_handover_row():
    assert bench.go_live.targets(GO_LIVE) == [(
        "the role's handover with a 4 s import: 0 failed, slowest request <= steady p99 + 0.5 s", True,
        "0 failed, slowest 0.12 s, steady p99 0.050 s")]
    stalled = {**GO_LIVE, "rows": [go_live_row("handover", 0.56)]}
    assert bench.go_live.targets(stalled)[0][1] is False
    failing = {**GO_LIVE, "rows": [go_live_row("handover", 0.1, failed=1)]}
    assert bench.go_live.targets(failing)[0][1] is False
    assert bench.go_live.targets(None) == []


def test_going_live_table_and_handover_sentence():
    lines = bench.go_live.table(GO_LIVE).splitlines()
    assert len(lines) == 2 + 3 and len({len(line) for line in lines}) == 1
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["handover label", "0.050", "0.12", "0", "1012 x4", "9.5", "yes", "yes"]
    assert cells[1][2] == "4.71"
    assert cells[2][3:] == ["811 (ConnectError 811)", "1012 x4", "9.5", "yes", "NO: the service is gone"]
    sentence = bench.go_live.handover_sentence(GO_LIVE)
    assert "overlap, from the standby's start to its stop: 10.2 s" in sentence
    assert "the service alone 70 MB before, both at most 150 MB (service 80 MB + standby 70 MB" in sentence
    assert "2.1 x the steady figure" in sentence and "3 + 3 workers x 150 MB = 900 MB" in sentence


def test_handover_facts_from_the_units_sampled_states_and_memory():
    mib = 1024 * 1024

    def sample(seconds, service, service_mb, standby, standby_mb):
        memory = {"service": service_mb and service_mb * mib, "standby": standby_mb and standby_mb * mib}
        return f"{seconds} " + " ".join(
            f"{unit}.MemoryCurrent={memory[unit] or '[not set]'} {unit}.ActiveState={state}"
            for unit, state in (("service", service), ("standby", standby)))

    samples = "\n".join([
        sample(100.0, "active", 70, "inactive", 0),
        sample(100.5, "active", 71, "activating", 20),    # the standby starts: the overlap begins
        sample(104.6, "active", 72, "active", 60),        # the standby answers
        sample(104.8, "deactivating", 72, "active", 75),  # the service restarts behind it
        sample(106.0, "activating", 30, "active", 75),
        sample(110.3, "active", 80, "active", 75),        # the service answers again: the peak
        sample(110.5, "active", 80, "deactivating", 40),  # the standby drains
        sample(110.9, "active", 80, "inactive", 0),       # and is gone
    ])
    assert bench.go_live.handover_facts(samples) == {
        "standby_start_s": 4.1, "service_restart_s": 5.5, "standby_stop_s": 0.4, "overlap_s": 10.4,
        "steady_mb": 70, "peak_mb": 155, "peak_service_mb": 80, "peak_standby_mb": 75, "samples": 8}


def test_json_lines_and_metrics_are_told_as_a_share_of_the_default():
    data = results(RPS)
    for key, rps in (("json_log", 7776), ("metrics", 7452)):
        data["servers"][key] = {"key": key, "label": f"{key} label", "workers": 3, "rss_mb": 60.0,
                                "runs": [bench.asdict(bench.Run("json", 256, rps, 1.0, 2.0, 0, {}, rps * 6, [rps]))]}
    lines = bench.observability_section(data)
    assert lines == [
        "- JSON access lines (asgi_app_access_log_format: json): 7,776 req/s against the default's 8,100, "
        "96.0 % of it (a cost of 4.0 %); p99 2.0 ms",
        "- metrics (asgi_app_metrics: true): 7,452 req/s against the default's 8,100, 92.0 % of it "
        "(a cost of 8.0 %); p99 2.0 ms"]
    assert bench.observability_section(results(RPS)) == ["Not measured in this run."]


install_bench = load_module("benchmark_install", REPO / "tools" / "benchmark_install.py")


def test_the_install_benchmark_times_the_build_tasks_alone():
    """tools/benchmark_install.py: a release's build is the tasks of virtualenv.yml, however deep
    in its blocks, as profile_tasks prints them (rendered), summed over the hosts' lines."""
    names = install_bench.build_task_names()
    assert {"Build the release's virtualenv from the package index, with", "Pack the wheels",
            "Install from them, with no index"} <= set(names)
    output = "\n".join([
        "asgi.gunicorn.asgi_app : Build the release's virtualenv from the package index, with uv --- 2.15s",
        "asgi.gunicorn.asgi_app : Install from them, with no index ------------- 0.85s",
        "asgi.gunicorn.asgi_app : Render gunicorn_config.py, checked by gunicorn --check-config before it goes"
        " live --- 0.94s",
        "Build the release's virtualenv from the package index, with uv --- 9.00s",
    ])
    assert install_bench.seconds_building(output) == pytest.approx(3.0)


def test_the_install_benchmark_wants_every_host_unchanged_on_a_rerun():
    recap = ("asgi-install-1             : ok=40   changed=0    unreachable=0    failed=0\n"
             "asgi-install-2             : ok=40   changed=1    unreachable=0    failed=0\n")
    assert install_bench.unchanged(recap, ["asgi-install-1"])
    assert not install_bench.unchanged(recap, ["asgi-install-1", "asgi-install-2"])


def test_the_install_benchmark_judges_uv_against_half_of_pip():
    row = {"no change": 12.0, "new release": 25.0, "new build": 2.0}
    rows = [{**row, "case": "pip", "hosts": 1, "cold": 35.0, "cold build": 8.0},
            {**row, "case": "uv", "hosts": 1, "cold": 30.3, "cold build": 2.9},
            {**row, "case": "uv, wheelhouse", "hosts": 2, "cold": 57.2, "cold build": 11.1}]
    assert install_bench.targets(rows) == [
        "NOT met: uv's first converge on 1 host(s) <= half of pip's (30.3 s against 35.0 s)",
        "met: uv's release build in the first converge on 1 host(s) <= half of pip's (2.9 s against 8.0 s)"]


def test_the_install_benchmark_table_has_a_row_per_case():
    rows = [{"case": "uv, wheelhouse", "hosts": 2, "cold": 57.16, "cold build": 11.1, "no change": 22.2,
             "new release": 51.5, "new build": 10.54}]
    lines = install_bench.table(rows).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")][:3] == ["hosts", "installer", "first converge (s)"]
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == [
        "2", "uv, wheelhouse", "57.2", "11.1", "22.2", "51.5", "10.5"]


def test_the_install_benchmark_says_why_no_target_was_judged():
    """--cases uv alone: no pip row to judge against, said as such rather than an empty list."""
    rows = [{"case": "uv", "hosts": 1, "cold": 30.3, "cold build": 2.9, "no change": 12.0, "new release": 25.0,
             "new build": 2.0}]
    report = install_bench.render(rows)
    assert report.startswith(install_bench.table(rows))
    assert report.endswith("## Targets\n\n- none judged: each compares a pip row and a uv row on the same number "
                           "of hosts")
    rows.append({**rows[0], "case": "pip", "cold": 35.0, "cold build": 8.0})
    assert report != install_bench.render(rows)
    assert install_bench.render(rows).endswith(install_bench.targets(rows)[-1])
