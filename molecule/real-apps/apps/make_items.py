#!/usr/bin/env python3
"""Write the full source tree of version 1, 2 or 3 of the items app into DEST.

    python3 make_items.py VERSION DEST

Version 1 is items/ as it is; version N is items/ with the overlays items-v2/ ... items-vN/
copied over it in turn (each overlay holds only the files that differ from the version before).
DEST is deleted and written anew; the same VERSION always gives the same files (names, bytes
and modes), so the role's digest of the tree, and so its release, is the same too.
Standard library only.
"""

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE / "items"
VERSIONS = (1, 2, 3)
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def layers(version: int) -> list[Path]:
    return [BASE] + [HERE / f"items-v{n}" for n in range(2, version + 1)]


def source_files(layer: Path) -> list[Path]:
    """Files of one layer, relative to it, in a stable order, build debris left out."""
    return sorted(
        path.relative_to(layer)
        for path in layer.rglob("*")
        if path.is_file()
        and not SKIP_DIRS.intersection(path.relative_to(layer).parts)
        and not path.name.endswith(SKIP_SUFFIXES)
    )


def replace_dir(dest: Path) -> None:
    """Delete DEST, refusing paths that cannot be a generated tree."""
    resolved = dest.resolve()
    protected = {Path(resolved.anchor), Path.home(), HERE, *HERE.parents, *layers(max(VERSIONS))}
    if resolved in protected or any(layer in resolved.parents for layer in layers(max(VERSIONS))):
        sys.exit(f"make_items.py: refusing to replace {resolved}")
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)


def write_version(version: int, dest: Path) -> int:
    replace_dir(dest)
    dest.mkdir(parents=True, mode=0o755)
    dest.chmod(0o755)
    files: dict[Path, Path] = {}
    for layer in layers(version):
        for relative in source_files(layer):
            files[relative] = layer / relative
    for relative, source in sorted(files.items()):
        target = dest / relative
        for parent in reversed(relative.parents[:-1]):
            directory = dest / parent
            if not directory.is_dir():
                directory.mkdir(mode=0o755)
                directory.chmod(0o755)
        target.write_bytes(source.read_bytes())
        target.chmod(0o644)
    return len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", type=int, choices=VERSIONS, help="1, 2 or 3")
    parser.add_argument("dest", type=Path, help="directory to (re)create")
    args = parser.parse_args()
    count = write_version(args.version, args.dest)
    print(f"items {args.version}.0.0: {count} files written to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
