"""What removing an app (asgi_app_state: absent) takes off the host, and what it leaves there.

The role removes what it put there and nothing else. Its directories go when they hold only
what the role writes into them; one that holds anything more (an operator's file, or a
directory of the system that the app's name happens to match, such as /etc/ssh for an app named
ssh) keeps that and loses only the role's files. The user and the group go when they look like
the ones the role creates (system accounts, the user's home the app's directory) and no other
app of the role on the host runs as them; a group also stays while it is some other user's
primary group. Each thing kept is reported, with the reason.
"""

import posixpath

from ansible.utils.display import Display

# useradd --system and groupadd --system take ids from this range (Debian's login.defs); the ids
# below it are the base system's own accounts (root, daemon, adm, www-data, ...).
SYSTEM_IDS = range(100, 1000)
# What the role writes into each of the app's directories; *.sock files are the socket unit's.
ROLE_ENTRIES = {"root": {"releases", "current"},
                "config": {"gunicorn_config.py", "environment", "environment.candidate"},
                "socket": {"gunicorn", "standby", "metrics"}}


def _ours(kind, entry):
    return entry in ROLE_ENTRIES[kind] or (kind == "socket" and entry.endswith(".sock"))


def _paths(listed, directories, kept):
    paths = []
    for kind, directory in directories:
        entries = listed.get(directory)
        if entries is None:
            continue
        foreign = [entry for entry in entries if not _ours(kind, entry)]
        if not foreign:
            paths.append(directory)
            continue
        paths += [posixpath.join(directory, entry) for entry in entries if _ours(kind, entry)]
        kept.append(f"{directory}, which also holds {', '.join(foreign)}: asgi_app did not put "
                    "that there, so only its own files in it were removed")
    return paths


def _remove_user(entry, user, root, others, kept):
    if not entry:
        return False
    runs_as = [other["name"] for other in others if other.get("user") == user]
    if runs_as:
        kept.append(f"user {user}: {', '.join(runs_as)} on this host run(s) as it")
        return False
    if entry["uid"] not in SYSTEM_IDS or posixpath.normpath(entry["home"]) != posixpath.normpath(root):
        kept.append(f"user {user} (uid {entry['uid']}, home {entry['home']}): asgi_app creates its user "
                    f"as a system user whose home is {root}, so it did not create this one")
        return False
    return True


def _remove_group(entry, group, user, user_removed, others, kept):
    if not entry:
        return False
    runs_as = [other["name"] for other in others if other.get("group") == group]
    members = [name for name in entry["primary_of"] if not (user_removed and name == user)]
    if runs_as:
        kept.append(f"group {group}: {', '.join(runs_as)} on this host run(s) as it")
    elif members:
        kept.append(f"group {group}: it is the primary group of {', '.join(members)}")
    elif entry["gid"] not in SYSTEM_IDS:
        kept.append(f"group {group} (gid {entry['gid']}): asgi_app creates its group as a system "
                    "group, so it did not create this one")
    else:
        return True
    return False


def removal_plan(resources, name, root, config_dir, socket_dir, user, group):
    """The paths to remove, whether to remove the user and the group, and what is kept and why.

    ``resources`` is what host_resources.py printed with --app-root, --app-dir, --user and
    --group: the entries of the app's directories, its accounts, and the role's apps on the host.
    """
    app = resources["app"]
    others = [other for other in resources.get("apps") or [] if other.get("name") != name]
    kept = []
    paths = _paths(app["entries"], (("root", root), ("config", config_dir), ("socket", socket_dir)), kept)
    user_entry, group_entry = app.get("user"), app.get("group")
    remove_user = _remove_user(user_entry, user, root, others, kept)
    remove_group = _remove_group(group_entry, group, user, remove_user, others, kept)
    # userdel takes the user's group with it when the group has the user's name and is its
    # primary group (USERGROUPS_ENAB, Debian's default): a group that stays keeps its user too.
    if remove_user and not remove_group and group_entry and user == group \
            and user_entry["gid"] == group_entry["gid"]:
        remove_user = False
        kept.append(f"user {user}: userdel would remove the group {group} with it, which stays")
    for reason in kept:
        Display().warning(f"Removing {name} kept {reason}.")
    return {"paths": paths, "user": remove_user, "group": remove_group, "kept": kept}


class FilterModule:
    """asgi_app removal."""

    def filters(self):
        return {"asgi_app_removal_plan": removal_plan}
