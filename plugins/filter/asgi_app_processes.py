"""The app's processes and timers (asgi_app_processes, asgi_app_timers), and the server of its
metrics (asgi_app_metrics), as systemd units.

A process is a template unit, NAME-<name>@.service, run as instances NAME-<name>@1.service ... up
to its `instances`; a timer is NAME-<name>.timer with the oneshot service it starts,
NAME-<name>.service. All of them run the live release (through `current`) as the web service does.
From the inputs and what an earlier deploy left on the host (host_resources.py: the units marked
X-AsgiApp=NAME and which of them are enabled), the plan says which unit files to write, which
units run, which no longer listed ones stop and go, and what a rollback stops and removes again.
The go-live decision says, once the files are written, which units restart and which just start.
"""

import re

UNIT_DIR = "/etc/systemd/system"
TEMPLATES = {"process": "asgi_app.command.service.j2", "timer-service": "asgi_app.command.service.j2",
             "timer": "asgi_app.timer.j2", "metrics": "asgi_app.command.service.j2"}
# A process restarts onto a new release or environment; a timer's service runs the live release
# anyway at its next run.
RESTARTED_BY = {"release", "environment"}


def unit_file(unit):
    """The file of a unit: an instance's is its template's (NAME-worker@2.service -> NAME-worker@.service)."""
    return re.sub(r"@[^@/]*\.service$", "@.service", unit)


def processes_plan(found, name, processes, timers, metrics=None):
    """What to write, run, stop and remove, from the checked inputs (asgi_app_check_inputs'
    `processes`, `timers` and `metrics`) and `found`, host_resources.py's `app.units` (before this
    run). The server of the metrics (asgi_app_metrics) is one more process, NAME-metrics.service,
    a single unit."""
    files, run = [], []
    if metrics:
        unit = f"{name}-metrics.service"
        files.append({"unit": unit, "kind": "metrics", "entry": metrics})
        run.append(unit)
    for process in processes:
        unit = f"{name}-{process['name']}@.service"
        files.append({"unit": unit, "kind": "process", "entry": process})
        run += [f"{name}-{process['name']}@{number}.service" for number in range(1, process["instances"] + 1)]
    for timer in timers:
        pair = {"service": f"{name}-{timer['name']}.service", "timer": f"{name}-{timer['name']}.timer"}
        files += [{"unit": pair["service"], "kind": "timer-service", "entry": timer, **pair},
                  {"unit": pair["timer"], "kind": "timer", "entry": timer, **pair}]
        run.append(pair["timer"])
    for item in files:
        item.update(path=f"{UNIT_DIR}/{item['unit']}", template=TEMPLATES[item["kind"]])
        # systemd-analyze verify reads a timer with the service it starts beside it.
        item["partners"] = [item["path"][:-len(".timer")] + ".service"] if item["kind"] == "timer" else []
    wanted = {item["unit"] for item in files}
    found_units = [entry["unit"] for entry in found or []]
    enabled = [unit for entry in found or [] for unit in entry["enabled"]]
    dropped = [unit for unit in found_units if unit not in wanted]
    return {
        "files": files,
        "run": run,
        # Enabled by an earlier deploy, no longer listed: instances beyond `instances`, processes
        # and timers taken off the lists; to stop and disable.
        "stop": [unit for unit in enabled if unit not in run],
        # The services of the timers taken off the list, to stop if a run is under way (nothing
        # enables them).
        "stop_services": [unit for unit in dropped if unit.endswith(".service") and not unit.endswith("@.service")],
        "remove": [f"{UNIT_DIR}/{unit}" for unit in dropped],
        # What ran before this deploy, which a rollback runs again, and what this deploy adds,
        # which a rollback stops and removes.
        "previous": enabled,
        "new": [unit for unit in run if unit not in enabled],
        "new_files": [item["path"] for item in files if item["unit"] not in found_units],
        # For journalctl --unit: every instance of each process, each timer's service.
        "journal": sorted({unit_file(unit).replace("@.service", "@*.service").replace(".timer", ".service")
                           for unit in [*run, *enabled]}),
    }


def processes_go_live(run, changed, changed_units, missing=()):
    """How each unit of `run` goes live: a process's instance restarts when the release or the
    environment changed (`changed`, as for the web service) or its unit file did (`changed_units`,
    file names), a timer when its .timer file did; every other one is started if it is not running.
    Units whose file is `missing` (listed, but not written by a run whose tags left the service
    step out) are left out. systemd reads its units again first when any of them changed."""
    changed, changed_units, missing = set(changed), set(changed_units), set(missing)
    units = []
    for unit in run:
        if unit_file(unit) in missing:
            continue
        if unit.endswith(".timer"):
            restart = unit in changed_units
        else:
            restart = bool(RESTARTED_BY & changed) or unit_file(unit) in changed_units
        units.append({"unit": unit, "state": "restarted" if restart else "started"})
    return {"units": units, "daemon_reload": bool(changed_units)}


def processes_failed(first, later):
    """The processes that did not keep running: `first` and `later` are the results of two loops of
    systemd_service over the processes started, read right after they started and once the settle
    time passed. One failed when it is not active now, or when its main process is not the one it
    had then (it exited and systemd started it again, or it was waiting to be)."""
    main_pid = {result["item"]: result.get("status", {}).get("MainPID", "0") for result in first or []}
    failed = []
    for result in later or []:
        status = result.get("status", {})
        pid = status.get("MainPID", "0")
        if status.get("ActiveState") != "active" or pid in ("", "0") or pid != main_pid.get(result["item"]):
            failed.append(result["item"])
    return failed


def calendar_problems(results):
    """Preflight's messages for the timers whose on_calendar `systemd-analyze calendar` refused on
    the host (a loop's results over the checked timers; skipped ones are left out)."""
    problems = []
    for result in results or []:
        if "rc" not in result or result["rc"] == 0:
            continue
        timer = result["item"]
        said = (result.get("stderr") or "").strip().splitlines()
        problems.append(
            f"asgi_app_timers has on_calendar '{timer['on_calendar']}' for '{timer['name']}', which systemd on this "
            f"host does not read ({said[-1] if said else 'exit status ' + str(result['rc'])}). Give an OnCalendar= "
            "expression (systemd.time(7)) such as 'daily', 'Mon..Fri 03:00' or '*:0/15'; "
            "systemd-analyze calendar 'EXPRESSION' shows when it elapses.")
    return problems


class FilterModule:
    """asgi_app processes and timers."""

    def filters(self):
        return {
            "asgi_app_processes_plan": processes_plan,
            "asgi_app_processes_go_live": processes_go_live,
            "asgi_app_processes_failed": processes_failed,
            "asgi_app_calendar_problems": calendar_problems,
        }
