"""Derived values of an asgi_app deployment, computed in one place.

The role's templates only print what these filters return, so every rule (CPUs the service
may use, worker count, the shutdown timeout chain) is plain Python that unit tests call
directly.
"""

import math

from ansible.errors import AnsibleFilterError

WORKER_RULES = {
    "io": "cores + 1",
    "mixed": "2 x cores + 1",
    "cpu": "2 x cores + 1",
}


def effective_cpus(resources):
    """CPUs the service may really use: the smallest of online CPUs, affinity and cgroup quota.

    ``resources`` is what the role's host_resources.py printed on the target:
    ``online_cpus``, ``affinity_cpus`` and ``cpu_quota`` (a fraction of CPUs, or None).
    A fractional quota is rounded up: 1.5 CPUs of time still keeps two workers busy.
    """
    try:
        online = int(resources["online_cpus"])
        affinity = int(resources.get("affinity_cpus") or online)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"asgi_app: unreadable CPU facts {resources!r}: {exc}") from exc
    quota = resources.get("cpu_quota")
    candidates = [(online, "online CPUs"), (affinity, "CPU affinity")]
    if quota is not None:
        candidates.append((max(1, math.ceil(float(quota) - 1e-9)), "cgroup CPU quota"))
    cpus, limited_by = min(candidates, key=lambda pair: pair[0])
    if cpus < 1:
        raise AnsibleFilterError(f"asgi_app: no usable CPU in {resources!r}")
    return {
        "cpus": cpus,
        "limited_by": limited_by,
        "online": online,
        "affinity": affinity,
        "quota": None if quota is None else float(quota),
    }


def worker_plan(resources, workload="mixed", workers=None, worker_memory_mb=150,
                memory_budget_mb=None, memory_share=0.8, allow_extra_workers=False, app_name=None,
                memory_max_mb=None, memory_high_mb=None):
    """How many workers to run, and a sentence saying why.

    The CPU rule gives ``cores + 1`` (io) or ``2 x cores + 1`` (mixed, cpu). The memory budget
    caps it at ``budget // worker_memory_mb``; unless given, the budget is ``memory_share`` of
    what the service may use, less what the role's other apps on the host take (``apps`` in
    ``resources``, all but ``app_name``: their workers at ``worker_memory_mb`` each), so that
    apps deployed one after the other do not each count on the same memory. An explicit
    ``workers`` wins and is reported as such; the plan's ``problems`` say why it cannot work when
    it is not positive, when its memory estimate does not fit, or when it is above
    2 x cores + 1 without ``allow_extra_workers``. The service's memory limits come with it
    (memory_limits).
    """
    if workload not in WORKER_RULES:
        raise AnsibleFilterError(
            f"asgi_app_workload must be one of {sorted(WORKER_RULES)}, got {workload!r}"
        )
    if int(worker_memory_mb) < 1:
        raise AnsibleFilterError("asgi_app_worker_memory_mb must be a positive number of MB")
    cpu = effective_cpus(resources)
    cores = cpu["cpus"]
    by_cpu = cores + 1 if workload == "io" else 2 * cores + 1
    memory_note = ""
    explicit_budget = memory_budget_mb is not None
    taken = 0
    if memory_budget_mb is None:
        memory_mb = int(resources["memory_mb"])
        memory_budget_mb = int(memory_mb * memory_share)
        others = sorted((app for app in resources.get("apps") or []
                         if app.get("name") != app_name and app.get("workers")), key=lambda app: app["name"])
        if others:
            taken = sum(app["workers"] for app in others) * int(worker_memory_mb)
            memory_budget_mb = max(0, memory_budget_mb - taken)
            memory_note = (f" ({memory_share * 100:g} % of {memory_mb} MB, less {taken} MB for "
                           + ", ".join(f"the {app['workers']} workers of {app['name']}" for app in others) + ")")
    budget_text = f"{memory_budget_mb} MB{memory_note}"
    # A new release goes live with both sets of workers up for a moment (go_live): the standby's
    # may use what the host has beyond the budget (the budget is a share of it, for safety),
    # or, with an explicit budget, what the budget leaves.
    overlap_mb = (int(memory_budget_mb) if explicit_budget
                  else max(0, int(resources["memory_mb"]) - taken))
    by_memory = max(1, int(memory_budget_mb) // int(worker_memory_mb))

    cpu_text = _describe_cpus(cpu)
    problems = []
    if workers is not None:
        count = int(workers)
        problems = _explicit_worker_problems(count, cores, cpu_text, int(worker_memory_mb),
                                             int(memory_budget_mb), budget_text, allow_extra_workers)
        rule = f"set explicitly by asgi_app_workers (the {workload} rule would give {by_cpu})"
    elif by_memory < by_cpu:
        count = by_memory
        rule = (f"{workload} rule {WORKER_RULES[workload]} = {by_cpu}, capped by memory: "
                f"{budget_text} / {worker_memory_mb} MB per worker = {by_memory}")
    else:
        count = by_cpu
        rule = f"{workload} rule {WORKER_RULES[workload]} = {by_cpu}"
    standby = max(0, min(count, overlap_mb // int(worker_memory_mb) - count))
    if standby:
        standby_rule = (f"{standby} standby worker(s) carry a new release in while the {count} restart onto it "
                        f"({count + standby} x {worker_memory_mb} MB fit in {overlap_mb} MB)")
    else:
        standby_rule = (f"no room for a standby worker beside the {count} ({count + 1} x {worker_memory_mb} MB "
                        f"> {overlap_mb} MB): a new release goes live by a plain restart, and clients wait "
                        "while the app starts. Lower asgi_app_workers or asgi_app_worker_memory_mb (if the "
                        "workers take less), or raise asgi_app_memory_budget_mb, to go live without a stall")
    # The cap is the budget before the other apps' share is taken from it: what the host's other
    # apps run changes from one deploy to the next, and the unit must not change with it.
    cap_mb = int(memory_budget_mb) if explicit_budget else int(int(resources["memory_mb"]) * memory_share)
    limits = memory_limits(count, int(worker_memory_mb), cap_mb, memory_max_mb, memory_high_mb,
                           "the memory budget" if explicit_budget else f"{memory_share * 100:g} % of the host's memory")
    return {
        "workers": count,
        "memory_max_mb": limits["max"],
        "memory_high_mb": limits["high"],
        "memory_rule": limits["rule"],
        "standby_workers": standby,
        "standby_rule": standby_rule,
        "cores": cores,
        "by_cpu": by_cpu,
        "by_memory": by_memory,
        "memory_budget_mb": int(memory_budget_mb),
        "cpus": cpu_text,
        "rule": rule,
        "problems": problems + limits["problems"],
    }


def memory_limits(workers, worker_memory_mb, budget_mb, memory_max_mb=None, memory_high_mb=None,
                  budget_text="the memory budget"):
    """The service's MemoryMax and MemoryHigh, in MB (None: no limit), and a sentence saying why.

    Unless given, the hard limit is `budget_mb` (the explicit memory budget, or the share of the
    host's memory the budget starts from, whatever the host's other apps take), so that one
    abusive client, or a leak, cannot take the host's memory: past it the kernel kills the
    largest process of the service (a worker: they ask to go first, asgi_app_worker.post_fork)
    and gunicorn replaces it, while the others serve on. Above the soft limit, 90 % of the hard
    one unless given, the kernel reclaims the service's memory before it takes more. 0 sets no
    limit. ``problems`` says when an explicit limit leaves the workers less than they need.
    """
    problems = []
    need = workers * worker_memory_mb
    if memory_max_mb is None:
        top, rule = budget_mb, f"MemoryMax {budget_mb} MB, {budget_text}"
    elif int(memory_max_mb) == 0:
        top, rule = None, "no MemoryMax (asgi_app_memory_max_mb is 0)"
    else:
        top, rule = int(memory_max_mb), f"MemoryMax {int(memory_max_mb)} MB, set by asgi_app_memory_max_mb"
        if top < need:
            problems.append(
                f"asgi_app_memory_max_mb is {top}: the {workers} workers need about {need} MB "
                f"({workers} x asgi_app_worker_memory_mb {worker_memory_mb}), so the kernel would kill them "
                f"in turn. Set it to at least {need}, 0 for no limit, or leave it unset for {budget_text}.")
    if memory_high_mb is None:
        high = None if top is None else top * 9 // 10
    else:
        high = int(memory_high_mb) or None
        if high is not None and top is not None and high > top:
            problems.append(
                f"asgi_app_memory_high_mb is {high}, above asgi_app_memory_max_mb's {top} MB: the soft limit "
                "must be below the hard one. Lower it, or leave it unset for 90 % of the hard limit.")
    if high is not None:
        rule += f", MemoryHigh {high} MB"
    return {"max": top, "high": high, "rule": rule, "problems": problems}


def _explicit_worker_problems(count, cores, cpu_text, worker_memory_mb, memory_budget_mb, budget_text,
                              allow_extra_workers):
    ceiling = 2 * cores + 1
    if count < 1:
        return [f"asgi_app_workers is {count}: gunicorn needs at least one worker. Leave "
                f"asgi_app_workers unset to derive it from the host ({ceiling} here), or set a "
                "positive number."]
    if count * worker_memory_mb > memory_budget_mb:
        return [f"asgi_app_workers is {count}: at about {worker_memory_mb} MB each "
                f"(asgi_app_worker_memory_mb) they need {count * worker_memory_mb} MB, more than "
                f"the {budget_text} this host can give them, so the kernel would start "
                "killing workers. Set asgi_app_workers to at most "
                f"{max(1, memory_budget_mb // worker_memory_mb)}, or leave it unset."]
    if count > ceiling and not allow_extra_workers:
        return [f"asgi_app_workers is {count}, but this host has {cpu_text}. Async Uvicorn "
                f"workers each serve many connections at once; beyond 2 x {cores} + 1 = "
                f"{ceiling} they only compete for the same CPUs and add about 50-170 MB of "
                "memory each. Leave asgi_app_workers unset to derive the count, or set "
                f"asgi_app_allow_extra_workers: true to keep {count} anyway."]
    return []


def _describe_cpus(cpu):
    quota = "none" if cpu["quota"] is None else f"{cpu['quota']:g}"
    return (f"{cpu['cpus']} usable CPU(s), limited by {cpu['limited_by']} "
            f"(online {cpu['online']}, affinity {cpu['affinity']}, cgroup quota {quota})")


def timeout_chain(graceful_timeout=30, uvicorn_graceful_timeout=None, stop_timeout=None):
    """The three shutdown deadlines, nested so that each layer finishes before the next kills it.

    Uvicorn closes connections first (``graceful_timeout - margin``); gunicorn then waits
    ``graceful_timeout`` before it kills a worker; systemd waits ``graceful_timeout + 2 x margin``
    before SIGKILL, leaving the master time to exit. The margin is a sixth of
    graceful_timeout, between 1 and 10 seconds. Explicit values are kept; ``problems`` says
    when they do not nest.
    """
    graceful = int(graceful_timeout)
    margin = min(10, max(1, math.ceil(graceful / 6)))
    uvicorn = graceful - margin if uvicorn_graceful_timeout is None else int(uvicorn_graceful_timeout)
    stop = graceful + 2 * margin if stop_timeout is None else int(stop_timeout)
    problems = []
    if graceful < 2:
        problems.append(
            f"asgi_app_graceful_timeout is {graceful_timeout}: open requests need at least 2 "
            "seconds to finish on a stop or reload. Use 30 (the default) or more.")
    elif not 0 < uvicorn < graceful < stop:
        problems.append(
            "the shutdown timeouts must nest as Uvicorn's graceful shutdown "
            "(asgi_app_uvicorn_graceful_timeout) < gunicorn's graceful_timeout "
            "(asgi_app_graceful_timeout) < systemd's TimeoutStopSec (asgi_app_timeout_stop_sec), "
            f"so that each layer finishes before the next one kills it; these give {uvicorn} < "
            f"{graceful} < {stop}. Leave asgi_app_uvicorn_graceful_timeout and "
            "asgi_app_timeout_stop_sec unset to derive them from asgi_app_graceful_timeout.")
    return {"uvicorn": uvicorn, "gunicorn": graceful, "systemd": stop, "problems": problems}


GO_LIVE_ACTIONS = {
    "none": "nothing changed that the running service uses",
    "start": "the service was not running: it starts",
    "rebind": "the listening address changed: the service stops, the socket is replaced, the service "
              "starts (connections are refused meanwhile)",
    "handover": "the standby starts on what changed and answers, the service restarts onto it while the "
                "standby serves, then the standby stops",
    "restart": "the service restarts onto what changed, with no standby (no memory for one): clients "
               "wait while the app starts",
}


def go_live(changed, running, standby_workers):
    """What a deploy (or a rollback) does to put what it changed in service, decided once.

    ``changed`` names what changed: any of ``release``, ``config``, ``environment``, ``unit``
    (any of the app's service units) and ``socket``. ``running`` says whether the service was
    active. Returns the action (a key of GO_LIVE_ACTIONS), whether systemd must read its units
    again first, and why.
    """
    changed = sorted(set(changed))
    unknown = set(changed) - {"release", "config", "environment", "unit", "socket"}
    if unknown:
        raise AnsibleFilterError(f"go_live: unknown change(s) {sorted(unknown)}")
    if not running:
        action = "start"
    elif "socket" in changed:
        action = "rebind"
    elif not changed:
        action = "none"
    elif int(standby_workers) < 1:
        action = "restart"
    else:
        action = "handover"
    what = ", ".join(changed) if changed else "nothing"
    return {"action": action, "daemon_reload": bool({"unit", "socket"} & set(changed)),
            "changed": changed, "why": f"changed: {what}; {GO_LIVE_ACTIONS[action]}"}


class FilterModule:
    """asgi_app filters."""

    def filters(self):
        return {
            "asgi_app_effective_cpus": effective_cpus,
            "asgi_app_worker_plan": worker_plan,
            "asgi_app_timeout_chain": timeout_chain,
            "asgi_app_go_live": go_live,
        }
