"""The one decision of how what a deploy (or a rollback) changed goes live, and the standby's size."""

import pytest
from ansible.errors import AnsibleFilterError

TWO_CPUS = {"online_cpus": 2, "affinity_cpus": 2, "cpu_quota": None}


@pytest.mark.parametrize("changed, running, standby, action, reload", [
    ([], False, 2, "start", False),  # a first deploy, or a service someone stopped
    (["release", "config", "environment", "unit", "socket"], False, 2, "start", True),
    ([], True, 2, "none", False),
    (["release"], True, 2, "handover", False),
    (["config"], True, 2, "handover", False),  # no HUP: it would stop the old workers first
    (["environment"], True, 2, "handover", False),
    (["unit"], True, 2, "handover", True),
    (["socket", "release"], True, 2, "rebind", True),  # a new address cannot overlap
    (["release"], True, 0, "restart", False),  # no memory for a standby
])
def test_what_changed_decides_how_it_goes_live(sizing, changed, running, standby, action, reload):
    decision = sizing.go_live(changed, running, standby)
    assert (decision["action"], decision["daemon_reload"]) == (action, reload)
    assert decision["why"].startswith("changed: ")
    assert sizing.GO_LIVE_ACTIONS[action] in decision["why"]


def test_an_unknown_change_is_an_error(sizing):
    with pytest.raises(AnsibleFilterError, match="unknown change"):
        sizing.go_live(["code"], True, 1)


@pytest.mark.parametrize("memory_mb, budget, workers, standby", [
    (8192, None, None, 5),  # 5 workers and 5 standby workers fit in 8 GiB at 150 MB each
    (1024, None, None, 1),  # 5 workers (819 MB budget) leave room for one more in 1 GiB
    (900, None, None, 2),  # the budget (720 MB) caps the workers at 4; 900 MB holds 2 more
    (768, None, 5, 0),  # 5 explicit workers fill the host: no standby
    (8192, 1500, None, 5),  # an explicit budget holds both: 10 x 150 MB
    (8192, 1000, None, 1),  # 5 x 150 MB fits in it, and one more
    (8192, 900, None, 1),
    (8192, 750, None, 0),
])
def test_the_standby_gets_what_memory_leaves(sizing, memory_mb, budget, workers, standby):
    plan = sizing.worker_plan({**TWO_CPUS, "memory_mb": memory_mb}, workers=workers, memory_budget_mb=budget)
    assert plan["standby_workers"] == standby, plan
    if standby:
        assert f"{standby} standby worker(s)" in plan["standby_rule"]
    else:
        assert "a plain restart" in plan["standby_rule"] and "asgi_app_memory_budget_mb" in plan["standby_rule"]


def test_other_apps_leave_less_room_for_the_standby(sizing):
    resources = {**TWO_CPUS, "memory_mb": 2048, "apps": [{"name": "chat", "workers": 9}]}
    plan = sizing.worker_plan(resources, app_name="shop")
    # The budget, 80 % of 2048 MB less chat's 9 x 150 MB, holds one worker; the 698 MB chat leaves
    # hold one standby worker beside it (never more standby workers than workers).
    assert (plan["workers"], plan["standby_workers"]) == (1, 1), plan
    assert "(2 x 150 MB fit in 698 MB)" in plan["standby_rule"]
