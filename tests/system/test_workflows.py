"""workflows/: the example jobs validate, the scheduler files are well-formed, the README's spec table is current."""

from __future__ import annotations

import configparser
import py_compile
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from suelo.settings import load_job
from tests.fixtures import REPO_ROOT, demo_job

WORKFLOWS = REPO_ROOT / "workflows"
sys.path.insert(0, str(WORKFLOWS))
import spec_reference  # noqa: E402  (a script folder, not a package)


def test_readme_spec_reference_is_current() -> None:
    documented = spec_reference.readme_section((WORKFLOWS / "README.md").read_text(encoding="utf-8"))
    assert documented == spec_reference.reference(), (
        "workflows/README.md is out of date: run .venv/bin/python workflows/spec_reference.py --write"
    )


def test_every_field_has_a_meaning() -> None:
    empty = [line.split("|")[1].strip() for line in spec_reference.reference().splitlines()
             if line.startswith("| `") and line.rstrip().endswith("|  |")]  # fmt: skip
    assert not empty, f"fields without a description in pipeline/settings.py: {empty}"


def test_spec_reference_script_prints_the_table() -> None:
    printed = subprocess.run(
        [sys.executable, str(WORKFLOWS / "spec_reference.py")],
        capture_output=True, text=True, check=True, cwd=WORKFLOWS.parent,
    ).stdout  # fmt: skip
    assert printed == spec_reference.reference() and "`compute.block_size`" in printed


@pytest.mark.parametrize("name", ["demo.yaml", "region_two_zones.yaml", "slurm_cluster.yaml", "slovenia.yaml"])
def test_example_jobs_validate(name: str) -> None:
    job = load_job(WORKFLOWS / name)
    assert job.name


def test_region_job_is_what_it_says() -> None:
    job = load_job(WORKFLOWS / "region_two_zones.yaml")
    assert job.inputs[0].kind == "stac_api" and job.grid.crs == "EPSG:3035" and job.aoi is None
    assert {t[:2] for t in job.tiles} == {"31", "32"}
    assert (job.compute.block_size, job.compute.scheduler) == (1024, "local")
    assert load_job(WORKFLOWS / "slurm_cluster.yaml").compute.scheduler.startswith("tcp://")


def test_python_files_compile() -> None:
    for path in ("airflow/suelo_monthly_dag.py", "slurm/cluster.py", "spec_reference.py"):
        py_compile.compile(str(WORKFLOWS / path), doraise=True)


def test_systemd_units() -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.optionxform = str  # systemd keys are case-sensitive
    service.read(WORKFLOWS / "systemd" / "suelo-monthly.service")
    section = service["Service"]
    assert section["User"] == "suelo" and section["Type"] == "oneshot"
    assert section["ExecStart"].startswith("/opt/suelo/bin/suelo run /etc/suelo/region.yaml --period ${SUELO_PERIOD}")
    assert section["ExecStart"].endswith(" -o /srv/suelo/region/{period}")  # a folder per period
    assert section["ExecStartPre"].endswith("suelo validate /etc/suelo/region.yaml --period ${SUELO_PERIOD}")
    lines = (WORKFLOWS / "systemd" / "suelo-monthly.service").read_text().splitlines()
    assert "Environment=SUELO_PERIOD=last-12-months" in lines
    assert {"MemoryMax", "CPUQuota", "TasksMax"} <= set(section)
    timer = configparser.ConfigParser(interpolation=None)
    timer.optionxform = str
    timer.read(WORKFLOWS / "systemd" / "suelo-monthly.timer")
    assert re.fullmatch(r"\*-\*-\d{2} \d{2}:\d{2}:\d{2}", timer["Timer"]["OnCalendar"])  # monthly
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_cron_line() -> None:
    lines = [
        line
        for line in (WORKFLOWS / "cron" / "suelo-monthly.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    minute, hour, day, month, weekday, user, *command = lines[0].split()
    assert (day, month, weekday, user) == ("5", "*", "*", "suelo") and minute.isdigit() and hour.isdigit()
    assert "suelo run /etc/suelo/region.yaml" in " ".join(command)


def test_sbatch_script() -> None:
    text = (WORKFLOWS / "slurm" / "suelo_region.sbatch").read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH --job-name" in text and "cluster.py" in text
    assert '--period "$PERIOD" --output "$OUTPUT"' in text and "SUELO_PERIOD:-last-12-months" in text
    subprocess.run(["bash", "-n", str(WORKFLOWS / "slurm" / "suelo_region.sbatch")], check=True)


def test_slurm_cluster_passes_the_period_on(tmp_path: Path) -> None:
    sys.path.insert(0, str(WORKFLOWS / "slurm"))
    try:
        import cluster  # a script folder, not a package
    finally:
        sys.path.remove(str(WORKFLOWS / "slurm"))
    job = tmp_path / "job.yaml"
    args = cluster.parse_args(["--run", str(job), "--period", "last-12-months", "--output", "/shared/o/{period}"])
    validate, run = cluster.suelo_commands(args.run, args.period, args.output)
    assert validate == ["suelo", "validate", str(job), "--period", "last-12-months"]
    assert run == ["suelo", "run", str(job), "--period", "last-12-months", "--output", "/shared/o/{period}"]
    assert cluster.suelo_commands(job) == [["suelo", "validate", str(job)], ["suelo", "run", str(job)]]


def test_airflow_dag_maps_the_months_of_its_data_interval() -> None:
    text = (WORKFLOWS / "airflow" / "suelo_monthly_dag.py").read_text()
    assert 'TODAY = "{{ data_interval_end | ds }}"' in text and 'PERIOD = "last-12-months"' in text
    assert text.count("SUELO_TODAY={TODAY}") == 2 and "-o '{OUTPUT}/{{period}}'" in text


def scheduled_commands() -> list[list[str]]:
    """The suelo commands of the shipped cron line, split as its shell would (``$SUELO_PERIOD`` from the file)."""
    text = (WORKFLOWS / "cron" / "suelo-monthly.cron").read_text()
    variables = dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z_]+=", line))
    words = shlex.split(next(line for line in text.splitlines() if " sh -c " in line))
    script = re.sub(r"\$([A-Z_]+)", lambda name: variables[name.group(1)], words[words.index("-c") + 1])
    commands: list[list[str]] = [[]]
    for word in shlex.split(script):
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def test_scheduled_runs_in_two_months_map_two_periods_into_two_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cron line's own options on the demo job, as run on the 5th of two months (SUELO_TODAY): each run
    validates another 12-month period and writes it into a folder of its own."""
    from click.testing import CliRunner

    from suelo.cli import load_job_with, main, output_dir

    validate, run = scheduled_commands()
    assert validate == ["suelo", "validate", "/etc/suelo/region.yaml", "--period", "last-12-months"]
    assert run == ["suelo", "run", "/etc/suelo/region.yaml", "--period", "last-12-months",
                   "-o", "/srv/suelo/region/{period}"]  # fmt: skip
    job_file = demo_job(tmp_path)
    seen = []
    for today in ("2021-11-05", "2021-12-05"):
        monkeypatch.setenv("SUELO_TODAY", today)
        done = CliRunner().invoke(main, ["validate", str(job_file), *validate[3:]])
        assert done.exit_code == 0, done.output
        period = re.search(r"period: (\S+ \.\. \S+) \(last_months: 12\)", done.output)
        assert period is not None, done.output
        folder = output_dir(Path(run[6]), load_job_with(job_file, run[4]))
        seen.append((period.group(1), folder))
    assert seen == [
        ("2020-11-01 .. 2021-10-31", Path("/srv/suelo/region/2020-11_2021-10")),
        ("2020-12-01 .. 2021-11-30", Path("/srv/suelo/region/2020-12_2021-11")),
    ]


def test_the_readme_job_spec_validates() -> None:
    """The README's annotated job spec (every key, every input kind) is a valid job as written."""
    import yaml

    from suelo.settings import validate_job

    readme = (WORKFLOWS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Job spec\n", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    job = validate_job(yaml.safe_load(block.group(1)), "README.md")
    assert {spec.kind for spec in job.inputs} == {"safe", "stac", "stac_api", "geotiff", "sentinel1", "dem", "weather"}
    assert job.products.landcover.allow_fewer_months is False
