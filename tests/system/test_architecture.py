"""The package's shape: one ``suelo`` package, and imports that only run one way (no import circles).

Every import is counted, at module level and inside functions alike: a function-level import only postpones a
circle to run time, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fixtures import REPO_ROOT

#: How the installed package maps onto the repository's folders (pyproject.toml [tool.setuptools] package-dir).
PACKAGE_DIRS = {"suelo": REPO_ROOT / "pipeline", "suelo.models": REPO_ROOT / "models", "suelo.data": REPO_ROOT / "data"}


def package_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the suelo modules it imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "suelo.models.presto" in graph and "suelo.ingest.stac" in graph
    assert cycles(graph) == []


def test_one_installed_package_named_suelo(tmp_path: Path) -> None:
    """Outside the checkout only ``suelo`` imports: the repository's folder names are no packages of the install."""
    import subprocess
    import sys

    code = (
        "import importlib.util as u, suelo, suelo.models.presto, suelo.data; "
        "print(suelo.__version__, [u.find_spec(n) is None for n in ('pipeline', 'models', 'data')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    version, absent = done.stdout.split(" ", 1)
    assert version and absent.strip() == "[True, True, True]"
    main = subprocess.run([sys.executable, "-m", "suelo", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert main.returncode == 0 and "Usage: python -m suelo" in main.stdout


def test_every_package_folder_is_in_the_wheel() -> None:
    """A sub-package missing from pyproject's ``packages`` works in the editable checkout and is absent from the
    wheel: every folder of the package with an ``__init__.py`` must be listed (besides data-only folders)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert {k: REPO_ROOT / v for k, v in setuptools["package-dir"].items()} == PACKAGE_DIRS
    found = set()
    for package, folder in PACKAGE_DIRS.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if not any(part.startswith(".") or part == "__pycache__" for part in parts):
                found.add(".".join([package, *parts]))
    listed = set(setuptools["packages"])
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    for package in listed - found:  # listed without an __init__.py: only data folders (package-data), that exist
        root = max((p for p in PACKAGE_DIRS if package == p or package.startswith(p + ".")), key=len)
        folder = PACKAGE_DIRS[root].joinpath(*package[len(root) :].lstrip(".").split(".")) if package != root else None
        assert folder is not None and folder.is_dir() and not list(folder.glob("*.py")), package


def test_reason_codes_have_one_home_and_one_wording() -> None:
    """Codes, names and colours of the reasons come from suelo.reasons, for both products and every writer."""
    from suelo import reasons, threshold, urban_atlas, write
    from suelo.legend import load_legend

    assert threshold.ReasonCodes is reasons.ReasonCodes and write.URBAN_ATLAS_REASONS is reasons.URBAN_ATLAS_REASONS
    names = {name for name, _colour in reasons.REASON_STYLE.values()}
    assert set(urban_atlas.UA_REASON_NAMES.values()) == names
    legend = load_legend()
    entries = write.map_legend(legend, reasons.reasons_for(legend))
    styled = {(e.name, e.color) for e in entries if e.code in reasons.LANDCOVER_REASONS.as_tuple()}
    assert styled == set(reasons.REASON_STYLE.values())
    sources = [p.read_text(encoding="utf-8") for p in (REPO_ROOT / "pipeline").rglob("*.py") if p.name != "reasons.py"]
    assert not any('"Unclassified (low confidence)"' in text for text in sources)
