#!/usr/bin/env python3
"""Type-check stemdeck with mypy as the tests, benchmarks and scripts import it.

    .venv/bin/python scripts/typecheck.py [mypy options]

Installed, the folders ``core/``, ``daemon/`` and ``presets/`` are the packages
``stemdeck.core``, ``stemdeck.daemon`` and ``stemdeck.presets`` (pyproject's
``package-dir``). mypy cannot follow that mapping, nor the import hook of an editable
install, so ``mypy core daemon tests`` would check the modules as ``core.*`` and leave
every ``stemdeck.*`` import unresolved. This script links the folders into a tree
(``.mypy_cache/tree/stemdeck/{core,daemon,presets}``) and checks the package there, with
the tests, ``bench/`` and ``scripts/``, through the names they really import.

A test, benchmark or script module is checked under its file's name, as pytest's default
import mode and ``python bench/x.py`` import it: each folder holding ones is a package
base of its own, so ``tests/core/test_x.py`` is ``test_x`` and the helpers beside it are
top-level names. Their file names must therefore be unique; a ``conftest.py`` below
``tests/`` (never imported by name) is checked under an alias. Paths in mypy's report
are the repository's own. The exit status is mypy's.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "daemon", "presets")
# Folders whose modules are checked under their file names (see the docstring).
LOOSE = ("tests", "bench", "scripts")
TREE = ROOT / ".mypy_cache" / "tree"
ALIASES = TREE / "aliases"


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target``, replacing it atomically (runs may overlap)."""
    if link.is_symlink() and link.readlink() == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)


def _loose_modules() -> tuple[list[Path], list[Path]]:
    """The package bases and the files of the loose modules.

    A ``conftest.py`` below the first is linked under an alias named by its folder
    (``tests/core/conftest.py`` is ``tests_core_conftest``); any other file name that
    occurs twice stops the check.
    """
    by_name: dict[str, list[Path]] = defaultdict(list)
    for folder in LOOSE:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                by_name[path.stem].append(path)
    bases: set[Path] = set()
    sources: list[Path] = []
    aliases: set[Path] = set()
    for name, paths in sorted(by_name.items()):
        first, *others = sorted(paths, key=lambda path: (len(path.parts), path))
        if others and name != "conftest":
            listed = ", ".join(str(path.relative_to(ROOT)) for path in paths)
            sys.exit(f"typecheck: two modules named {name!r}: {listed}")
        sources.append(first)
        bases.add(first.parent)
        for other in others:
            alias = ALIASES / ("_".join(other.relative_to(ROOT).with_suffix("").parts) + ".py")
            _link(alias, other)
            aliases.add(alias)
    for stale in set(ALIASES.glob("*.py")) - aliases:
        stale.unlink(missing_ok=True)
    if aliases:
        bases.add(ALIASES)
        sources.extend(sorted(aliases))
    return sorted(bases), sources


def main() -> int:
    """Run mypy on the linked package and the loose modules; return its exit status."""
    if importlib.util.find_spec("mypy") is None:
        sys.exit(f"typecheck: no mypy in {sys.executable}: use .venv/bin/python (setup --test)")
    for name in PACKAGES:
        _link(TREE / "stemdeck" / name, ROOT / name)
    bases, loose = _loose_modules()
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--explicit-package-bases",
        *sys.argv[1:],
        str(TREE / "stemdeck" / "core"),
        str(TREE / "stemdeck" / "daemon"),
        *map(str, loose),
    ]
    environment = dict(os.environ, MYPYPATH=os.pathsep.join(map(str, [TREE, *bases])))
    proc = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    # The linked folders and aliases back to the paths a developer opens.
    report = proc.stdout.replace(f"{ROOT}/", "")
    tree = TREE.relative_to(ROOT)
    report = report.replace(f"{tree}/stemdeck/", "")
    for alias in ALIASES.glob("*.py"):
        real = alias.resolve().relative_to(ROOT)
        report = report.replace(str(alias.relative_to(ROOT)), str(real))
    sys.stdout.write(report)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
