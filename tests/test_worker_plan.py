"""The worker rule: usable CPUs (online, affinity, cgroup quota), workload, memory cap."""

import pytest
from ansible.errors import AnsibleFilterError


def resources(online=4, affinity=None, quota=None, memory_mb=16384):
    return {"online_cpus": online, "affinity_cpus": affinity or online, "cpu_quota": quota,
            "memory_mb": memory_mb}


@pytest.mark.parametrize(
    "facts, cpus, limited_by",
    [
        (resources(online=1), 1, "online CPUs"),
        (resources(online=2), 2, "online CPUs"),
        (resources(online=64), 64, "online CPUs"),
        (resources(online=8, affinity=2), 2, "CPU affinity"),
        (resources(online=8, affinity=8, quota=2.0), 2, "cgroup CPU quota"),
        (resources(online=8, quota=1.5), 2, "cgroup CPU quota"),
        (resources(online=8, quota=0.25), 1, "cgroup CPU quota"),
        (resources(online=8, affinity=3, quota=6.0), 3, "CPU affinity"),
        (resources(online=4, quota=16.0), 4, "online CPUs"),
        (resources(online=16, affinity=4, quota=2.5), 3, "cgroup CPU quota"),
    ],
)
def test_effective_cpus_is_the_smallest_limit(sizing, facts, cpus, limited_by):
    result = sizing.effective_cpus(facts)
    assert (result["cpus"], result["limited_by"]) == (cpus, limited_by)


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 32])
@pytest.mark.parametrize("workload, rule", [("io", lambda c: c + 1), ("mixed", lambda c: 2 * c + 1),
                                            ("cpu", lambda c: 2 * c + 1)])
def test_workload_rule(sizing, cores, workload, rule):
    plan = sizing.worker_plan(resources(online=cores, memory_mb=1 << 20), workload=workload)
    assert plan["workers"] == rule(cores)
    assert plan["by_cpu"] == rule(cores)
    assert str(rule(cores)) in plan["rule"]


@pytest.mark.parametrize(
    "facts, workload, expected",
    [
        (resources(online=32, affinity=4), "mixed", 9),      # a VM with 32 vCPUs pinned to 4
        (resources(online=32, quota=2.0), "mixed", 5),       # a container limited to 2 CPUs
        (resources(online=32, quota=2.0), "io", 3),
        (resources(online=2, quota=0.5), "mixed", 3),        # half a CPU still gets one core's rule
    ],
)
def test_cpuinfo_alone_would_be_wrong(sizing, facts, workload, expected):
    assert sizing.worker_plan(facts, workload=workload)["workers"] == expected


@pytest.mark.parametrize(
    "memory_mb, per_worker, budget, expected",
    [
        (1024, 150, None, 5),     # 80 % of 1 GiB = 819 MB -> 5 workers of 150 MB, under 2x8+1
        (512, 150, None, 2),
        (256, 150, None, 1),      # never fewer than one
        (100, 150, None, 1),
        (65536, 150, None, 17),   # memory is not the limit: the CPU rule is
        (65536, 170, 500, 2),     # an explicit budget
        (4096, 50, None, 17),
    ],
)
def test_memory_caps_the_worker_count(sizing, memory_mb, per_worker, budget, expected):
    plan = sizing.worker_plan(resources(online=8, memory_mb=memory_mb), workload="mixed",
                              worker_memory_mb=per_worker, memory_budget_mb=budget)
    assert plan["workers"] == expected
    if expected < 17:
        assert "capped by memory" in plan["rule"]


def test_explicit_workers_win_and_say_so(sizing):
    plan = sizing.worker_plan(resources(online=2), workload="mixed", workers=3)
    assert plan["workers"] == 3
    assert "set explicitly by asgi_app_workers" in plan["rule"]
    assert "would give 5" in plan["rule"]


def test_the_plan_names_the_cpus_and_the_rule(sizing):
    plan = sizing.worker_plan(resources(online=8, affinity=8, quota=2.0), workload="mixed")
    assert plan["cpus"] == ("2 usable CPU(s), limited by cgroup CPU quota "
                            "(online 8, affinity 8, cgroup quota 2)")
    assert plan["rule"] == "mixed rule 2 x cores + 1 = 5"


@pytest.mark.parametrize("workload", ["sync", "", "IO"])
def test_unknown_workload_is_refused(sizing, workload):
    with pytest.raises(AnsibleFilterError, match="asgi_app_workload"):
        sizing.worker_plan(resources(), workload=workload)


def test_unreadable_facts_are_refused(sizing):
    with pytest.raises(AnsibleFilterError, match="unreadable CPU facts"):
        sizing.effective_cpus({"affinity_cpus": 2})


def app(name, workers):
    """Another of the role's apps on the host, as host_resources.py reads it."""
    return {"name": name, "user": name, "group": name, "listen": "0.0.0.0:8000", "workers": workers}


def test_other_apps_on_the_host_take_their_share_of_the_memory(sizing):
    # 80 % of 2048 MB is 1638 MB; chat's 3 and blog's 2 workers take 750 MB of it: 888 MB are left.
    facts = {**resources(online=8, memory_mb=2048), "apps": [app("chat", 3), app("blog", 2), app("shop", 9)]}
    plan = sizing.worker_plan(facts, workload="mixed", app_name="shop")
    assert (plan["workers"], plan["memory_budget_mb"]) == (5, 888)
    assert plan["rule"] == ("mixed rule 2 x cores + 1 = 17, capped by memory: 888 MB (80 % of 2048 MB, less "
                            "750 MB for the 2 workers of blog, the 3 workers of chat) / 150 MB per worker = 5")


def test_the_app_alone_on_the_host_has_all_of_it(sizing):
    facts = {**resources(online=8, memory_mb=2048), "apps": [app("shop", 9)]}
    plan = sizing.worker_plan(facts, workload="mixed", app_name="shop")
    assert (plan["workers"], plan["memory_budget_mb"]) == (10, 1638)
    assert "less" not in plan["rule"]


def test_an_explicit_budget_is_the_apps_own(sizing):
    facts = {**resources(online=8, memory_mb=2048), "apps": [app("chat", 10)]}
    plan = sizing.worker_plan(facts, workload="mixed", memory_budget_mb=600, app_name="shop")
    assert (plan["workers"], plan["memory_budget_mb"]) == (4, 600)


def test_explicit_workers_that_do_not_fit_beside_the_other_apps(sizing):
    facts = {**resources(online=8, memory_mb=2048), "apps": [app("chat", 8), app("blog", None)]}
    plan = sizing.worker_plan(facts, workload="mixed", workers=4, app_name="shop")
    assert plan["problems"] == [
        "asgi_app_workers is 4: at about 150 MB each (asgi_app_worker_memory_mb) they need 600 MB, more than "
        "the 438 MB (80 % of 2048 MB, less 1200 MB for the 8 workers of chat) this host can give them, so "
        "the kernel would start killing workers. Set asgi_app_workers to at most 2, or leave it unset."]


def test_other_apps_taking_everything_leave_one_worker(sizing):
    facts = {**resources(online=2, memory_mb=1024), "apps": [app("chat", 20)]}
    plan = sizing.worker_plan(facts, workload="mixed", app_name="shop")
    assert (plan["workers"], plan["memory_budget_mb"]) == (1, 0)


@pytest.mark.parametrize(
    "memory_mb, limits, expected",
    [
        (1024, {}, (819, 737)),                                      # the budget, 90 % of it
        (1024, {"memory_budget_mb": 600}, (600, 540)),
        (1024, {"memory_max_mb": 2000}, (2000, 1800)),
        (1024, {"memory_max_mb": 2000, "memory_high_mb": 1500}, (2000, 1500)),
        (1024, {"memory_max_mb": 0}, (None, None)),                  # 0: no limit
        (1024, {"memory_high_mb": 0}, (819, None)),
    ],
)
def test_the_service_is_capped_at_its_memory_budget(sizing, memory_mb, limits, expected):
    plan = sizing.worker_plan(resources(online=8, memory_mb=memory_mb), **limits)
    assert (plan["memory_max_mb"], plan["memory_high_mb"]) == expected
    assert not plan["problems"]
    assert ("no MemoryMax" if expected[0] is None else f"MemoryMax {expected[0]} MB") in plan["memory_rule"]


@pytest.mark.parametrize(
    "limits, names",
    [
        ({"workers": 4, "memory_max_mb": 500}, ["asgi_app_memory_max_mb is 500", "at least 600"]),
        ({"memory_max_mb": 3000, "memory_high_mb": 3500}, ["asgi_app_memory_high_mb is 3500", "below the hard"]),
    ],
)
def test_memory_limits_that_starve_the_workers_are_refused(sizing, limits, names):
    problems = sizing.worker_plan(resources(online=8, memory_mb=4096), **limits)["problems"]
    assert len(problems) == 1 and all(name in problems[0] for name in names), problems


def test_the_memory_cap_does_not_change_with_the_hosts_other_apps(sizing):
    """A unit that changed whenever another app was deployed beside it would make re-runs change it."""
    alone = sizing.worker_plan(resources(online=2, memory_mb=4096), app_name="shop")
    beside = sizing.worker_plan({**resources(online=2, memory_mb=4096),
                                 "apps": [{"name": "blog", "workers": 5}, {"name": "shop", "workers": 5}]},
                                app_name="shop")
    assert beside["memory_budget_mb"] < alone["memory_budget_mb"]
    assert (beside["memory_max_mb"], beside["memory_high_mb"]) == (alone["memory_max_mb"], alone["memory_high_mb"])
    assert beside["memory_max_mb"] == int(4096 * 0.8)
    assert "80 % of the host's memory" in beside["memory_rule"]
