"""Type-check the installed package `suelo` with mypy (issue 18): `make typecheck` runs `python .ci/typecheck.py`.

Why a script: the package is mapped from the repository's folders (pyproject `[tool.setuptools] package-dir`:
pipeline/ is `suelo`, models/ `suelo.models`, data/ `suelo.data`), there is no suelo/ folder, and the editable install
resolves `import suelo` through setuptools' PEP 660 import hook, which mypy (a static tool: it never runs that hook)
cannot follow. mypy has no option that renames a folder into a package (`mypy_path`/`explicit_package_bases` only add
roots, so `pipeline/grid.py` would be the module `pipeline.grid`, and `from suelo.grid import ...` would not resolve).
So this builds, in a throwaway temporary folder, the tree that a wheel would install: one real folder per package of
pyproject's `packages` list, holding a symlink to each of its modules' .py files in the folder that `package-dir`
maps it from (the same longest-prefix rule setuptools applies, so a package added to that list is checked with no
change here). mypy then checks `-p suelo` there, with pyproject.toml's `[tool.mypy]` as its configuration.

mypy runs with the tree as its working folder and sees relative paths (`suelo/grid.py`): its messages are rewritten to
the real files (`pipeline/grid.py`), so editors and people read real paths, and its incremental cache (.mypy_cache/ in
the repository) stays valid from one run to the next although each run has a new temporary folder. Symlinks rather
than copies: nothing is duplicated, and mypy reads the files as they are at that moment.

Exit status: mypy's (0 clean, 1 type errors, 2 usage or crash); extra arguments are passed on to mypy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: mypy's own dependency there provides the same parser
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TOP = "suelo"


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder that setuptools installs `package` from: the longest mapped prefix, then the rest as subfolders."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[n:])
    return ROOT / package_dir.get("", ".") / Path(*parts)


def build_tree(tree: Path) -> dict[str, str]:
    """Lay the installed package out under `tree`; returns {path as mypy reports it: the path in the repository}."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    packages: list[str] = setuptools["packages"]
    if TOP not in packages:
        raise SystemExit(f"typecheck: pyproject.toml's packages list has no {TOP!r}")
    real: dict[str, str] = {}
    for package in packages:
        source = package_folder(package, package_dir)
        if not source.is_dir():
            raise SystemExit(f"typecheck: package {package!r} maps to {source}, which is not a folder")
        target = tree / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in sorted(source.glob("*.py")):
            (target / module.name).symlink_to(module)
            real[(target / module.name).relative_to(tree).as_posix()] = module.relative_to(ROOT).as_posix()
    return real


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="suelo-typecheck-") as tmp:
        tree = Path(tmp)
        real = build_tree(tree)
        command = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            TOP,
            *argv,
        ]
        # MYPYPATH would put other roots before the tree; the tree (mypy's working folder) must be the only `suelo`.
        env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    # A message starts with the file's path: `suelo/grid.py:12: error: ...` (also `suelo/grid.py:12:5:` with columns).
    pattern = re.compile(r"^(" + "|".join(re.escape(p) for p in sorted(real, key=len, reverse=True)) + r")(?=:)", re.M)
    for stream, text in ((sys.stdout, done.stdout), (sys.stderr, done.stderr)):
        stream.write(pattern.sub(lambda m: real[m.group(1)], text) if real else text)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
