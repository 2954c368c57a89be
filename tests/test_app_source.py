"""One listing of an app's source directory (plugins/module_utils/asgi_app_source.py) feeds its
digest, its check and the archive the role transfers: what is deployed is what is digested, and
the default excludes leave out debris only, never a name an app imports or serves. Also the
filter asgi.gunicorn.asgi_app_source, and the command line the role runs."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.asgi.gunicorn.plugins.filter import (
    asgi_app_source as source_filter,
)
from ansible_collections.asgi.gunicorn.plugins.module_utils import (
    asgi_app_source as app_source,
)
from support import REPO, ROLE

SCRIPT = REPO / "plugins" / "module_utils" / "asgi_app_source.py"
FIXTURES = REPO / "tests" / "fixtures" / "app_source"
GEVENT = (FIXTURES / "gevent_app" / "main.py").read_text()

DEPLOYED = {
    "main.py": "from env import settings\n",
    "env/__init__.py": "",
    "env/settings.py": "DEBUG = False\n",
    "venv/README": "a package named venv\n",
    "dist/index.html": "<h1>built front end</h1>\n",
    "build/lib.py": "VERSION = 1\n",
    "site-packages/vendored.py": "",
    "myapp.egg-info/PKG-INFO": "Name: myapp\n",
    "static/app.js": "console.log(1)\n",
}
DEBRIS = {
    ".venv/lib/python3.11/site-packages/gevent_user.py": GEVENT,  # an error if it were checked
    ".git/HEAD": "ref: refs/heads/main\n",
    ".hg/store": "x", ".svn/entries": "x", ".bzr/branch": "x",
    "__pycache__/main.cpython-311.pyc": "\0",
    "env/__pycache__/settings.cpython-311.pyc": "\0",
    "stray.pyc": "\0", "old.pyo": "\0",
    "node_modules/left-pad/index.js": "module.exports = 1\n",
    "static/.DS_Store": "\0",
    ".tox/py311/log": "x", ".nox/x": "x", ".mypy_cache/x": "x", ".pytest_cache/x": "x",
    ".ruff_cache/x": "x", ".hypothesis/x": "x",
}


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def app(tmp_path):
    """A source directory: what an app deploys, an empty uploads/ directory, and debris."""
    root = tmp_path / "app"
    write(root, {**DEPLOYED, **DEBRIS})
    (root / "uploads").mkdir()
    return root


def listed(root, exclude=app_source.DEFAULT_EXCLUDE):
    return [entry.path for entry in app_source.source_files(str(root), exclude)]


def with_parents(files):
    """The files and the directories they are in, sorted as the listing is."""
    paths = set(files)
    for name in files:
        parts = name.split("/")[:-1]
        paths.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return sorted(paths)


def digest(root, exclude=app_source.DEFAULT_EXCLUDE):
    return app_source.inspect_source(str(root), exclude)["digest"]


def members(archive):
    with tarfile.open(archive) as tar:
        return tar.getmembers()


# --- What is deployed, digested and archived ---------------------------------------------------


def test_the_default_excludes_leave_out_debris_and_nothing_an_app_imports_or_serves(app):
    assert listed(app) == with_parents([*DEPLOYED, "uploads"])


def test_the_role_excludes_by_default_what_the_module_does():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert defaults["asgi_app_src_exclude"] == app_source.DEFAULT_EXCLUDE
    assert options["asgi_app_src_exclude"]["default"] == app_source.DEFAULT_EXCLUDE


def test_debris_changes_neither_the_digest_nor_the_findings(app):
    before = app_source.inspect_source(str(app))
    write(app, {name: text + "changed" for name, text in DEBRIS.items()})
    after = app_source.inspect_source(str(app))
    assert after == before
    assert after["findings"] == []  # the excluded .venv is not checked either


@pytest.mark.parametrize("name", sorted(DEPLOYED))
def test_a_change_in_any_deployed_file_alone_changes_the_digest(app, name):
    before = digest(app)
    (app / name).write_text(DEPLOYED[name] + "changed\n")
    assert digest(app) != before


def test_the_digest_covers_names_empty_directories_and_the_executable_bit(app):
    before = digest(app)
    (app / "uploads").rmdir()
    assert digest(app) != before
    (app / "uploads").mkdir()
    assert digest(app) == before
    (app / "main.py").chmod(0o755)
    assert digest(app) != before
    (app / "main.py").chmod(0o644)
    (app / "static" / "app.js").rename(app / "static" / "app2.js")
    assert digest(app) != before


def test_the_digest_counts_the_deployed_files_and_bytes(app):
    result = app_source.inspect_source(str(app))
    assert result["files"] == len(DEPLOYED)
    assert result["bytes"] == sum(len(text) for text in DEPLOYED.values())


def test_a_deployed_python_file_is_checked_wherever_it_is(app):
    write(app, {"build/patched.py": GEVENT})
    assert [(f["file"], f["call"]) for f in app_source.inspect_source(str(app))["findings"]] == [
        ("build/patched.py", "gevent.monkey.patch_all")]


def test_the_archive_holds_the_listing_exactly(app, tmp_path):
    (app / "bin").mkdir()
    (app / "bin" / "run").write_text("#!/bin/sh\n")
    (app / "bin" / "run").chmod(0o755)
    archive = tmp_path / "app.tar.gz"
    result = app_source.write_archive(str(app), str(archive))
    entries = app_source.source_files(str(app))
    assert result == {key: value for key, value in app_source.inspect_source(str(app)).items()
                      if key in ("digest", "files", "bytes")}
    found = members(archive)
    assert [member.name for member in found] == [entry.path for entry in entries]
    for member, entry in zip(found, entries, strict=True):
        assert member.isdir() == (entry.kind == "dir") and member.isfile() == (entry.kind == "file")
        assert oct(member.mode) == ("0o750" if member.isdir() or entry.executable else "0o640")
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
        assert member.mtime == app_source.ARCHIVE_MTIME
    with tarfile.open(archive) as tar:
        assert tar.extractfile("dist/index.html").read() == (app / "dist" / "index.html").read_bytes()
    assert oct(next(m for m in found if m.name == "bin/run").mode) == "0o750"


def test_the_same_source_gives_the_same_archive_bytes(app, tmp_path):
    """Elsewhere, later, under another name: the same bytes (gzip's header holds no time or name)."""
    write(app, {"static/café.txt": "", "deep/" + "d" * 90 + "/" + "f" * 90 + ".txt": ""})  # PAX headers
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(app, copy)
    os.utime(copy / "main.py", (1, 1))
    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tgz"
    app_source.write_archive(str(app), str(first))
    app_source.write_archive(str(copy), str(second))
    assert first.read_bytes() == second.read_bytes()
    with gzip.open(first) as compressed:
        compressed.read(1)
        assert compressed.mtime == 0


def test_an_archive_of_a_source_that_changed_since_its_check_is_refused(app, tmp_path):
    checked = digest(app)
    (app / "dist" / "index.html").write_text("<h1>rebuilt</h1>\n")
    archive = tmp_path / "app.tar.gz"
    with pytest.raises(app_source.SourceError, match=r"changed since it was checked .*: re-run the play"):
        app_source.write_archive(str(app), str(archive), expect_digest=checked)
    assert not archive.exists()
    result = app_source.write_archive(str(app), str(archive), expect_digest=digest(app))
    assert archive.exists() and result["digest"] == digest(app)


# --- Symbolic links --------------------------------------------------------------------------


def test_symbolic_links_are_followed(tmp_path):
    outside = tmp_path / "shared"
    write(outside, {"config.py": "X = 1\n", "assets/logo.svg": "<svg/>"})
    app = tmp_path / "app"
    write(app, {"main.py": ""})
    (app / "config.py").symlink_to(outside / "config.py")
    (app / "assets").symlink_to(outside / "assets")
    assert listed(app) == ["assets", "assets/logo.svg", "config.py", "main.py"]
    archive = tmp_path / "app.tar.gz"
    app_source.write_archive(str(app), str(archive))
    assert [m.name for m in members(archive) if m.isfile()] == ["assets/logo.svg", "config.py", "main.py"]
    assert all(m.isfile() or m.isdir() for m in members(archive))
    before = digest(app)
    (outside / "config.py").write_text("X = 2\n")
    assert digest(app) != before


def test_a_symbolic_link_loop_is_an_error_naming_it(tmp_path):
    app = tmp_path / "app"
    write(app, {"pkg/main.py": ""})
    (app / "pkg" / "again").symlink_to("..")
    with pytest.raises(app_source.SourceError, match=r"app/pkg/again leads back to a directory it is in"):
        app_source.source_files(str(app))
    assert listed(app, ["again"]) == ["pkg", "pkg/main.py"]


def test_the_same_directory_linked_twice_is_deployed_twice(tmp_path):
    app = tmp_path / "app"
    write(app, {"assets/logo.svg": "<svg/>"})
    (app / "static").symlink_to("assets")
    assert listed(app) == ["assets", "assets/logo.svg", "static", "static/logo.svg"]


@pytest.mark.parametrize("target", ["missing.py", "self"])
def test_a_symbolic_link_that_leads_nowhere_is_an_error_naming_it(tmp_path, target):
    app = tmp_path / "app"
    write(app, {"main.py": ""})
    (app / "self").symlink_to("self") if target == "self" else (app / "config.py").symlink_to(target)
    name = "self" if target == "self" else "config.py"
    with pytest.raises(app_source.SourceError, match=f"app/{name} is a symbolic link to {target}, which leads nowhere"):
        app_source.inspect_source(str(app))
    assert listed(app, [name]) == ["main.py"]


def test_a_file_neither_regular_nor_a_directory_is_an_error_naming_it(tmp_path):
    app = tmp_path / "app"
    write(app, {"main.py": ""})
    os.mkfifo(app / "pipe")
    with pytest.raises(app_source.SourceError, match="app/pipe is neither a regular file nor a directory"):
        app_source.source_files(str(app))


# --- Exclude patterns ------------------------------------------------------------------------

TREE = ["README.md", "cache", "docs/api/x.md", "docs/guide.md", "docs/logo.png",
        "pkg/build/out.py", "pkg/cache/x", "pkg/debug.log", "build/x.py", "static/tmp/a", "static/tmp2/b"]


@pytest.mark.parametrize("pattern, left_out", [
    # No "/": a name, at any depth.
    ("*.log", ["pkg/debug.log"]),
    ("build", ["build/x.py", "pkg/build/out.py"]),
    # A "/": the path from the top, anchored; "*" matches "/" too.
    ("static/tmp", ["static/tmp/a"]),
    ("docs/*.md", ["docs/api/x.md", "docs/guide.md"]),
    ("pkg/*.log", ["pkg/debug.log"]),
    ("tmp/a", []),
    # A leading "/": a name at the top only.
    ("/build", ["build/x.py"]),
    # A trailing "/": directories only, at any depth unless there is another "/".
    ("cache/", ["pkg/cache/x"]),
    ("pkg/cache/", ["pkg/cache/x"]),
    ("README.md/", []),
])
def test_exclude_patterns(tmp_path, pattern, left_out):
    write(tmp_path, dict.fromkeys(TREE, ""))
    files = [path for path in listed(tmp_path, [pattern]) if (tmp_path / path).is_file()]
    assert sorted(set(TREE) - set(files)) == sorted(left_out)


def test_an_excluded_directory_is_not_read(tmp_path):
    app = tmp_path / "app"
    write(app, {"main.py": ""})
    (app / "private").mkdir()
    (app / "private" / "broken").symlink_to("nowhere")  # an error, were it read
    assert listed(app, ["private"]) == ["main.py"]


def test_exclude_is_a_list_not_a_string(tmp_path):
    with pytest.raises(app_source.SourceError, match="a list, not the string 'node_modules'"):
        app_source.source_files(str(tmp_path), "node_modules")


# --- Speed -----------------------------------------------------------------------------------


def test_a_large_source_is_listed_digested_checked_and_archived_fast(tmp_path, record_property):
    """3,000 small Python files, and a 2,600-file .venv the default excludes leave out."""
    app = tmp_path / "app"
    module = "import asyncio\n\n\nasync def handler_{0}(request):\n    await asyncio.sleep(0)\n    return {0}\n"
    write(app, {f"pkg{n // 100}/sub{n // 10 % 10}/mod{n}.py": module.format(n) for n in range(3000)})
    write(app, {f".venv/lib/python3.11/site-packages/lib{n // 50}/m{n}.py": GEVENT for n in range(2600)})
    archive = tmp_path / "app.tar.gz"
    start = time.perf_counter()
    checked = app_source.inspect_source(str(app))
    middle = time.perf_counter()
    written = app_source.write_archive(str(app), str(archive), expect_digest=checked["digest"])
    end = time.perf_counter()
    timing = (f"check (list, digest, AST) {middle - start:.2f} s, archive (list, digest, tar.gz) "
              f"{end - middle:.2f} s, {archive.stat().st_size} bytes")
    record_property("timing", timing)
    assert (checked["files"], written["files"], checked["findings"]) == (3000, 3000, [])
    assert end - start < 10, timing


# --- The filter and the command line the role runs ---------------------------------------------


def cli(*args, check=True, script=SCRIPT):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          check=check)


@pytest.mark.parametrize("name", ["gevent_app", "blocking_app", "clean_app"])
def test_the_filter_gives_what_the_command_line_does(name):
    """Preflight reads the source in Ansible's process: same findings, same digest (releases keep
    their names), and the path of the script that writes the archive."""
    printed = json.loads(cli("check", "--json", FIXTURES / name, check=False).stdout)
    result = source_filter.asgi_app_source(str(FIXTURES / name))
    assert Path(result.pop("script")).resolve() == SCRIPT
    assert result == printed


def test_the_filter_the_check_and_the_archive_agree_with_the_role_s_excludes(app, tmp_path):
    exclude = [*app_source.DEFAULT_EXCLUDE, "static/", "*.egg-info"]
    checked = source_filter.asgi_app_source(str(app), exclude)
    options = ["--no-default-excludes", *(f"--exclude={pattern}" for pattern in exclude)]
    printed = json.loads(cli("check", "--json", app, *options).stdout)
    archive = tmp_path / "app.tar.gz"
    written = json.loads(cli("archive", app, archive, *options, "--expect-digest", checked["digest"],
                             script=checked["script"]).stdout)
    assert checked["digest"] == printed["digest"] == written["digest"] != digest(app)
    names = [member.name for member in members(archive)]
    assert "static/app.js" not in names and "myapp.egg-info" not in names and "dist/index.html" in names


def test_exclude_adds_to_the_default_list_unless_told_otherwise(app):
    added = json.loads(cli("check", "--json", app, "--exclude", "dist").stdout)
    assert added["files"] == len(DEPLOYED) - 1
    replaced = cli("check", "--json", app, "--no-default-excludes", "--exclude=dist", check=False)
    assert replaced.returncode == 1  # the .venv's gevent_user.py, checked now
    assert json.loads(replaced.stdout)["files"] == len(DEPLOYED) - 1 + len(DEBRIS)


def test_the_command_line_refuses_a_changed_source_and_writes_nothing(app, tmp_path):
    archive = tmp_path / "app.tar.gz"
    result = cli("archive", app, archive, "--expect-digest", "0" * 64, check=False)
    assert result.returncode == 2 and "changed since it was checked" in result.stderr
    assert not archive.exists()


def test_the_filter_fails_naming_the_source_and_why(tmp_path):
    package = tmp_path / "myapp-1.0.txt"
    package.write_text("not an archive")
    with pytest.raises(AnsibleFilterError, match=r"myapp-1\.0\.txt is not a directory, a wheel"):
        source_filter.asgi_app_source(str(package))
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").symlink_to("nowhere.py")
    with pytest.raises(AnsibleFilterError, match=f"source {app}: {app}/config.py is a symbolic link"):
        source_filter.asgi_app_source(str(app))


def test_ansible_finds_the_filter_in_the_collection(tmp_path):
    """asgi.gunicorn.asgi_app_source, as the role calls it: Ansible's own loader finds the module it imports."""
    expression = f"{{{{ {str(FIXTURES / 'clean_app')!r} | asgi.gunicorn.asgi_app_source }}}}"
    out = subprocess.run(
        ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.debug",
         "-a", json.dumps({"msg": expression})],
        capture_output=True, text=True, check=True, cwd=tmp_path,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
             "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}).stdout
    result = json.loads(out)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert result["digest"] == digest(FIXTURES / "clean_app")
    assert Path(result["script"]).resolve() == SCRIPT
