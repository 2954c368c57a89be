"""The collection as Galaxy would ship it: what the tarball holds, and the example app deployed by a
project outside the repository through the collection installed from that tarball.

converge.yml records what it did in MOLECULE_EPHEMERAL_DIRECTORY/collection: record.json (paths,
build and install output, what Ansible saw, the nested deploy's rc and recap), ansible-doc.txt
and deploy.log (the nested ansible-playbook -vv run), and galaxy-importer.log, galaxy-importer.json
and importer_result.json (what Galaxy's importer said of the tarball).
"""

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

# The app the installed collection deployed: judged as the default scenario's deploy is.
from served import (  # noqa: F401 (collected by pytest as this module's tests)
    test_health_answers_200,
    test_running_workers_are_uvicorn_workers,
    test_sse_events_arrive_separately,
    test_websocket_handshake_and_echo,
)

RECORD_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "collection"
# What a user runs and reads. Everything else in the repository develops and tests the collection.
TOP_LEVEL = {"CHANGELOG.md", "FILES.json", "LICENSE", "MANIFEST.json", "README.md", "changelogs", "docs",
             "meta", "playbooks", "plugins", "roles"}
NOT_SHIPPED = ["tests", "molecule", "tools", "inventories", "examples", "reference", "CONTRIBUTING.md",
               "changelogs/fragments", "changelogs/.plugin-cache.yaml", ".venv", ".ansible", ".cache",
               ".github", ".ci", ".config", "Makefile", "requirements.txt", "requirements.yml", "pytest.ini",
               "ansible.cfg", ".ansible-lint", ".yamllint", "ruff.toml", ".gitignore", ".pytest_cache"]


@pytest.fixture(scope="module")
def record():
    path = RECORD_DIR / "record.json"
    assert path.is_file(), f"{path} is missing: converge.yml did not get as far as recording"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def repo(record):
    return Path(record["repo"])


@pytest.fixture(scope="module")
def installed(record):
    """Where ansible-galaxy installed the collection: inside the fresh collections path."""
    return f"{record['collections_path']}/ansible_collections/asgi/gunicorn"


@pytest.fixture(scope="module")
def tarball(record):
    path = Path(record["tarball"])
    with tarfile.open(path) as archive:
        members = {member.name.rstrip("/"): member for member in archive.getmembers()}
        files = {name: archive.extractfile(member).read()
                 for name, member in members.items() if member.isfile()}
    print(f"\n{path.name}: {path.stat().st_size} bytes, {len(files)} files, "
          f"{len(members) - len(files)} directories")
    return {"path": path, "names": set(members), "files": files}


def repo_files(repo, pattern):
    return {path.relative_to(repo).as_posix() for path in repo.glob(pattern)
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


# The tarball


def test_tarball_holds_the_role_the_filters_and_the_collection_metadata(tarball, repo):
    names = tarball["names"]
    print(f"top level: {sorted({PurePosixPath(name).parts[0] for name in names})}")
    assert {PurePosixPath(name).parts[0] for name in names} == TOP_LEVEL
    role = repo_files(repo, "roles/asgi_app/**/*")
    assert "roles/asgi_app/meta/argument_specs.yml" in role
    assert role <= names, sorted(role - names)
    filters = repo_files(repo, "plugins/filter/*.py")
    assert filters and filters <= names, sorted(filters - names)
    # Each filter's documentation, which ansible-doc and Galaxy read beside it.
    filter_docs = repo_files(repo, "plugins/filter/*.yml")
    assert filter_docs and filter_docs <= names, sorted(filter_docs - names)
    for name in ["meta/runtime.yml", "README.md", "LICENSE", "MANIFEST.json", "FILES.json",
                 "playbooks/deploy.yml", "playbooks/rollback.yml"]:
        assert name in names


def test_tarball_carries_what_galaxy_shows(tarball, repo):
    """The role's README (Galaxy's importer requires one), docs/ (Galaxy shows it beside the
    README) and the changelog, rendered and as data."""
    names = tarball["names"]
    docs = repo_files(repo, "docs/**/*")
    print(f"docs: {sorted(docs)}")
    assert "docs/benchmarks.md" in docs
    assert docs <= names, sorted(docs - names)
    for name in ["roles/asgi_app/README.md", "CHANGELOG.md", "changelogs/changelog.yaml", "changelogs/config.yaml"]:
        assert name in names, name


def test_tarball_leaves_out_what_develops_and_tests_the_collection(tarball):
    names = tarball["names"]
    for excluded in NOT_SHIPPED:
        assert not any(name == excluded or name.startswith(excluded + "/") for name in names), excluded
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".tar.gz"))]
    # The role's own templates ship; only the top-level reference files stay behind.
    assert "roles/asgi_app/templates/gunicorn_config.py.j2" in names


def test_manifest_describes_the_collection_as_galaxy_yml_does(tarball, repo):
    galaxy = yaml.safe_load((repo / "galaxy.yml").read_text())
    info = json.loads(tarball["files"]["MANIFEST.json"])["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("asgi", "gunicorn", galaxy["version"])
    assert tarball["path"].name == f"asgi-gunicorn-{galaxy['version']}.tar.gz"
    assert info["dependencies"] == {}
    assert info["license"] == ["Apache-2.0"]
    assert info["readme"] == "README.md"
    assert info["description"] and info["authors"]
    # Galaxy links the collection's repository, documentation, home page and issues from its page.
    for key in ("repository", "documentation", "homepage", "issues"):
        assert info[key] == galaxy[key] and info[key].startswith("https://github.com/asgi-gunicorn/asgi.gunicorn"), key
    # Galaxy accepts at most 20 tags, each lowercase letters, digits and underscores.
    assert 0 < len(info["tags"]) <= 20
    assert all(re.fullmatch(r"[a-z0-9_]+", tag) for tag in info["tags"]), info["tags"]


def test_files_json_lists_every_file_with_its_checksum(tarball):
    entries = json.loads(tarball["files"]["FILES.json"])["files"]
    listed = {entry["name"]: entry for entry in entries if entry["ftype"] == "file"}
    assert set(listed) == set(tarball["files"]) - {"MANIFEST.json", "FILES.json"}
    for name, entry in listed.items():
        assert hashlib.sha256(tarball["files"][name]).hexdigest() == entry["chksum_sha256"], name


# Installed from the tarball and used from outside the repository


def test_collection_was_installed_into_an_empty_path_outside_the_repository(record, repo, installed):
    print(f"\n{record['install']}")
    assert "Installing 'asgi.gunicorn:" in record["install"]
    assert f"to '{installed}'" in record["install"]
    for path in (record["workspace"], record["project_dir"], record["collections_path"]):
        assert not Path(path).is_relative_to(repo), path


def test_ansible_saw_no_config_file_and_only_the_installed_collection(record, repo):
    version = record["ansible_version"]
    print(f"\n{version}")
    assert re.search(r"^\s*config file = None$", version, re.M), version
    assert re.search(rf"^\s*ansible collection location = {re.escape(record['collections_path'])}$",
                     version, re.M), version
    # The only asgi.gunicorn Ansible finds is the installed one, not the repository's link
    # (.ansible/collections) nor a copy in the user's default collections path.
    found = json.loads(record["collection_list"])
    assert list(found) == [f"{record['collections_path']}/ansible_collections"]
    assert found[f"{record['collections_path']}/ansible_collections"] == {
        "asgi.gunicorn": {"version": yaml.safe_load((repo / "galaxy.yml").read_text())["version"]}}


def test_the_deploy_ran_the_installed_role(record, repo, installed):
    recap = record["deploy_recap"]
    print(f"\nnested deploy, rc {record['deploy_rc']}: PLAY RECAP{recap.rstrip()}")
    assert record["deploy_rc"] == 0
    hosts = re.findall(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)",
                       recap, re.M)
    assert hosts
    for _, ok, unreachable, failed in hosts:
        assert int(ok) > 0 and (unreachable, failed) == ("0", "0"), recap
    # ansible-playbook -vv names the file of each task it runs.
    log = (RECORD_DIR / "deploy.log").read_text()
    task_paths = re.findall(r"^task path: (\S+):\d+$", log, re.M)
    role_tasks = [path for path in task_paths if "/roles/asgi_app/" in path]
    print(f"{len(role_tasks)} tasks and handlers of the role read from {installed}")
    assert any(path.startswith(f"{installed}/roles/asgi_app/tasks/") for path in role_tasks)
    assert all(path.startswith(f"{installed}/roles/asgi_app/") for path in role_tasks), role_tasks
    assert str(repo) not in "\n".join(task_paths)
    assert "No config file found; using defaults" in log


def test_ansible_doc_shows_the_role_from_the_installed_collection(repo, installed):
    doc = (RECORD_DIR / "ansible-doc.txt").read_text()
    assert doc.splitlines()[0] == f"> ROLE: *asgi.gunicorn.asgi_app* ({installed})"
    specs = yaml.safe_load((repo / "roles/asgi_app/meta/argument_specs.yml").read_text())["argument_specs"]
    main = specs["main"]
    assert f"ENTRY POINT: *main* - {main['short_description']}" in doc
    # Every option, marked "=" when required (asgi_app_name, asgi_app_module) and "-" otherwise.
    required = {name for name, spec in main["options"].items() if spec.get("required")}
    assert {"asgi_app_name", "asgi_app_module"} <= required
    for option in main["options"]:
        assert re.search(rf"^{'=' if option in required else '-'} {option}\s", doc, re.M), option


# Galaxy's importer


def test_galaxy_importer_imported_the_tarball_without_an_error():
    """galaxy-importer, as Galaxy runs it on an upload (molecule/galaxy/galaxy-importer.cfg): the
    metadata, the READMEs, ansible-doc of every plugin, ansible-lint, flake8, the changelog."""
    result = json.loads((RECORD_DIR / "galaxy-importer.json").read_text())
    lines = (RECORD_DIR / "galaxy-importer.log").read_text().splitlines()
    print(f"\ngalaxy-importer {result['version']}, rc {result['rc']}, last lines:\n" + "\n".join(lines[-25:]))
    errors = [line for line in lines if line.startswith("ERROR")]
    assert not errors, "\n".join(errors)
    assert not [line for line in lines if "Missing documentation" in line]
    assert result["rc"] == 0
    assert "Importer processing completed successfully" in lines
    # ansible-lint's findings are logged as warnings between these two lines: none, as in `make lint`.
    start = next(number for number, line in enumerate(lines) if line.startswith("Linting collection via ansible-lint"))
    assert lines[start + 1] == "...ansible-lint run complete", "\n".join(lines[start:start + 30])
    imported = json.loads((RECORD_DIR / "importer_result.json").read_text())
    contents = {(item["content_type"], item["name"]) for item in imported["contents"]}
    print(f"imported: {sorted(contents)}")
    assert ("role", "asgi_app") in contents
