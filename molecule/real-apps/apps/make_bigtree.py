#!/usr/bin/env python3
"""Write the bigtree app: a source tree of thousands of files, and debris the role must leave behind.

    python3 make_bigtree.py DEST [--files 3000] [--venv-files 2600] [--page TEXT]

DEST (deleted and written anew) then holds:

    bigtree/main.py        a plain ASGI app (no dependencies, no requirements.txt): bigtree.main:app
                             GET /        dist/index.html, read from disk at each request
                             GET /health  200 "ok"
                             GET /env     JSON: a value from env.group_000.mod_0000, how many
                                          modules env/ should have and how many are on disk
    env/                   a package (yes, named env) of small modules, so that the tree outside
                             .venv/ holds exactly --files files
    dist/index.html        a page containing TEXT
    .venv/                 --venv-files junk files and a pyvenv.cfg: a developer's virtualenv,
                             which a deployment must NOT copy
    __pycache__/x.cpython-311.pyc   bytecode debris, which a deployment need not copy

The same arguments always give the same files (names, bytes and modes). Standard library only.
"""

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES_PER_GROUP = 100  # env/group_NNN/ holds its __init__.py and up to 99 modules

MAIN = '''\
"""bigtree: a plain ASGI app with no dependencies, deployed with a large source tree.

    gunicorn -k uvicorn_worker.UvicornWorker bigtree.main:app
"""

import asyncio
import json
import os
from pathlib import Path

import env
from env.group_000 import mod_0000

SOURCE_ROOT = Path(__file__).resolve().parent.parent
INDEX = SOURCE_ROOT / "dist" / "index.html"
ENV_MODULES_FOUND = sum(1 for _ in (SOURCE_ROOT / "env").rglob("mod_*.py"))

# What /health answers: 200, or BIGTREE_HEALTH_STATUS (an app whose backend is down says 503).
HEALTH_STATUS = int(os.environ.get("BIGTREE_HEALTH_STATUS", "200"))
HEALTH_BODY = b"ok\\n" if HEALTH_STATUS == 200 else b"unhealthy: the backend this page needs is down\\n"

# A cache file opened at import, where BIGTREE_CACHE says (as an app opening its SQLite file would).
if os.environ.get("BIGTREE_CACHE"):
    open(os.environ["BIGTREE_CACHE"], "a").close()


async def send_response(send, status, body, content_type):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if method not in ("GET", "HEAD"):
        await send_response(send, 405, b"method not allowed\\n", b"text/plain")
    elif path == "/health":
        await send_response(send, HEALTH_STATUS, HEALTH_BODY, b"text/plain")
    elif path == "/":
        page = await asyncio.to_thread(INDEX.read_bytes)
        await send_response(send, 200, page, b"text/html; charset=utf-8")
    elif path == "/env":
        body = json.dumps({
            "module": mod_0000.__name__,
            "value": mod_0000.VALUE,
            "modules_expected": env.MODULES,
            "modules_found": ENV_MODULES_FOUND,
        }).encode()
        await send_response(send, 200, body, b"application/json")
    else:
        await send_response(send, 404, b"not found\\n", b"text/plain")
'''

INDEX_HTML = """\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>bigtree</title></head>
<body>
<p id="page">{text}</p>
</body>
</html>
"""


def plan(files: int, venv_files: int, page: str) -> dict[str, bytes]:
    """Every file of the tree, by path, in a stable order."""
    tree: dict[str, bytes] = {
        "bigtree/__init__.py": b'"""bigtree: see bigtree.main."""\n',
        "bigtree/main.py": MAIN.encode(),
        "dist/index.html": INDEX_HTML.format(text=page).encode(),
        "__pycache__/x.cpython-311.pyc": b"\xa7\r\r\n" + hashlib.sha256(b"bigtree").digest() * 4,
    }
    # env/__init__.py, then groups of (an __init__.py and modules) up to the count asked for.
    remaining = files - len(tree) - 1
    if remaining < 2:
        sys.exit(f"make_bigtree.py: --files must be at least {len(tree) + 3}")
    modules = 0
    group = 0
    while remaining > 0:
        prefix = f"env/group_{group:03d}"
        tree[f"{prefix}/__init__.py"] = f'"""Group {group} of env\'s modules."""\n'.encode()
        remaining -= 1
        for _ in range(min(MODULES_PER_GROUP - 1, remaining)):
            tree[f"{prefix}/mod_{modules:04d}.py"] = (
                f'"""Module {modules} of env."""\n\nNUMBER = {modules}\n'
                f'VALUE = "env-module-{modules:04d}"\n'
            ).encode()
            modules += 1
            remaining -= 1
        group += 1
    tree["env/__init__.py"] = (
        f'"""A package named env, of {modules} small modules in {group} groups."""\n\n'
        f"MODULES = {modules}\n"
    ).encode()
    # The developer's virtualenv: junk the deployment must leave out.
    tree[".venv/pyvenv.cfg"] = b"home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"
    for n in range(venv_files):
        tree[f".venv/lib/python3.11/site-packages/junk{n:05d}/__init__.py"] = (
            f"# junk {n}: a developer's virtualenv, never deployed\n".encode()
        )
    return dict(sorted(tree.items()))


def replace_dir(dest: Path) -> None:
    """Delete DEST, refusing paths that cannot be a generated tree."""
    resolved = dest.resolve()
    if resolved in {Path(resolved.anchor), Path.home(), HERE, *HERE.parents}:
        sys.exit(f"make_bigtree.py: refusing to replace {resolved}")
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)


def write(dest: Path, tree: dict[str, bytes]) -> None:
    replace_dir(dest)
    dest.mkdir(parents=True, mode=0o755)
    dest.chmod(0o755)
    made: set[Path] = set()
    for name, content in tree.items():
        target = dest / name
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_bytes(content)
        target.chmod(0o644)
    for directory in made:
        while directory != dest:
            directory.chmod(0o755)
            directory = directory.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to (re)create")
    parser.add_argument("--files", type=int, default=3000,
                        help="files in the tree outside .venv/ (default 3000)")
    parser.add_argument("--venv-files", type=int, default=2600,
                        help="junk files under .venv/, besides its pyvenv.cfg (default 2600)")
    parser.add_argument("--page", default="bigtree page", help="text of dist/index.html")
    args = parser.parse_args()
    tree = plan(args.files, args.venv_files, args.page)
    write(args.dest, tree)
    outside = sum(1 for name in tree if not name.startswith(".venv/"))
    print(f"bigtree: {outside} files, {len(tree) - outside} more under .venv/, written to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
