"""The output folder: claimed by suelo before anything is written, locked for one run at a time.

A run or an ingest first *claims* its ``output.dir``:

- a path that exists and is not a folder is an error;
- a folder that holds files suelo did not write (no ``.suelo-output.json`` marker, none of suelo's own files) is
  refused unless the user forces it (``--force``): a mistyped ``output.dir`` (``~``, a data folder) must never be
  walked, cleaned or filled with maps;
- a new or empty folder, or one a suelo run made before, gets the marker;

then takes the folder's lock (an advisory ``flock``; the kernel releases it even on ``kill -9``), so a second run on
the same folder is refused before it writes anything, cube included. The lock is re-entrant within a process: the
driver takes it once for the whole run and the stages it calls do not block on it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from suelo import __version__
from suelo.atomic import is_suelo_temporary, read_json_object, set_run_token, temporary_token, write_json_atomic
from suelo.errors import ConfigError

MARKER = ".suelo-output.json"
LOCK = ".suelo.lock"
# files only suelo writes at the top of an output folder: a folder holding one was made by a suelo run (before the
# marker existed), so it is adopted rather than refused
SUELO_FILES = (MARKER, LOCK, "manifest.jsonl", "final.json", "run.json")
_held: dict[Path, str] = {}  # folders whose lock this process holds -> the run token


def read_marker(out_dir: Path) -> dict[str, Any]:
    return read_json_object(out_dir / MARKER)


def check_output_folder(out_dir: Path, force: bool = False) -> None:
    """Raise ConfigError when ``out_dir`` cannot be used as an output folder (see the module docstring)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output.dir {out_dir}: exists and is not a folder")
    if not out_dir.exists() or force:
        return
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries or any(name in entries for name in SUELO_FILES):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise ConfigError(
        f"output.dir {out_dir}: holds files suelo did not write ({shown}); choose a new or empty folder, or pass "
        "--force to write into it (suelo then deletes only what it creates)"
    )


@contextmanager
def claimed_output(out_dir: Path, force: bool = False) -> Iterator[str]:
    """Check, create, mark and lock ``out_dir`` for this run; yields the run's token (recorded in the marker).

    Re-entrant: inside an enclosing claim of the same folder it yields that claim's token and locks nothing more.
    """
    out_dir = Path(out_dir)
    key = out_dir.resolve()
    if key in _held:
        yield _held[key]
        return
    check_output_folder(out_dir, force)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"output.dir {out_dir}: a parent of it is a file") from None
    try:
        with _locked(out_dir, key) as token:
            yield token
    except BaseException:
        # a run that failed before writing anything leaves no trace: the folder it made holds only its marker and
        # lock, which go with it (never anything else)
        if created and {p.name for p in out_dir.iterdir()} <= {MARKER, LOCK}:
            for name in (MARKER, LOCK):
                (out_dir / name).unlink(missing_ok=True)
            out_dir.rmdir()
        raise


@contextmanager
def _locked(out_dir: Path, key: Path) -> Iterator[str]:
    with open(out_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{out_dir}: another suelo run is writing to this folder") from None
        try:
            token = secrets.token_hex(4)
            marker = read_marker(out_dir)
            # every token a run here ever used: only temporaries carrying one of them are ever deleted
            tokens = [*[t for t in marker.get("run_tokens", []) if isinstance(t, str)][-99:], token]
            write_json_atomic(
                out_dir / MARKER,
                {
                    "format": "suelo-output",
                    "created": marker.get("created") or dt.datetime.now(dt.timezone.utc).isoformat(),
                    "suelo": __version__,
                    "run_tokens": tokens,
                    "pid": os.getpid(),
                },
            )
            _held[key] = token
            set_run_token(token)  # every temporary this process creates from now on carries it
            yield token
        finally:
            set_run_token(None)
            _held.pop(key, None)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the temporaries killed runs of this folder left behind: files named like suelo's temporaries *and*
    carrying a run token recorded in the folder's marker. Anything else, however it is named, is left alone."""
    tokens = set(read_marker(out_dir).get("run_tokens", []))
    removed = 0
    for path in out_dir.rglob(".*"):
        if path.is_file() and is_suelo_temporary(path.name) and temporary_token(path.name) in tokens:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
