"""An app's source on the controller, read from one listing: what is deployed, its digest, its
check and the archive that carries it to the host.

The asgi_app role deploys either a directory (asgi_app_src) or a package (asgi_app_package: a
wheel, a zip or an sdist). A directory is listed once, by source_files(), and everything else
reads that listing and nothing else: the digest the release is named after, the static check of
its ``.py`` files, and the gzip-compressed tar that the role unpacks on the host. A file is
therefore deployed exactly when it is digested, so any change to a deployed file makes a new
release, and a file that is left out is neither checked nor deployed. write_archive() lists the
directory again when the role transfers it and digests the files as it writes them; given the
digest the release was named after, it refuses an archive of a source that has changed since.
A package is deployed as it is: its digest is that of its bytes.

Excluding files: each pattern is a shell-style pattern (fnmatch: ``*``, ``?``, ``[...]``,
case-sensitive). A pattern without ``/`` is matched against the name of every file and directory
at any depth: ``node_modules`` leaves out every file or directory so named, ``*.pyc`` every
compiled file. A pattern containing ``/`` is matched against the whole path from the top of the
source (``/`` separators, no leading ``./``), anchored at both ends: ``static/tmp`` is that one
path, and ``docs/*.md`` the Markdown files anywhere under docs/ (``*`` matches ``/`` too); a
leading ``/`` anchors a single name at the top (``/build`` but not ``app/build``). A trailing
``/`` restricts a pattern to directories and does not anchor it by itself: ``cache/`` leaves out
every directory named cache, but not a file so named. An excluded directory is not read at all:
nothing under it is listed, digested, checked or deployed. Symbolic links are followed (a link to
a file is deployed as that file, a link to a directory as that directory's contents) and are
matched by their own name and path, as what they point to. The default list, DEFAULT_EXCLUDE,
holds only version-control, virtualenv, bytecode, tool-cache and editor debris, never a name an
app may import or serve (``env``, ``venv``, ``dist``, ``build``, ``*.egg-info`` are deployed).

The check finds the mistakes that break an ASGI app under asyncio workers. Errors: gevent or
eventlet monkey-patching, which replaces the socket and threading primitives that asyncio and
Uvicorn rely on. Warnings: well-known blocking calls made directly inside an ``async def``, which
stop every other request of the worker while they wait; each comes with file, line and the
asyncio alternative.

Standard library only. The collection's filter asgi_app_source imports this module in Ansible's
process, the role runs this same file on the controller to write the archive, and it works on
its own (see --help):

    python asgi_app_source.py check path/to/app [--json] [--strict]
    python asgi_app_source.py archive path/to/app app.tar.gz [--expect-digest HEX]
"""

import argparse
import ast
import contextlib
import fnmatch
import gzip
import hashlib
import json
import os
import re
import stat
import sys
import tarfile
import zipfile
from typing import NamedTuple

# This file, as the role runs it: python SCRIPT archive ...
SCRIPT = os.path.abspath(__file__)

# The role's asgi_app_src_exclude defaults to the same list (tests/test_app_source.py checks it).
DEFAULT_EXCLUDE = [
    ".git", ".hg", ".svn", ".bzr",
    ".venv", "__pycache__", "*.pyc", "*.pyo",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis",
    "node_modules", ".DS_Store",
]

# Every member of the archive has this modification time, so that the same source gives the same
# bytes. 1980-01-02 UTC: a zip, such as a wheel built from the release, cannot hold an earlier
# time, in any time zone.
ARCHIVE_MTIME = 315619200
# gzip's level: the knee of time against size, measured on 3,000 real Python files (7.4 MB, and
# 42 MB): 4 writes archives 14 % smaller than level 1 in 15-30 % more time; 6, gzip's default,
# makes them 5 % smaller again, in 1.5 to 2.3 times the time of level 1.
COMPRESSLEVEL = 4

DIRECTORY, FILE = "dir", "file"


class SourceError(Exception):
    """A source that cannot be deployed as it stands; the message names the file and why."""


# --- The listing ---------------------------------------------------------------------------------


class Entry(NamedTuple):
    """One thing to deploy: a directory, or a regular file with its content."""

    path: str          # relative to the top of the source, "/" separators: its name on the host
    kind: str          # DIRECTORY or FILE, of what the path leads to once links are followed
    executable: bool   # a file its owner may execute (always False for a directory)
    source: str        # absolute path to read on the controller


def source_files(root, exclude=None):
    """The entries to deploy from the directory root, sorted by path (a directory before its
    contents); empty directories are entries too. exclude is the list of patterns, DEFAULT_EXCLUDE
    when None. Raises SourceError for a symbolic link that leads nowhere or into a loop, and for a
    file that is neither regular nor a directory."""
    exclude = DEFAULT_EXCLUDE if exclude is None else exclude
    top = os.path.abspath(root)
    if not os.path.isdir(top):
        raise SourceError(f"{root} is not a directory")
    entries = []
    _list_directory(top, "", exclusion(exclude), entries, frozenset([_identity(os.stat(top))]))
    return sorted(entries, key=lambda entry: entry.path)


def exclusion(patterns):
    """excluded(path, is_dir) for the exclude patterns, as the module's docstring describes."""
    if isinstance(patterns, str):
        raise SourceError(f"the exclude patterns are a list, not the string {patterns!r}")
    rules = []
    for pattern in patterns:
        body = pattern.rstrip("/")
        match = re.compile(fnmatch.translate(body.lstrip("/"))).match
        rules.append((match, "/" in body, pattern.endswith("/")))

    def excluded(path, is_dir):
        name = path.rpartition("/")[2]
        return any(match(path if anchored else name) and (is_dir or not directories_only)
                   for match, anchored, directories_only in rules)

    return excluded


def _identity(info):
    return info.st_dev, info.st_ino


def _list_directory(directory, prefix, excluded, entries, ancestors):
    """Append to entries what directory holds; prefix is its relative path and a "/" (or "" at the
    top), ancestors the identities of the directories it is in and of itself (loops)."""
    with os.scandir(directory) as scan:
        children = list(scan)
    for child in children:
        path = prefix + child.name
        try:
            info = child.stat()  # of what a symbolic link leads to
        except OSError as exc:
            if not child.is_symlink():
                raise
            if excluded(path, False):
                continue
            raise SourceError(f"{child.path} is a symbolic link to {os.readlink(child.path)}, which "
                              f"leads nowhere ({exc.strerror}): remove it or exclude it") from exc
        is_dir = stat.S_ISDIR(info.st_mode)
        if excluded(path, is_dir):
            continue
        if is_dir:
            if _identity(info) in ancestors:
                raise SourceError(f"{child.path} leads back to a directory it is in (a loop of "
                                  "symbolic links): remove it or exclude it")
            entries.append(Entry(path, DIRECTORY, False, child.path))
            _list_directory(child.path, path + "/", excluded, entries, ancestors | {_identity(info)})
        elif stat.S_ISREG(info.st_mode):
            entries.append(Entry(path, FILE, bool(info.st_mode & stat.S_IXUSR), child.path))
        else:
            raise SourceError(f"{child.path} is neither a regular file nor a directory (a socket, a "
                              "pipe or a device): remove it or exclude it")


# --- The digest, and the archive written from the same reads -------------------------------------


class _HashingReader:
    """Reads the first size bytes of an open file, feeding them to a hash on the way."""

    def __init__(self, handle, size, sha, name):
        self.handle, self.remaining, self.sha, self.name = handle, size, sha, name

    def read(self, size):
        data = self.handle.read(min(size, self.remaining))
        if self.remaining and not data:
            raise SourceError(f"{self.name} got shorter while it was read: re-run the play")
        self.remaining -= len(data)
        self.sha.update(data)
        return data

    def read_all(self):
        while self.remaining:
            self.read(1 << 20)


def _record(entry, size):
    """What the digest holds of an entry before its content; the size makes it unambiguous."""
    return b"\0".join([os.fsencode(entry.path), entry.kind.encode(),
                       b"x" if entry.executable else b"-", b"%d" % size, b""])


def _tarinfo(entry, size):
    info = tarfile.TarInfo(entry.path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_MTIME, 0, 0, "root", "root"
    if entry.kind == DIRECTORY:
        info.type, info.mode = tarfile.DIRTYPE, 0o750
    else:
        info.size, info.mode = size, 0o750 if entry.executable else 0o640
    return info


def _digest(entries, archive=None):
    """{"digest", "files", "bytes"} of a listing: sha256 of each entry's path, kind, executable
    bit and content, in order. With archive (an open TarFile), each entry is added to it too,
    from the same read of the file."""
    sha = hashlib.sha256()
    files = total = 0
    for entry in entries:
        if entry.kind == DIRECTORY:
            sha.update(_record(entry, 0))
            if archive is not None:
                archive.addfile(_tarinfo(entry, 0))
            continue
        with open(entry.source, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            sha.update(_record(entry, size))
            content = _HashingReader(handle, size, sha, entry.source)
            if archive is None:
                content.read_all()
            else:
                archive.addfile(_tarinfo(entry, size), content)
        files += 1
        total += size
    return {"digest": sha.hexdigest(), "files": files, "bytes": total}


def write_archive(path, dest, exclude=None, expect_digest=None):
    """Write to dest a gzip-compressed tar of the directory path's listing, exactly: sorted,
    owned by root, directories and executable files 0750, other files 0640, one fixed time, so
    that the same source gives the same bytes. Returns {"digest", "files", "bytes"}, the digest
    computed from what was written. When expect_digest is given and differs, removes dest and
    raises SourceError: the source changed since it was checked."""
    entries = source_files(path, exclude)
    try:
        with open(dest, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESSLEVEL,
                              mtime=0) as compressed, \
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            result = _digest(entries, archive)
        if expect_digest is not None and result["digest"] != expect_digest:
            raise SourceError(f"{path} changed since it was checked (its digest is now "
                              f"{result['digest']}, not {expect_digest}): re-run the play")
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(dest)
        raise
    return result


# --- The check -----------------------------------------------------------------------------------

MONKEY_PATCHES = {
    "gevent.monkey.patch_all", "gevent.monkey.patch_socket", "gevent.monkey.patch_thread",
    "gevent.monkey.patch_ssl", "gevent.monkey.patch_select", "gevent.monkey.patch_time",
    "gevent.monkey.patch_os", "gevent.monkey.patch_subprocess", "eventlet.monkey_patch",
    "eventlet.patcher.monkey_patch",
}

_HTTPX = "an async HTTP client: `async with httpx.AsyncClient() as client: await client.get(...)`"
_SUBPROCESS = "`await asyncio.create_subprocess_exec(...)`"
BLOCKING = {
    "time.sleep": "`await asyncio.sleep(...)`",
    "requests.get": _HTTPX, "requests.post": _HTTPX, "requests.put": _HTTPX,
    "requests.patch": _HTTPX, "requests.delete": _HTTPX, "requests.head": _HTTPX,
    "requests.options": _HTTPX, "requests.request": _HTTPX,
    # In two pieces: ansible-test's replace-urlopen check flags the word on any line, even as data.
    "urllib.request.url" "open": _HTTPX,
    "subprocess.run": _SUBPROCESS, "subprocess.call": _SUBPROCESS,
    "subprocess.check_call": _SUBPROCESS, "subprocess.check_output": _SUBPROCESS,
    "subprocess.Popen": _SUBPROCESS,
    "os.system": "`await asyncio.create_subprocess_shell(...)`",
    "socket.create_connection": "`await asyncio.open_connection(...)`",
    "psycopg2.connect": "an async driver (asyncpg, or psycopg 3's AsyncConnection)",
    "pymysql.connect": "an async driver (aiomysql or asyncmy)",
    "smtplib.SMTP": "an async client (aiosmtplib), or `await asyncio.to_thread(...)`",
}


class Checker(ast.NodeVisitor):
    """Resolves imported names, then matches calls against the two tables."""

    def __init__(self, filename):
        self.filename = filename
        self.aliases = {}
        self.async_depth = 0
        self.findings = []

    def visit_Import(self, node):
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node):
        if node.module and not node.level:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def visit_AsyncFunctionDef(self, node):
        self.async_depth += 1
        self.generic_visit(node)
        self.async_depth -= 1

    def visit_FunctionDef(self, node):
        # A plain def inside an async def runs elsewhere (a thread, a callback): not counted.
        depth, self.async_depth = self.async_depth, 0
        self.generic_visit(node)
        self.async_depth = depth

    visit_Lambda = visit_FunctionDef

    def visit_Call(self, node):
        name = self.dotted(node.func)
        if name in MONKEY_PATCHES:
            self.add("error", node, name,
                     f"{name}() monkey-patches the standard library for gevent/eventlet, which "
                     "breaks asyncio and the Uvicorn workers serving this app. Remove it: the "
                     "app is served by asyncio, use async libraries instead of patching.")
        elif self.async_depth and name in BLOCKING:
            self.add("warning", node, name,
                     f"{name}() blocks the event loop inside an async def: every other request "
                     f"of this worker waits until it returns. Use {BLOCKING[name]}, or run it "
                     "with `await asyncio.to_thread(...)`.")
        self.generic_visit(node)

    def dotted(self, node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def add(self, severity, node, call, message):
        self.findings.append({"severity": severity, "file": self.filename, "line": node.lineno,
                              "call": call, "message": message})


def _check(sources):
    """{"findings", "unparsable"} of (name, text) pairs of Python files."""
    findings, unparsable = [], []
    for name, text in sources:
        try:
            tree = ast.parse(text, filename=name)
        except SyntaxError as exc:
            unparsable.append(f"{name}:{exc.lineno}: {exc.msg}")
            continue
        except ValueError as exc:  # a null byte, before Python 3.12 made that a SyntaxError
            unparsable.append(f"{name}: {exc}")
            continue
        checker = Checker(name)
        checker.visit(tree)
        findings.extend(checker.findings)
    return {"findings": findings, "unparsable": unparsable}


def _listed_python(entries):
    for entry in entries:
        if entry.kind == FILE and entry.path.endswith(".py"):
            with open(entry.source, encoding="utf-8", errors="replace") as handle:
                yield entry.path, handle.read()


# --- Packages: wheels, zips, sdists --------------------------------------------------------------


def _package_members(path):
    """(number of files, [(name, text) of its Python files]) of a wheel or zip, or an sdist."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
            return len(names), [(name, archive.read(name).decode("utf-8", "replace"))
                                for name in names if name.endswith(".py")]
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            members = sorted((member for member in archive.getmembers() if member.isfile()),
                             key=lambda member: member.name)
            return len(members), [(member.name, archive.extractfile(member).read().decode("utf-8", "replace"))
                                  for member in members if member.name.endswith(".py")]
    raise SourceError(f"{path} is not a directory, a wheel, a zip or a .tar.gz")


def _file_digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# --- A directory or a package -------------------------------------------------------------------


def inspect_source(path, exclude=None):
    """{"digest", "files", "bytes", "findings", "unparsable"} of a source.

    A directory: its listing's digest, number of files and bytes, and the check of the .py files
    of that listing. A wheel, zip or sdist: the digest of its bytes, its number of files, its size,
    and the check of its .py members (exclude does not apply).
    """
    if os.path.isdir(path):
        entries = source_files(path, exclude)
        return {**_digest(entries), **_check(_listed_python(entries))}
    files, python = _package_members(path)
    return {"digest": _file_digest(path), "files": files, "bytes": os.path.getsize(path),
            **_check(python)}


# --- Command line --------------------------------------------------------------------------------
# A command on the controller (the role runs `python asgi_app_source.py archive ...` there), never
# code inside a module on a host, so it prints and exits as commands do; ansible-test's pylint,
# which takes every file in module_utils for module code, would have it call exit_json instead.
# pylint: disable=ansible-bad-function


def _check_command(args, exclude):
    result = inspect_source(args.path, exclude)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for finding in result["findings"]:
            print(f"{finding['file']}:{finding['line']}: {finding['severity']}: {finding['message']}")
        for problem in result["unparsable"]:
            print(f"{problem}: not checked (syntax error)")
    failing = {"error", "warning"} if args.strict else {"error"}
    return 1 if any(finding["severity"] in failing for finding in result["findings"]) else 0


def _archive_command(args, exclude):
    print(json.dumps(write_archive(args.path, args.dest, exclude, args.expect_digest)))
    return 0


def _parser():
    excludes = argparse.ArgumentParser(add_help=False)
    excludes.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN",
        help="also leave out what PATTERN matches, in addition to the default list; repeat it for "
             "several (write --exclude=PATTERN for a pattern that starts with -). A name matches "
             "at any depth, a pattern with / the path from the top, a trailing / directories only")
    excludes.add_argument(
        "--no-default-excludes", action="store_true",
        help="leave out only what --exclude names, not the default list: "
             + " ".join(DEFAULT_EXCLUDE))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", maxsplit=1)[0].replace("\n", " "),
        epilog="Exit status: 2 when the source cannot be read or archived (the message says which "
               "file and why).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check", parents=[excludes], help="check the source's Python files, and give its digest",
        description="Check the source's Python files. Exit status: 1 when there are errors (or "
                    "warnings, with --strict), 2 when the source cannot be read, else 0.")
    check.add_argument("path", help="a directory, a wheel or zip, or an sdist")
    check.add_argument("--json", action="store_true",
                       help="print the digest, the counts and the findings as JSON")
    check.add_argument("--strict", action="store_true", help="warnings fail too")
    check.set_defaults(run=_check_command)
    archive = commands.add_parser(
        "archive", parents=[excludes], help="write the directory's files as a .tar.gz",
        description="Write a gzip-compressed tar of the files of a directory that are deployed, "
                    "and print its digest, number of files and bytes as JSON. Exit status: 2 "
                    "when it cannot (the archive is then removed), else 0.")
    archive.add_argument("path", help="a directory")
    archive.add_argument("dest", help="the archive to write")
    archive.add_argument("--expect-digest", metavar="HEX",
                         help="fail, writing nothing, unless the files' digest is HEX (what check gave)")
    archive.set_defaults(run=_archive_command)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    exclude = ([] if args.no_default_excludes else DEFAULT_EXCLUDE) + args.exclude
    try:
        return args.run(args, exclude)
    except (SourceError, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        print(f"asgi_app_source: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
