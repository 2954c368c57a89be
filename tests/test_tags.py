"""The role's contract holds for every tag and every entry point, read through ansible-playbook
itself: each documented tag selects its steps with preflight before them, the playbooks hand the
role only public inputs that the entry point's argument spec lists, a play without load balancers
says nothing about them, and the role copied out of its collection says at once what to do."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO, ROLE

TASKS = ROLE / "tasks"
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]

# Each documented tag and the task files (steps) whose tasks a run with it alone runs. preflight
# runs under every tag (it is tagged always, so asgi_app_preflight, which no step carries, runs it
# alone); release, configure and service need the app installed (installed), configure and service
# the release built (release_built), and what they change goes live in the same run (verify).
STEPS = {
    "asgi_app_preflight": {"preflight"},
    "asgi_app_remove": {"preflight", "remove"},
    "asgi_app_install": {"preflight", "install"},
    "asgi_app_release": {"preflight", "installed", "environment", "release", "prune"},
    "asgi_app_configure": {"preflight", "installed", "environment", "release_built", "configure", "verify"},
    "asgi_app_service": {"preflight", "installed", "release_built", "service", "switch", "verify"},
    "asgi_app_verify": {"preflight", "verify"},
    "asgi_app_proxy": {"preflight", "proxy"},
    "asgi_app_processes": {"preflight", "processes"},
    "asgi_app": {"preflight", "remove", "install", "installed", "environment", "release", "release_built",
                 "configure", "service", "switch", "verify", "proxy", "processes", "prune"},
}
ROLE_TASK = "asgi.gunicorn.asgi_app : "


def task_names(tasks):
    """Names of the tasks in a task list, those in blocks (and their rescue and always) included."""
    for task in tasks or []:
        if "block" in task:
            for part in ("block", "rescue", "always"):
                yield from task_names(task.get(part))
        elif "name" in task:
            yield task["name"]


def load(path):
    return yaml.safe_load(path.read_text())


def step_of_task():
    """{task name: step} for the role's tasks as --list-tasks shows them: the tasks of each file
    main.yml imports, and main.yml's dynamic includes under the file they include."""
    steps = {}
    for path in sorted(TASKS.glob("*.yml")):
        if path.stem == "main":
            continue
        for name in task_names(load(path)):
            assert name not in steps, f"task name {name!r} is in {steps.get(name)}.yml and {path.name}"
            steps[name] = path.stem
    for name, file in dynamic_includes(load(TASKS / "main.yml")):
        steps[name] = Path(file).stem
    return steps


def dynamic_includes(tasks):
    """(task name, file) of each include_tasks in a task list, those in blocks included."""
    for task in tasks or []:
        if "block" in task:
            yield from dynamic_includes(task["block"])
        include = task.get("ansible.builtin.include_tasks")
        if include:
            yield task["name"], include["file"] if isinstance(include, dict) else include


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """An inventory of app hosts only (no load balancers), the app set in group_vars as deploy.yml wants."""
    path = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"asgi_app_name": "tagged", "asgi_app_module": "main:app"}},
                                    "asgi_apps": {"hosts": {"app-1": {"ansible_connection": "local"}}}}))
    return path


def playbook(*args, env=None, cwd=REPO):
    """(exit status, output) of ansible-playbook, its errors and warnings where they were printed."""
    result = subprocess.run(["ansible-playbook", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120, cwd=cwd,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})})
    return result.returncode, result.stdout


def listed_role_tasks(output):
    """The role's task names in the first play of --list-tasks' output (the app hosts')."""
    first_play = output.split("  play #2")[0]
    names = [line.strip().split(ROLE_TASK, 1)[1].split("\tTAGS:")[0]
             for line in first_play.splitlines() if ROLE_TASK in line]
    return [name for name in names if not name.startswith("Validating arguments against arg spec")]


def test_the_tags_in_main_yml_are_those_documented():
    used = set()
    for task in load(TASKS / "main.yml"):
        used.update(task.get("tags", []))
        for inner in task.get("block", []):
            used.update(inner.get("tags", []))
    assert used == set(STEPS) - {"asgi_app_preflight"} | {"always"}


@pytest.mark.parametrize("tag", list(STEPS))
def test_a_tag_runs_its_steps_after_preflight(inventory, tag):
    rc, output = playbook("-i", inventory, REPO / "playbooks" / "deploy.yml", "--list-tasks", "--tags", tag)
    assert rc == 0, output
    listed = listed_role_tasks(output)
    preflight = list(task_names(load(TASKS / "preflight.yml")))
    assert listed[:len(preflight)] == preflight, output
    steps = step_of_task()
    unknown = [name for name in listed if name not in steps]
    assert not unknown, f"tasks listed that no task file names: {unknown}"
    assert {steps[name] for name in listed} == STEPS[tag], output


def test_no_warning_without_load_balancers_and_their_play_with_them(inventory, tmp_path):
    rc, output = playbook("-i", inventory, REPO / "playbooks" / "deploy.yml", "--list-hosts")
    assert rc == 0, output
    assert "WARNING" not in output, output
    assert "asgi_lbs" not in output, output
    # With the group, the second play runs on it; asgi_app_lb_group names another one.
    with_lbs = tmp_path / "hosts.yml"
    with_lbs.write_text(yaml.safe_dump({"asgi_apps": {"hosts": {"app-1": None}},
                                        "asgi_lbs": {"hosts": {"lb-1": None}},
                                        "edge": {"hosts": {"edge-1": None}}}))
    rc, output = playbook("-i", with_lbs, REPO / "playbooks" / "deploy.yml", "--list-hosts")
    assert rc == 0 and "WARNING" not in output, output
    assert output.split("play #2")[1].split()[0] == "(asgi_lbs):", output
    assert "lb-1" in output.split("play #2")[1] and "edge-1" not in output, output
    rc, output = playbook("-i", with_lbs, REPO / "playbooks" / "deploy.yml", "--list-hosts",
                          "-e", "asgi_app_lb_group=edge")
    assert rc == 0 and "edge-1" in output.split("play #2")[1] and "lb-1" not in output, output


def test_a_load_balancer_group_that_is_not_in_the_inventory_is_refused_first(inventory):
    rc, output = playbook("-i", inventory, REPO / "playbooks" / "deploy.yml", "-e", "asgi_app_lb_group=edge")
    assert rc != 0, output
    tasks = [line.rstrip("* ") for line in output.splitlines() if line.startswith("TASK [")]
    assert tasks == ["TASK [Check that asgi_app_lb_group names a group of the inventory]"], output
    assert "asgi_app_lb_group is 'edge', which is no group of the inventory" in output, output


def role_includes(play_file):
    """(entry point, vars passed) of each include_role/import_role of the collection's role in a playbook."""
    for play in load(play_file):
        for section in ("pre_tasks", "tasks", "post_tasks"):
            for task in play.get(section, []):
                for action in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                    if action in task:
                        assert task[action]["name"] == "asgi.gunicorn.asgi_app"
                        yield task[action].get("tasks_from", "main"), task.get("vars", {})


@pytest.mark.parametrize("play_file", sorted((REPO / "playbooks").glob("*.yml")), ids=lambda path: path.name)
def test_the_playbooks_pass_each_entry_point_public_inputs_its_argument_spec_lists(play_file):
    includes = list(role_includes(play_file))
    assert includes
    for entry_point, passed in includes:
        # A name with .yml would skip the argument spec: Ansible looks it up by tasks_from as given.
        assert entry_point in SPECS, f"{play_file.name}: tasks_from {entry_point!r} has no argument spec"
        options = SPECS[entry_point]["options"]
        for name in passed:
            assert not name.startswith("_"), f"{play_file.name} passes the role's private {name}"
            assert name in options, f"{play_file.name} passes {name}, which entry point {entry_point} does not list"


def test_each_entry_points_options_are_the_main_ones():
    main = SPECS["main"]["options"]
    for entry_point, spec in SPECS.items():
        assert spec.get("short_description") and spec.get("description"), entry_point
        for name, option in spec["options"].items():
            assert option == main.get(name), f"{entry_point}: {name} differs from the main entry point's"
        # The file it runs.
        assert (TASKS / f"{entry_point}.yml").is_file(), entry_point


def test_the_role_out_of_its_collection_says_to_install_the_collection(tmp_path):
    shutil.copytree(ROLE, tmp_path / "roles" / "asgi_app")
    (tmp_path / "collections").mkdir()
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    (tmp_path / "site.yml").write_text(yaml.safe_dump([{
        "name": "Deploy with the role from a plain roles path", "hosts": "all", "gather_facts": False,
        "roles": [{"role": "asgi_app", "vars": {"asgi_app_name": "plain", "asgi_app_module": "main:app"}}]}]))
    rc, output = playbook("-i", "localhost,", "-c", "local", "--check", "site.yml", cwd=tmp_path,
                          env={"ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
                               "ANSIBLE_ROLES_PATH": str(tmp_path / "roles"),
                               "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert rc != 0, output
    # The first failure is the role's own check, which names the fix; nothing failed or warned before.
    first_error = min(output.index(mark) for mark in ("ERROR", "fatal:") if mark in output)
    before, failure = output[:first_error], output[first_error:]
    last_task = [line for line in before.splitlines() if line.startswith("TASK [")][-1]
    assert last_task.startswith("TASK [asgi_app : Check that the role runs from its collection"), output
    assert "WARNING" not in before, output
    assert "ansible-galaxy collection install asgi.gunicorn" in failure, output
    assert "asgi.gunicorn.asgi_app" in failure, output
