"""Progress of a run: a bar on a terminal (blocks, px/s, ETA) or JSON lines for schedulers (``log_format='json'``)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from suelo.orchestrate.backends import BlockFailure


class Progress:
    def __init__(self, total: int, already: int, log_format: str) -> None:
        self.total, self.done, self.started = total, already, time.perf_counter()
        self.pixels = 0
        self.json = log_format == "json"
        self._bar: Any = None
        if not self.json and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self._task = self._bar.add_task("blocks", total=total, completed=already, rate="")
            self._bar.start()
        self.event("start", blocks=total, already_done=already)

    def event(self, name: str, **fields: Any) -> None:
        if self.json:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": name, **fields}
            print(json.dumps(record, default=str), file=sys.stderr, flush=True)

    def block_done(self, entry: dict[str, Any]) -> None:
        self.done += 1
        self.pixels += entry["pixels"]
        rate = self.pixels / max(time.perf_counter() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate / 1e3:.1f} kpx/s")
        self.event("block_done", block=entry["block"], seconds=entry["seconds"], done=self.done, total=self.total,
                   px_per_s=round(rate, 1), worker=entry.get("worker"))  # fmt: skip

    def block_failed(self, failure: BlockFailure) -> None:
        self.event("block_failed", block=failure.block, error=failure.error, attempts=failure.attempts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
