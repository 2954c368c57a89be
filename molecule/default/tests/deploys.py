"""playbooks/deploy.yml run as an operator runs it, on the host converge deployed, with converge's
variables and any others."""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
ROLE_TASK = "TASK [asgi.gunicorn.asgi_app : "


def converge_vars():
    """The variables converge.yml deployed with, its source directory as a path."""
    task = yaml.safe_load((SCENARIO / "converge.yml").read_text())[0]["tasks"][0]
    return {name: value.replace("{{ playbook_dir }}", str(SCENARIO)) if isinstance(value, str) else value
            for name, value in task["vars"].items()}


def deploy(*args, **extra_vars):
    """playbooks/deploy.yml on the scenario's host with converge's variables: (exit status, output, changed)."""
    # Molecule reaches the container as root, with no sudo to become through.
    variables = {**converge_vars(), "ansible_become": False, **extra_vars}
    # From a file of the operator's only, as secrets are passed: not on the command line.
    with tempfile.NamedTemporaryFile("w", suffix=".json") as extra:
        json.dump(variables, extra)
        extra.flush()
        result = subprocess.run(
            ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "playbooks" / "deploy.yml"),
             "-e", f"@{extra.name}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    recap = re.search(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout, re.M)
    changed = int(recap.group(1)) if recap else None
    return result.returncode, result.stdout, changed
