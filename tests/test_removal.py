"""What a removal (asgi_app_state: absent) takes off the host, and what it leaves there and why."""

import pytest

from support import REPO, load_module

ROOT, CONFIG, SOCKETS = "/opt/shop", "/etc/shop", "/run/shop"
# The app as a deploy leaves it, running, as host_resources.py reads it; and another of the role's apps.
DEPLOYED = {
    "entries": {ROOT: ["current", "releases"], CONFIG: ["environment", "gunicorn_config.py"],
                SOCKETS: ["gunicorn", "gunicorn.sock"]},
    "user": {"name": "shop", "uid": 998, "gid": 998, "home": ROOT},
    "group": {"name": "shop", "gid": 998, "primary_of": ["shop"]},
}
CHAT = {"name": "chat", "user": "chat", "group": "chat", "listen": "0.0.0.0:8001", "workers": 3}


@pytest.fixture(scope="module")
def removal():
    return load_module("asgi_app_removal", REPO / "plugins" / "filter" / "asgi_app_removal.py")


def plan(removal, app=None, apps=(), user="shop", group="shop"):
    """The plan for app shop as DEPLOYED with the keys of `app` changed, beside `apps`."""
    resources = {"apps": [*apps], "app": {**DEPLOYED, **(app or {})}}
    return removal.removal_plan(resources, "shop", ROOT, CONFIG, SOCKETS, user, group)


def test_a_deployed_app_is_removed_whole(removal):
    assert plan(removal, apps=[CHAT, {**CHAT, "name": "shop", "user": "shop", "group": "shop"}]) == {
        "paths": [ROOT, CONFIG, SOCKETS], "user": True, "group": True, "kept": []}


def test_nothing_is_left_to_remove_the_second_time(removal):
    gone = {"entries": {ROOT: None, CONFIG: None, SOCKETS: None}, "user": None, "group": None}
    assert plan(removal, gone) == {
        "paths": [], "user": False, "group": False, "kept": []}


def test_a_directory_with_other_files_keeps_them(removal):
    # An app named after a directory of the system: its config dir is the system's too.
    result = plan(removal, {"entries": {**DEPLOYED["entries"],
                                        CONFIG: ["environment", "gunicorn_config.py", "sshd_config"]}})
    assert result["paths"] == [ROOT, f"{CONFIG}/environment", f"{CONFIG}/gunicorn_config.py", SOCKETS]
    assert result["kept"] == [f"{CONFIG}, which also holds sshd_config: asgi_app did not put that there, so "
                              "only its own files in it were removed"]


def test_a_user_another_app_runs_as_stays_with_its_group(removal):
    result = plan(removal, apps=[{**CHAT, "user": "shop", "group": "shop"}])
    assert (result["user"], result["group"]) == (False, False)
    assert result["kept"] == ["user shop: chat on this host run(s) as it",
                              "group shop: chat on this host run(s) as it"]


@pytest.mark.parametrize("user, reason", [
    ({"name": "www-data", "uid": 33, "gid": 33, "home": "/var/www"}, "(uid 33, home /var/www)"),
    ({"name": "www-data", "uid": 998, "gid": 33, "home": "/var/www"}, "home is /opt/shop"),
    ({"name": "www-data", "uid": 1001, "gid": 33, "home": ROOT}, "system user"),
])
def test_a_user_the_role_did_not_create_stays(removal, user, reason):
    group = {"name": "www-data", "gid": 33, "primary_of": ["www-data"]}
    result = plan(removal, {"user": user, "group": group}, user="www-data", group="www-data")
    assert (result["user"], result["group"]) == (False, False)
    assert reason in result["kept"][0]
    assert result["kept"][1] == "group www-data: it is the primary group of www-data"


def test_a_group_below_the_system_range_stays(removal):
    result = plan(removal, {"group": {"name": "adm", "gid": 4, "primary_of": []}}, group="adm")
    assert (result["user"], result["group"]) == (True, False)
    assert result["kept"] == ["group adm (gid 4): asgi_app creates its group as a system group, so it did "
                              "not create this one"]


def test_a_group_that_stays_keeps_the_user_userdel_would_take_it_with(removal):
    # chat runs as user chat in group shop: removing user shop would make userdel remove group shop.
    result = plan(removal, apps=[{**CHAT, "group": "shop"}])
    assert (result["user"], result["group"]) == (False, False)
    assert result["kept"] == ["group shop: chat on this host run(s) as it",
                              "user shop: userdel would remove the group shop with it, which stays"]


def test_a_group_of_another_name_does_not_keep_the_user(removal):
    result = plan(removal, {"group": {"name": "staff", "gid": 998, "primary_of": ["shop"]}},
                  apps=[{**CHAT, "group": "staff"}], group="staff")
    assert (result["user"], result["group"]) == (True, False)
