"""Progress of a run: a bar on a terminal (blocks, px/s, ETA), plain lines in a log, or JSON lines for schedulers.

``log_format='json'``: every event is one JSON object on one line of stderr (:func:`json_line`): ``start``,
``plan``, ``block_done``, ``block_retry``, ``block_failed``, then ``run_done``, ``run_failed`` or ``up_to_date``;
the CLI adds ``error`` (``suelo.cli.reports_errors``). ``log_format='text'``: on stdout (where the bar always
was, so stderr holds the errors only), a bar on a terminal, otherwise (a log file, the journal, a scheduler's
capture) one plain line when a block is done, at most every :data:`LINE_EVERY_S` seconds (and always for the first
and the last block). The time left is the run's own rate: elapsed / blocks done in this run * blocks left, once
one is done.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from suelo.orchestrate.backends import BlockFailure

#: Seconds between two plain progress lines (text format, stderr not a terminal).
LINE_EVERY_S = 5.0


def json_line(name: str, **fields: Any) -> str:
    """One event as the JSON line ``--log-format json`` writes: its local time, its name, then its fields."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": name, **fields}
    return json.dumps(record, default=str)


def clock(seconds: float) -> str:
    """``H:MM:SS`` (hours beyond 24 stay hours: ``26:03:04``)."""
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """What a run reports while its blocks run.

    ``start`` is emitted at construction; :meth:`begin` shows the bar (or the first plain line) once the run knows
    it has blocks to run, so a run that is up to date shows none. ``stream`` (text progress, default stdout),
    ``terminal`` (default: whether that stream is one) and ``log_stream`` (JSON lines, default stderr) are for tests.
    """

    def __init__(
        self,
        total: int,
        already: int,
        log_format: str,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        every_s: float = LINE_EVERY_S,
        log_stream: TextIO | None = None,
    ) -> None:
        self.total, self.already, self.done = total, already, already
        self.started = time.perf_counter()
        self.pixels = 0
        self.json = log_format == "json"
        self.stream = stream or sys.stdout
        self.log_stream = log_stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.every_s = every_s
        self._last_line: float | None = None
        self._bar: Any = None
        self.event("start", blocks=total, already_done=already)

    def event(self, name: str, **fields: Any) -> None:
        """One JSON line (``log_format='json'``); nothing in text format."""
        if self.json:
            print(json_line(name, **fields), file=self.log_stream, flush=True)

    def begin(self) -> None:
        """Blocks start to run: the bar on a terminal, a first plain line in a log."""
        self.started = time.perf_counter()  # the time left is this run's rate: not counting planning
        if self.json:
            return
        if not self.terminal:
            self._line(f"blocks: {self.total - self.done} to run of {self.total}")
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"), console=Console(file=self.stream), transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task("blocks", total=self.total, completed=self.done, rate="", eta="")
        self._bar.start()

    def seconds_left(self) -> float | None:
        """Elapsed / blocks done in this run * blocks left; None before this run has finished a block."""
        ran = self.done - self.already
        if ran <= 0:
            return None
        return (time.perf_counter() - self.started) / ran * (self.total - self.done)

    def block_done(self, entry: dict[str, Any]) -> None:
        self.done += 1
        self.pixels += entry["pixels"]
        elapsed = time.perf_counter() - self.started
        rate = self.pixels / max(elapsed, 1e-9)
        left = self.seconds_left()
        eta = "" if left is None else f"eta {clock(left)}"
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate / 1e3:.1f} kpx/s", eta=eta)
        elif not self.json and not self.terminal:
            now = time.perf_counter()
            due = self._last_line is None or now - self._last_line >= self.every_s
            if due or self.done == self.total or self.done - self.already == 1:
                share = self.done / self.total if self.total else 1.0
                self._line(f"blocks: {self.done}/{self.total} done ({share:.0%}), {rate / 1e3:.1f} kpx/s, "
                           f"elapsed {clock(elapsed)}, {eta or 'eta -'}")  # fmt: skip
        self.event("block_done", block=entry["block"], seconds=entry["seconds"], done=self.done, total=self.total,
                   px_per_s=round(rate, 1), eta_s=None if left is None else round(left, 1),
                   worker=entry.get("worker"))  # fmt: skip

    def block_failed(self, failure: BlockFailure) -> None:
        self.event("block_failed", block=failure.block, error=failure.error, attempts=failure.attempts)

    def block_retry(self, failure: BlockFailure, attempt: int) -> None:
        """A block failed on an error that may be transient and starts again (attempt ``attempt``)."""
        self.event("block_retry", block=failure.block, error=failure.error, attempt=attempt)
        if not self.json and not self.terminal:
            self._line(f"block {failure.block} failed ({failure.error}); attempt {attempt}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self._last_line = time.perf_counter()
