"""Progress of ``suelo train`` on stderr: embedding and epochs, with loss, held-out loss and time left.

On a terminal a bar per stage (rich, as ``suelo run`` draws its block bar); otherwise, for logs of batch jobs,
one line every ``every`` epochs (or steps) and nothing for the embedding (its duration is logged when it ends).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class TrainProgress:
    """What training reports; this base reports nothing (the library default)."""

    def start(self, stage: str, total: int, unit: str) -> None:
        """A stage begins: ``total`` ``unit`` ("px" or "epochs") at most."""

    def update(self, stage: str, done: int, **fields: Any) -> None:
        """``done`` of the stage's total are finished; epochs pass ``loss``, ``val_loss`` and ``watched``."""

    def finish(self, stage: str) -> None:
        """The stage ended (possibly before its total: early stopping, time budget)."""


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StderrProgress(TrainProgress):
    """Bars on a terminal, a line every ``every`` epochs elsewhere."""

    def __init__(self, stream: TextIO | None = None, every: int = 10, terminal: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every = max(1, every)
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._started: dict[str, float] = {}
        self._total: dict[str, int] = {}
        self._unit: dict[str, str] = {}
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def start(self, stage: str, total: int, unit: str) -> None:
        self._started[stage], self._total[stage], self._unit[stage] = time.perf_counter(), total, unit
        if not self.terminal:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=True,
            )  # fmt: skip
            self._bar.start()
        self._tasks[stage] = self._bar.add_task(f"{stage} ({unit})", total=total, info="")

    def update(self, stage: str, done: int, **fields: Any) -> None:
        info = ""
        if "loss" in fields:
            info = f"loss {fields['loss']:.4f}, {fields.get('watched', 'val')} loss {fields['val_loss']:.4f}"
        if self.terminal:
            if self._bar is not None and stage in self._tasks:
                self._bar.update(self._tasks[stage], completed=done, info=info)
            return
        if self._unit.get(stage) in (None, "px") or done % self.every:  # the embedding's duration is logged instead
            return
        total = self._total[stage]
        elapsed = time.perf_counter() - self._started[stage]
        # with early stopping or a time budget the stage may end sooner: the time left is an upper bound
        left = elapsed / done * (total - done)
        unit = self._unit[stage].removesuffix("s")  # "epoch", "step"
        print(
            f"{stage}: {unit} {done}/{total}, {info}, {_duration(elapsed)} so far, at most {_duration(left)} left",
            file=self.stream,
            flush=True,
        )

    def finish(self, stage: str) -> None:
        if self._bar is not None and stage in self._tasks:
            self._bar.remove_task(self._tasks.pop(stage))
            if not self._tasks:
                self._bar.stop()
                self._bar = None
