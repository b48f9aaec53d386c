"""Scheduled runs: relative periods, ``--period``, a folder per period, JSON logs of every event and error, plain
progress lines in logs, ``suelo --version``."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from suelo.cli import main
from suelo.errors import ConfigError
from suelo.orchestrate.progress import Progress, clock
from suelo.settings import PeriodSpec, load_job, validate_job
from tests.fixtures import demo_job, suelo

INPUTS = [{"kind": "stac", "paths": ["x.json"]}]


# -- the period: fixed dates or relative to today -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "today", "start", "end"),
    [
        ({"last_months": 3}, "2021-08-15", "2021-05-01", "2021-07-31"),
        ({"last_months": 3}, "2021-11-02", "2021-08-01", "2021-10-31"),
        ({"last_months": 1}, "2024-01-01", "2023-12-01", "2023-12-31"),  # across the new year, on its first day
        ({"last_months": 12}, "2024-03-05", "2023-03-01", "2024-02-29"),  # a leap February
        ({"last_months": 14}, "2024-02-10", "2022-12-01", "2024-01-31"),
        ({"previous_year": True}, "2024-12-31", "2023-01-01", "2023-12-31"),
        ({"previous_year": True}, "2025-01-01", "2024-01-01", "2024-12-31"),
    ],
)
def test_relative_periods_resolve_against_today(
    period: dict[str, Any], today: str, start: str, end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = (dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    given = PeriodSpec.model_validate(period, context={"today": dt.date.fromisoformat(today)})
    assert (given.start, given.end) == expected
    monkeypatch.setenv("SUELO_TODAY", today)
    from_environment = validate_job({"inputs": INPUTS, "period": period}).period
    assert (from_environment.start, from_environment.end) == expected
    assert from_environment.label == f"{start[:7]}_{end[:7]}"


def test_a_relative_period_is_recorded_and_digested_as_its_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from suelo.jobs import job_digest

    monkeypatch.setenv("SUELO_TODAY", "2021-08-15")
    relative = tmp_path / "relative.yaml"
    relative.write_text(yaml.safe_dump({"inputs": INPUTS, "period": {"last_months": 3}}))
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({"inputs": INPUTS, "period": {"start": "2021-05-01", "end": "2021-07-31"}}))
    job, same = load_job(relative), load_job(fixed)
    assert job.period.last_months == 3 and job.period.months == 3
    assert job.model_dump(mode="json")["period"] == {"start": "2021-05-01", "end": "2021-07-31", "step": "month"}
    assert job_digest(job, ["a"]) == job_digest(same, ["a"])  # the same months are the same job
    assert job.period.describe() == "2021-05-01 .. 2021-07-31 (last_months: 3)"
    assert same.period.describe() == "2021-05-01 .. 2021-07-31"


@pytest.mark.parametrize(
    ("period", "message"),
    [
        ("{last_months: 3, start: 2021-01-01, end: 2021-02-01}", "exactly one of them); got start/end and last_months"),
        ("{last_months: 3, previous_year: true}", "got last_months and previous_year"),
        ("{previous_year: false}", "exactly one of them); got none"),
        ("{}", "got none"),
        ("{last_months: 0}", "period.last_months must be 1 to 120, got 0"),
        ("{last_months: 121}", "period.last_months must be 1 to 120, got 121"),
        ("{last_months: three}", "period.last_months must be a whole number of months (1 to 120), got 'three'"),
        ("{last_months: 2.5}", "whole number of months"),
        ("{previous_year: yes please}", "period.previous_year must be true or false"),
        ("{last_month: 3}", "exactly one of them); got none (unknown keys: last_month)"),
        ("{start: 2021-01-01, end: 2021-01-31, stop: 2021-02-01}", "period.stop: Extra inputs are not permitted"),
        ("{start: 2021-01-01}", "period.end: Field required"),
    ],
)
def test_bad_periods_are_one_clear_error(tmp_path: Path, period: str, message: str) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{{kind: stac, paths: [x.json]}}]\nperiod: {period}\n")
    with pytest.raises(ConfigError) as caught:
        load_job(spec)
    assert str(spec) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("today", ["tomorrow", "2021-13-01", "20210815", "2021-08-15T00:00"])
def test_a_bad_suelo_today_is_named(today: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUELO_TODAY", today)
    with pytest.raises(ConfigError, match=f"SUELO_TODAY='{today}': not a date YYYY-MM-DD"):
        validate_job({"inputs": INPUTS, "period": {"last_months": 3}})
    fixed = validate_job({"inputs": INPUTS, "period": {"start": "2021-01-01", "end": "2021-01-31"}})
    assert fixed.period.months == 1  # fixed dates never read it


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("2024-01-01:2024-12-31", {"start": "2024-01-01", "end": "2024-12-31"}),
        ("last-3-months", {"last_months": 3}),
        ("last-120-months", {"last_months": 120}),
        ("previous-year", {"previous_year": True}),
    ],
)
def test_period_option_values(text: str, period: dict[str, Any]) -> None:
    assert PeriodSpec.from_option(text) == period


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("last-3-month", "expected START:END"),
        ("last-03-months", "expected START:END"),
        ("last-0-months", "expected START:END"),
        ("Last-3-months", "expected START:END"),
        (" previous-year", "expected START:END"),
        ("2024-1-1:2024-12-31", "expected START:END"),
        ("2024-01-01..2024-12-31", "expected START:END"),
        ("2024-01-01:", "expected START:END"),
        ("2024-02-30:2024-03-31", "period.start: Input should be a valid date"),
        ("2024-05-01:2024-03-31", "period.end 2024-03-31 is before period.start 2024-05-01"),
        ("2000-01-01:2024-12-31", "period spans 300 months; at most 120"),
        ("last-121-months", "period.last_months must be 1 to 120, got 121"),
    ],
)
def test_bad_period_option_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PeriodSpec.from_option(text)
    assert str(caught.value).startswith(f"--period {text!r}: ") and message in str(caught.value)


# -- the commands ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "ingest", "run"])
def test_a_bad_period_option_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(main, [command, str(demo_job(tmp_path)), "--period", "last-three-months"])
    assert done.exit_code == 2
    assert done.stderr.splitlines() == [
        "suelo: error: --period 'last-three-months': expected START:END (e.g. 2024-01-01:2024-12-31), "
        "last-N-months (e.g. last-3-months) or previous-year"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["validate", "ingest", "run"])
def test_errors_are_json_lines_with_json_logs(command: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(main, [command, str(demo_job(tmp_path)), "--period", "previous-yr", "--log-format",
                                     "json"])  # fmt: skip
    assert done.exit_code == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "error" and record["exit_code"] == 2 and record["time"]
    assert record["message"].startswith("--period 'previous-yr': expected START:END")


def test_a_bad_job_spec_is_a_json_error_too(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("inputs: [{kind: stac, paths: [x.json]}]\nperiod: {last_months: 3, previous_year: true}\n")
    done = CliRunner().invoke(main, ["run", str(job), "--log-format", "json"])
    assert done.exit_code == 2
    record = json.loads(done.stderr)
    assert record["event"] == "error" and record["exit_code"] == 2
    assert "period: Value error, give the period as start and end dates" in record["message"]


def test_unknown_output_placeholder_is_an_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(main, ["ingest", str(demo_job(tmp_path)), "-o", str(tmp_path / "x" / "{peroid}")])
    assert done.exit_code == 2
    assert "unknown {peroid}; use {period}, {start} or {end}" in done.stderr
    assert not (tmp_path / "x").exists()


def test_validate_in_two_months_gives_two_periods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two scheduled invocations of one job spec with ``period: {last_months: 3}`` a quarter apart."""
    job = demo_job(tmp_path, period={"last_months": 3}, landcover={"allow_fewer_months": True})
    printed = {}
    for today in ("2021-08-15", "2021-11-02"):
        monkeypatch.setenv("SUELO_TODAY", today)
        done = CliRunner().invoke(main, ["validate", str(job)])
        assert done.exit_code == 0, done.output
        printed[today] = next(line.strip() for line in done.stdout.splitlines() if line.startswith("  period:"))
    assert printed["2021-08-15"].startswith("period: 2021-05-01 .. 2021-07-31 (last_months: 3);")
    assert printed["2021-11-02"].startswith("period: 2021-08-01 .. 2021-10-31 (last_months: 3);")
    # --period replaces the spec's period, whatever form it has
    done = CliRunner().invoke(main, ["validate", str(job), "--period", "2021-03-01:2021-04-30"])
    assert done.exit_code == 0 and "period: 2021-03-01 .. 2021-04-30;" in done.stdout


def test_a_scheduled_run_logs_every_event_as_json_into_its_period_folder(tmp_path: Path) -> None:
    """The one full run of this file: relative period, its own folder from -o {period}, JSON events only on stderr,
    the resolved dates in run.json; run again the same month, it is up to date, which is an event too."""
    job = demo_job(tmp_path, period={"last_months": 3}, landcover={"allow_fewer_months": True})
    command = ("run", str(job), "-o", str(tmp_path / "runs" / "{period}"), "--log-format", "json")
    done = suelo(*command, env={"SUELO_TODAY": "2021-08-15"})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]  # every line is JSON
    names = [e["event"] for e in events]
    assert names[:2] == ["start", "plan"] and names[-1] == "run_done" and "block_done" in names
    plan = events[1]
    assert plan["period"] == {"start": "2021-05-01", "end": "2021-07-31", "months": 3}
    out = tmp_path / "runs" / "2021-05_2021-07"
    assert plan["output"] == str(out) and plan["to_run"] == plan["blocks"] >= 1
    assert all(e["eta_s"] is not None for e in events if e["event"] == "block_done")
    run = json.loads((out / "run.json").read_text())
    assert run["job"]["period"] == {"start": "2021-05-01", "end": "2021-07-31", "step": "month"}
    assert run["job"]["output"]["dir"] == str(out)

    again = suelo(*command, env={"SUELO_TODAY": "2021-08-31"})
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stderr.splitlines() if line.strip()]
    assert [e["event"] for e in events] == ["start", "plan", "up_to_date"]
    assert events[-1]["output"] == str(out) and "nothing to do" in events[-1]["message"]
    assert "up to date" in again.stdout


def test_failed_blocks_and_bugs_are_json_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import suelo.jobs
    from suelo.jobs import RunResult
    from suelo.orchestrate import BlockFailure

    failures = [BlockFailure("r000000_c000000", "InputError: a.tif:\n truncated", 3)]
    monkeypatch.setattr(suelo.jobs, "run", lambda *args, **kwargs: RunResult(None, {}, None, 1.0, False, failures))
    done = CliRunner().invoke(main, ["run", str(demo_job(tmp_path)), "--log-format", "json"])
    assert done.exit_code == 1
    record = json.loads(done.stderr)
    assert record["event"] == "error" and record["exit_code"] == 1
    assert record["message"] == "1 block(s) failed; finished blocks are kept, re-run to resume"
    assert record["failed"] == [{"block": "r000000_c000000", "error": "InputError: a.tif: truncated", "attempts": 3}]

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(suelo.jobs, "run", bug)
    done = CliRunner().invoke(main, ["run", str(demo_job(tmp_path)), "--log-format", "json"])
    assert isinstance(done.exception, RuntimeError)  # a bug keeps its traceback, after one JSON line saying so
    assert json.loads(done.stderr)["message"] == "internal error: RuntimeError: a bug"


def test_ingest_logs_its_outcome_as_json(tmp_path: Path) -> None:
    command = ["ingest", str(demo_job(tmp_path)), "--period", "2021-05-01:2021-05-31", "-o",
               str(tmp_path / "cubes" / "{start}_{end}"), "--log-format", "json"]  # fmt: skip
    events = []
    for _ in range(2):
        done = CliRunner().invoke(main, command)
        assert done.exit_code == 0, done.output
        events.append(json.loads(done.stderr))
    assert [e["event"] for e in events] == ["ingest_done", "up_to_date"]
    assert events[0]["period"] == {"start": "2021-05-01", "end": "2021-05-31", "months": 1}
    assert events[1]["cube"] == str(tmp_path / "cubes" / "2021-05-01_2021-05-31" / "cube" / "cube.nc")


# -- progress -------------------------------------------------------------------------------------------------------


def entry(block: int) -> dict[str, Any]:
    return {"block": f"b{block}", "pixels": 1000, "seconds": 0.1, "worker": "w"}


def test_plain_progress_lines_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(4, 1, "text", stream=stream, terminal=False, every_s=3600)
    assert stream.getvalue() == ""  # "start" is no text line: an up-to-date run prints none
    progress.begin()
    for block in range(3):
        progress.block_done(entry(block))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "blocks: 3 to run of 4"
    # the first block of the run and the last one, the middle one held back (at most one line every_s)
    assert [line.split(",")[0] for line in lines[1:]] == ["blocks: 2/4 done (50%)", "blocks: 4/4 done (100%)"]
    assert all(" kpx/s, elapsed 0:00:0" in line and ", eta 0:00:0" in line for line in lines[1:])
    assert lines[-1].endswith("eta 0:00:00")


def test_plain_progress_line_per_block_when_they_are_slow() -> None:
    stream = io.StringIO()
    progress = Progress(3, 0, "text", stream=stream, terminal=False, every_s=0)
    progress.begin()
    for block in range(3):
        progress.block_done(entry(block))
    assert len(stream.getvalue().splitlines()) == 4


def test_json_progress_is_json_lines_only() -> None:
    stream, text = io.StringIO(), io.StringIO()
    progress = Progress(2, 0, "json", stream=text, terminal=False, log_stream=stream)
    progress.event("plan", blocks=2)
    progress.begin()
    progress.block_done(entry(0))
    progress.block_done(entry(1))
    progress.close()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["start", "plan", "block_done", "block_done"]
    assert events[2]["done"] == 1 and events[2]["eta_s"] >= 0 and events[3]["eta_s"] == 0
    assert text.getvalue() == ""  # no text progress beside the JSON lines


def test_eta_is_elapsed_per_block_of_this_run_times_blocks_left() -> None:
    progress = Progress(10, 5, "text", stream=io.StringIO(), terminal=False)
    progress.begin()
    assert progress.seconds_left() is None  # before a block of this run is done: no guess
    progress.done = 6  # one block done in this run (five were done before), in 10 s: 4 left, 40 s
    progress.started = time.perf_counter() - 10.0
    left = progress.seconds_left()
    assert left is not None and 40.0 <= left < 40.5


def test_the_terminal_bar_shows_the_eta() -> None:
    progress = Progress(3, 0, "text", stream=io.StringIO(), terminal=True)
    progress.begin()
    progress.block_done(entry(0))
    assert progress._bar.tasks[0].fields["eta"].startswith("eta 0:00:0")
    progress.close()


def test_clock() -> None:
    assert (clock(0), clock(83.4), clock(3600), clock(26 * 3600 + 184)) == ("0:00:00", "0:01:23", "1:00:00", "26:03:04")


# -- suelo --version ------------------------------------------------------------------------------------------------


def test_version_names_what_decides_the_results() -> None:
    import numpy
    import pyproj
    import rasterio
    import torch

    from suelo import __version__
    from suelo.provenance import software_versions

    done = CliRunner().invoke(main, ["--version"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "suelo", "Python", "torch", "GDAL", "PROJ", "rasterio", "numpy", "CPU",
    ]  # fmt: skip
    assert lines[0] == f"suelo {__version__}"
    assert lines[2].startswith(f"torch {torch.__version__} (")
    assert ("CUDA" in lines[2]) == (torch.version.cuda is not None)
    assert lines[3] == f"GDAL {rasterio.__gdal_version__}" and lines[4] == f"PROJ {pyproj.proj_version_str}"
    assert lines[5] == f"rasterio {rasterio.__version__}" and lines[6] == f"numpy {numpy.__version__}"
    assert lines[7] == f"CPU kernels: {software_versions()['cpu_kernels']}"  # the run records' own description
