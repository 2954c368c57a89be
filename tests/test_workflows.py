"""The GitHub Actions workflows, checked without GitHub: schema, security audit, and agreement
with the repository (scenarios, supported Debian releases, make targets, galaxy.yml)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO, ROLE, debian_releases_under_test

WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
# The names meta/main.yml uses for Debian releases, and the numbers the Makefile's targets use.
DEBIAN_RELEASES = {codename: int(number) for number, codename in debian_releases_under_test().items()}


def tool(name):
    """A command-line tool from this interpreter's virtualenv, else from PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    assert path, f"{name} is not installed (requirements.txt lists it)"
    return path


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def load(name):
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow):
    # YAML 1.1, which PyYAML reads, takes the bare key `on` for the boolean true.
    return workflow.get("on", workflow.get(True))


def steps(workflow):
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_there_are_workflows():
    assert {path.name for path in WORKFLOW_FILES} >= {"ci.yml", "release.yml"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_workflow_matches_the_github_workflow_schema(path):
    # check-jsonschema ships a copy of SchemaStore's github-workflow schema: no network needed.
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    # The auditor persona reports everything zizmor knows, pedantic and low-confidence findings
    # included: these are few, short files and one of them holds the Galaxy secret. A finding
    # judged harmless gets an inline `# zizmor: ignore[audit]` with its reason, where review
    # sees it. --offline leaves out the audits that ask GitHub (impostor commits, known
    # vulnerable action versions), so a pinned commit is not proven to belong to its repository.
    result = run([tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", "--color=never",
                  str(WORKFLOWS)], env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout, result.stdout + result.stderr


def test_ci_runs_on_push_pull_request_and_a_schedule():
    on = triggers(load("ci.yml"))
    assert {"push", "pull_request", "schedule"} <= set(on)
    assert on["push"]["branches"] == ["main"]
    assert on["schedule"] and all(entry.get("cron") for entry in on["schedule"])


def test_molecule_matrix_has_every_scenario():
    matrix = load("ci.yml")["jobs"]["molecule"]["strategy"]["matrix"]
    scenarios = sorted(path.parent.name for path in (REPO / "molecule").glob("*/molecule.yml"))
    assert sorted(matrix["scenario"]) == scenarios


def test_molecule_matrix_has_every_supported_debian_release():
    matrix = load("ci.yml")["jobs"]["molecule"]["strategy"]["matrix"]
    platforms = yaml.safe_load((ROLE / "meta" / "main.yml").read_text())["galaxy_info"]["platforms"]
    codenames = [version for platform in platforms if platform["name"] == "Debian"
                 for version in platform["versions"]]
    unknown = set(codenames) - set(DEBIAN_RELEASES)
    assert not unknown, f"meta/main.yml names Debian releases this test cannot number: {unknown}"
    assert sorted(matrix["debian"]) == sorted(DEBIAN_RELEASES[name] for name in codenames)


def test_molecule_jobs_do_not_stop_each_other():
    molecule = load("ci.yml")["jobs"]["molecule"]
    assert molecule["needs"] == "lint"
    assert molecule["strategy"]["fail-fast"] is False
    assert molecule["timeout-minutes"]


def test_workflows_call_only_make_targets_the_makefile_has():
    ci = load("ci.yml")
    matrix = ci["jobs"]["molecule"]["strategy"]["matrix"]
    targets = set()
    for step in steps(ci):
        for target in re.findall(r"\bmake\s+\"?([\w$.-]+)", step.get("run", "")):
            # The molecule step names its target from the matrix through $DEBIAN.
            targets |= {target.replace("$DEBIAN", str(debian)) for debian in matrix["debian"]}
    assert targets >= {"lint", "unit", "sanity", "molecule-debian12"}
    for target in sorted(targets):
        # --dry-run prints what the target would do and fails only when there is no such rule.
        result = run(["make", "--dry-run", target, "SCENARIO=default"], cwd=REPO)
        assert result.returncode == 0, f"make {target}: {result.stderr}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_scripts_take_expressions_only_through_the_environment(path):
    # An expression inside `run:` is pasted into the script before the shell reads it; through
    # `env:` it stays a value, whatever it contains.
    workflow = yaml.safe_load(path.read_text())
    for step in steps(workflow):
        assert "${{" not in step.get("run", ""), step


def release_tag_check():
    release = load("release.yml")
    assert set(triggers(release)) == {"push"}
    assert triggers(release)["push"]["tags"] == ["v*"]
    checks = [step["run"] for step in steps(release) if "galaxy.yml" in step.get("run", "")]
    assert len(checks) == 1, "one release step reads galaxy.yml's version"
    return checks[0]


def run_tag_check(script, tag, cwd, tmp_path):
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = {**os.environ, "GITHUB_REF_NAME": tag, "GITHUB_ENV": str(github_env),
           # `python` with PyYAML, as on the runner after ansible-core is installed.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env)
    return result, github_env.read_text()


def test_release_tag_check_accepts_the_version_in_galaxy_yml(tmp_path):
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    result, github_env = run_tag_check(release_tag_check(), f"v{version}", REPO, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"VERSION={version}\n" in github_env


def test_release_tag_check_reads_galaxy_yml(tmp_path):
    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "galaxy.yml").write_text("namespace: asgi\nname: gunicorn\nversion: 9.8.7\n")
    script = release_tag_check()
    result, github_env = run_tag_check(script, "v9.8.7", collection, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert github_env == "VERSION=9.8.7\n"
    for tag in ("v9.8.8", "9.8.7", "v9.8.7-rc1"):
        result, github_env = run_tag_check(script, tag, collection, tmp_path)
        assert result.returncode == 1, tag
        assert "::error::" in result.stdout and "9.8.7" in result.stdout, result.stdout
        assert github_env == ""


def test_release_publishes_with_the_secret_from_the_environment():
    release = load("release.yml")
    publish = [step for step in steps(release) if "collection publish" in step.get("run", "")]
    assert len(publish) == 1
    assert "secrets.GALAXY_API_KEY" in str(publish[0].get("env", {}))
