"""What the guardrails scenario's tests share: the app's name, and its deploy.yml run again with
extra vars (each test module imports these; pytest puts this directory on the path)."""

import json
import os
import subprocess
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent.parent
NAME = "guard"


def deploy(extra_vars, inventory=None):
    """Run the scenario's deploy.yml with extra vars; returns (rc, combined output)."""
    command = ["ansible-playbook", "-i", inventory or os.environ["MOLECULE_INVENTORY_FILE"],
               str(SCENARIO / "deploy.yml"), "-e", json.dumps(extra_vars)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    return result.returncode, result.stdout + result.stderr
