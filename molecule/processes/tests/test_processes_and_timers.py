"""jobs' worker and timer across its deploys: the worker runs as the web service does and goes live
with it, a job in hand when a new version is deployed finishes without SIGKILL, a worker that
cannot start takes the deploy back for both, playbooks/rollback.yml takes both back, an instance
and a timer taken off the lists stop and go, a time systemd does not read is refused first, and a
removal leaves nothing.

side_effect.yml recorded each step (processes.json); the rest is read from the host now, with
the app removed.
"""

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def record():
    return json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "processes.json").read_text())


def pids(lines):
    """The main processes systemctl show printed, one unit's a line (a blank line between units)."""
    return [int(line) for line in lines if line.strip()]


def started(log_lines, version, field=4):
    """{pid: instance} of the workers of a version, from workers.log ("TIME worker VERSION PID INSTANCE
    CODE"); field=5: {pid: the directory its code runs from}."""
    return {int(words[3]): words[field] for words in (line.split() for line in log_lines)
            if words[1] == "worker" and words[2] == version}


# --- 1. Version 2 deployed while a job of version 1 runs --------------------------------------

def test_version_1_served_and_its_two_workers_ran(record):
    assert record["health_1"]["version"] == "1"
    assert len(pids(record["workers_1"])) == 2 and all(pids(record["workers_1"]))


def test_the_job_in_hand_finished_on_the_worker_that_began_it(record):
    """The job of 70 s enqueued on version 1 was running when the deploy of version 2 sent its
    worker SIGTERM; the worker finished it, and only then stopped."""
    job = record["job"]["job"]
    lines = [line.split() for line in record["jobs_log"] if job in line]
    assert [words[1] for words in lines] == ["start", "end"]
    (began, _, _, version_start, pid_start), (ended, _, _, version_end, pid_end) = lines
    assert version_start == version_end == "1" and pid_start == pid_end
    assert int(pid_start) in pids(record["workers_1"])
    # arq's "shutdown on SIGTERM" line from that worker's process, with the time journald got it.
    sigterm = next(float(line.split()[0]) for line in record["journal_2"]
                   if f"[{pid_start}]:" in line and "shutdown on SIGTERM" in line)
    began, ended = float(began), float(ended)
    web = record["health_2"]["version"]
    workers = sorted(set(started(record["workers_log_3"], "2").values()))
    print(f"\n| event | seconds after the job began | web service | workers |\n|---|---:|---|---|\n"
          f"| job {job} begins on worker {pid_start} (version 1) | 0 | 1 | 1, 1 |\n"
          f"| the deploy of version 2 sends that worker SIGTERM | {sigterm - began:.1f} | 2 | stopping |\n"
          f"| the job ends on that worker, which then exits | {ended - began:.1f} | 2 | stopping |\n"
          f"| after the deploy | - | {web} | {', '.join(['2'] * len(pids(record['workers_2'])))} "
          f"(instances {', '.join(workers)}) |")
    assert began < sigterm < ended
    # It ran its 70 s to the end: SIGTERM let it finish rather than cancel it.
    assert ended - began >= 69.5


def test_no_worker_was_killed(record):
    journal = "\n".join(record["journal_2"])
    print("\n" + journal)
    for sign in ("SIGKILL", "Killing", "code=killed", "status=9/KILL", "timed out"):
        assert sign not in journal
    # Each instance stopped on SIGTERM and started again.
    assert journal.count("Stopped") >= 2 or journal.count("Deactivated successfully") >= 2


def test_the_web_service_and_the_workers_went_live_on_version_2_together(record):
    assert record["health_2"]["version"] == "2"
    before, after = pids(record["workers_1"]), pids(record["workers_2"])
    assert all(after) and not set(before) & set(after)
    assert set(started(record["workers_log_3"], "2")) >= set(after)
    # The web service's and the workers' code: the same release, found through `current`.
    web = record["health_2"]["code"]
    code = started(record["workers_log_3"], "2", field=5)
    print(f"\nweb service: {web}\nworkers: {[code[pid] for pid in after]}")
    assert web.startswith("/opt/jobs/releases/") and web.endswith("/app")
    assert [code[pid] for pid in after] == [web, web]


def test_a_worker_runs_with_the_web_services_user_environment_and_sandbox(record):
    lines = record["identity"]
    split = lines.index("")
    web, worker = lines[:split], lines[split + 1:]
    print("\n" + "\n".join(worker))
    assert web == worker
    assert "User=jobs" in worker and "ProtectSystem=strict" in worker
    assert "ReadWritePaths=/var/lib/jobs" in worker


# --- 2. The timer ------------------------------------------------------------------------------

def test_the_timer_is_listed_with_its_service(record):
    print("\n" + "\n".join(record["timers"]))
    assert any("jobs-tick.timer" in line and "jobs-tick.service" in line for line in record["timers"])


def test_the_timers_command_ran_version_2_and_its_exit_status_is_known(record):
    assert "Result=success" in record["tick_result"] and "ExecMainStatus=0" in record["tick_result"]
    assert "User=jobs" in record["tick_result"]
    assert "tick of version 2" in "\n".join(record["tick_journal"])


# --- 3. Version 3, whose worker cannot start ------------------------------------------------------

def test_a_worker_that_cannot_start_fails_the_deploy(record):
    failure = record["failure_3"]
    print("\n" + failure[:3000])
    assert "jobs-worker@" in failure and "did not keep running" in failure
    assert "asgi_app_processes_settle" in failure
    assert "It went back to what served before (release" in failure
    assert "Last lines of its journal" in failure


def test_the_web_service_and_the_workers_came_back_to_version_2(record):
    assert record["health_3"]["version"] == "2"
    now = pids(record["workers_3"])
    assert all(now) and not set(now) & set(pids(record["workers_2"]))
    assert set(now) <= set(started(record["workers_log_3"], "2"))
    assert "cannot start (on purpose)" in "\n".join(record["journal_3"])


# --- 4. playbooks/rollback.yml ----------------------------------------------------------------

def test_rollback_takes_the_web_service_and_the_workers_back_to_version_1(record):
    assert record["health_4"]["version"] == "1"
    now = pids(record["workers_4"])
    assert all(now) and set(now) <= set(started(record["workers_log_4"], "1"))
    assert sorted(started(record["workers_log_4"], "1")[pid] for pid in now) == ["1", "2"]


# --- 5. An instance and the timer taken off the lists --------------------------------------------

def test_what_is_no_longer_listed_stopped_and_went(record):
    print("\n" + "\n".join(record["units_5"]))
    files = {path.removeprefix("/etc/systemd/system/") for path in record["files_5"]}
    assert "jobs-worker@.service" in files and "multi-user.target.wants/jobs-worker@1.service" in files
    assert not {name for name in files if "jobs-tick" in name or "jobs-worker@2" in name}
    running = [line for line in record["units_5"] if " running " in line or " waiting " in line]
    assert [line.split()[0] for line in running if line.startswith("jobs-")] == ["jobs-worker@1.service"]
    assert "enabled" not in record["enabled_5"]


# --- 6. A time systemd does not read ---------------------------------------------------------------

def test_a_time_systemd_does_not_read_is_refused_before_anything_changes(record):
    failure = record["failure_6"]
    print("\n" + failure)
    assert "asgi_app_timers has on_calendar 'every day' for 'tick'" in failure
    assert "systemd-analyze calendar" in failure and "nothing on the host was changed" in failure
    assert record["unit_before_6"] == record["unit_after_6"]
    assert sorted(record["files_6"]) == sorted(record["files_5"])


# --- 7. The removal ----------------------------------------------------------------------------------

def test_the_removal_left_no_unit_of_the_app(record, host):
    print("\n" + "\n".join(record["units_7"]))
    assert record["files_7"] == []
    assert not [line for line in record["units_7"] if " active " in line or " running " in line]
    assert not host.file("/etc/systemd/system/jobs-worker@.service").exists
    assert "X-AsgiApp=jobs" not in host.run("grep -rs X-AsgiApp= /etc/systemd/system").stdout


def test_nothing_of_the_app_runs(host):
    processes = host.check_output("ps -eo user:20,args")
    assert "arq jobs.worker" not in processes and "jobs.main" not in processes
