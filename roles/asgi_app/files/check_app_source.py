#!/usr/bin/env python3
"""Find the mistakes that break an ASGI app under asyncio workers, by reading its source.

Errors: gevent or eventlet monkey-patching, which replaces the socket and threading primitives
that asyncio and Uvicorn rely on. Warnings: well-known blocking calls made directly inside an
``async def``, which stop every other request of the worker while they wait; each comes with
file, line and the asyncio alternative.

Reads a directory, a wheel or a zip, or an sdist (.tar.gz), and gives a digest of all of it
(the asgi_app role names releases after it). Standard library only; the role runs it on the
controller before anything on the host changes, and it works on its own:

    python check_app_source.py path/to/app [--json] [--strict]

Exit status: 1 when there are errors (or warnings with --strict), else 0.
"""

import argparse
import ast
import hashlib
import json
import os
import sys
import tarfile
import zipfile

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "__pycache__", "node_modules", "build",
             "dist", "site-packages", ".tox", ".nox", ".mypy_cache", ".pytest_cache"}

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
    "urllib.request.urlopen": _HTTPX,
    "subprocess.run": _SUBPROCESS, "subprocess.call": _SUBPROCESS,
    "subprocess.check_call": _SUBPROCESS, "subprocess.check_output": _SUBPROCESS,
    "subprocess.Popen": _SUBPROCESS,
    "os.system": "`await asyncio.create_subprocess_shell(...)`",
    "socket.create_connection": "`await asyncio.open_connection(...)`",
    "psycopg2.connect": "an async driver (asyncpg, or psycopg 3's AsyncConnection)",
    "pymysql.connect": "an async driver (aiomysql or asyncmy)",
    "smtplib.SMTP": "an async client (aiosmtplib), or `await asyncio.to_thread(...)`",
}


def python_sources(path):
    """(name, text) of every Python file in a directory, wheel, zip or sdist."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for name in sorted(files):
                if name.endswith(".py"):
                    full = os.path.join(root, name)
                    with open(full, encoding="utf-8", errors="replace") as handle:
                        yield os.path.relpath(full, path), handle.read()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name.endswith(".py"):
                    yield name, archive.read(name).decode("utf-8", "replace")
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith(".py"):
                    yield member.name, archive.extractfile(member).read().decode("utf-8", "replace")
    else:
        raise ValueError(f"{path} is not a directory, a wheel, a zip or a .tar.gz")


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


def digest(path):
    """sha256 of every file of a directory (paths and contents, build debris left out), or of an archive."""
    sha = hashlib.sha256()
    if not os.path.isdir(path):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(root, name)
            sha.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as handle:
                sha.update(handle.read() + b"\0")
    return sha.hexdigest()


def check(path):
    findings, unparsable = [], []
    for name, text in python_sources(path):
        try:
            tree = ast.parse(text, filename=name)
        except SyntaxError as exc:
            unparsable.append(f"{name}:{exc.lineno}: {exc.msg}")
            continue
        checker = Checker(name)
        checker.visit(tree)
        findings.extend(checker.findings)
    return {"findings": findings, "unparsable": unparsable}


def inspect_source(path):
    return {**check(path), "digest": digest(path)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a directory, a wheel or zip, or an sdist")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    args = parser.parse_args()
    result = inspect_source(args.path)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for finding in result["findings"]:
            print(f"{finding['file']}:{finding['line']}: {finding['severity']}: {finding['message']}")
        for problem in result["unparsable"]:
            print(f"{problem}: not checked (syntax error)")
    failing = {"error", "warning"} if args.strict else {"error"}
    return 1 if any(f["severity"] in failing for f in result["findings"]) else 0


if __name__ == "__main__":
    sys.exit(main())
