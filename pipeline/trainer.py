"""The one training loop of suelo's models, with task hooks for what differs between them, and the one report
writer of a training run.

Both models are trained the same way: AdamW over mini-batches, class-weighted cross-entropy, the watched
(held-out) loss scored after every *round*, the state of the round with the lowest watched loss kept, early
stopping after ``patience`` rounds without a lower one, a time budget, progress and seeded randomness. What differs
is a :class:`TrainTask`:

- the land-cover head (``suelo.train``): a round is an epoch over shuffled samples, the watched split is the
  stopping split of whole blocks (the calibration split only for display when there is none);
- the segmenter (``suelo.train_segmenter``): a round is ``eval_every`` steps of random augmented chips under a
  one-cycle learning-rate schedule, the watched split is the validation blocks predicted whole.

The loop keeps the exact order in which the two loops it replaces drew random numbers and stepped the optimiser,
so a seed gives the weights it gave before (the shipped models were made by those loops).
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

from suelo.errors import ConfigError
from suelo.train_progress import TrainProgress

STOP_REASONS = ("early_stopping", "max_epochs", "time_budget")


def seeded(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed torch's global generator (initial weights, dropout) and return fresh numpy and torch generators for a
    task's own draws (sample order, chips, augmentation), so a run depends on ``seed`` alone (on CPU)."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def class_weights(labels: np.ndarray, n_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Loss weight per class from the training labels (class indices).

    ``balanced`` ~ 1/frequency, ``sqrt`` ~ 1/sqrt(frequency) (the land-cover head's default), ``none`` all ones;
    ``sqrt_present`` ~ 1/sqrt(frequency) scaled to a mean of 1 over the classes present and 0 for absent ones (the
    segmenter's: rare classes matter, but a class of 20 pixels must not dominate the loss). The scale cancels in
    the weighted mean of cross-entropy; the modes are kept apart because each model was trained with its own
    floating-point values.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if mode == "sqrt_present":
        weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
        return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)
    balanced = len(labels) / (n_classes * np.maximum(counts, 1))
    table = {"balanced": balanced, "sqrt": np.sqrt(balanced), "none": np.ones(n_classes)}
    if mode not in table:
        raise ConfigError(f"class_weighting must be one of {sorted([*table, 'sqrt_present'])}, got {mode!r}")
    return torch.tensor(table[mode], dtype=torch.float32)


class TrainTask(ABC):
    """What one model's training needs from :func:`fit`: its modules, batches, loss and watched score.

    A *round* is the unit after which the watched loss is scored (an epoch, or ``eval_every`` steps).
    """

    #: what progress counts ("epochs", "steps")
    unit: str = "epochs"

    @property
    @abstractmethod
    def modules(self) -> Sequence[torch.nn.Module]:
        """The trained modules: switched to train/eval mode, and whose state the best round restores."""

    @abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (each with its ``lr``)."""

    def scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """A learning-rate scheduler stepped after every batch, or None (a constant rate)."""
        return None

    @abstractmethod
    def batches(self, round_: int) -> Iterable[Any]:
        """The mini-batches of round ``round_`` (0-based), drawn lazily in training order."""

    @abstractmethod
    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The weighted training loss of ``batch`` and how many samples it holds."""

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Scores on the watched split (modules in eval mode, no gradients): ``val_loss`` and any others."""

    def position(self, round_: int) -> int:
        """Progress after round ``round_``, in :attr:`unit` (epochs: ``round_ + 1``)."""
        return round_ + 1

    def record(self, round_: int, losses: list[tuple[float, int]], scores: dict[str, float]) -> dict[str, float]:
        """The history row of a round from its batches' ``(loss, samples)`` and the watched scores (default: the
        epoch and the sample-weighted mean training loss)."""
        total = sum(loss * n for loss, n in losses)
        return {"epoch": round_, "train_loss": total / sum(n for _, n in losses), **scores}


@dataclass(frozen=True)
class Schedule:
    """The shared knobs of :func:`fit`."""

    rounds: int  # at most this many rounds; always at least one
    weight_decay: float
    patience: int = 0  # stop after this many rounds without a lower watched loss; 0: never stop early
    keep_best: bool = True  # restore the state of the round with the lowest watched loss at the end
    min_delta: float = 0.0  # a watched loss must be this much lower than the best to count as lower
    deadline: float | None = None  # time.perf_counter() seconds: no round that would end later is started


@dataclass
class Fit:
    """What :func:`fit` did: one history row per round and why and when it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    reason: str = "max_epochs"  # one of STOP_REASONS
    best_round: int | None = None  # 0-based; None without keep_best
    best_loss: float | None = None
    seconds: float = 0.0

    @property
    def rounds(self) -> int:
        return len(self.history)


def fit(
    task: TrainTask,
    schedule: Schedule,
    tag: str,
    watched: str,
    progress: TrainProgress | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> Fit:
    """Train ``task`` for at most ``schedule.rounds`` rounds; the modules end in eval mode with the kept state."""
    progress = progress or TrainProgress()
    modules = list(task.modules)
    optimizer = torch.optim.AdamW(task.param_groups(), weight_decay=schedule.weight_decay)
    scheduler = task.scheduler(optimizer)
    result = Fit()
    best, best_state, bad = float("inf"), None, 0
    began = time.perf_counter()
    progress.start(tag, task.position(schedule.rounds - 1), task.unit)
    for round_ in range(schedule.rounds):
        for m in modules:
            m.train()
        losses = []
        for batch in task.batches(round_):
            loss, n = task.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append((loss.item(), n))
        for m in modules:
            m.eval()
        with torch.no_grad():
            scores = task.validate()
        row = task.record(round_, losses, scores)
        result.history.append(row)
        val_loss = scores["val_loss"]
        progress.update(tag, task.position(round_), loss=row["train_loss"], val_loss=val_loss, watched=watched)
        if schedule.keep_best:
            if val_loss < best - schedule.min_delta:
                best, result.best_round, bad = val_loss, round_, 0
                best_state = [copy.deepcopy(m.state_dict()) for m in modules]
            else:
                bad += 1
                if schedule.patience > 0 and bad >= schedule.patience:
                    result.reason = "early_stopping"
                    break
        now = time.perf_counter()
        # the next round would end after the deadline (rounds take about as long as the ones so far)
        ends = now + (now - began) / (round_ + 1)
        if schedule.deadline is not None and round_ + 1 < schedule.rounds and ends > schedule.deadline:
            result.reason = "time_budget"
            break
    progress.finish(tag)
    if best_state is not None:
        for m, state in zip(modules, best_state, strict=True):
            m.load_state_dict(state)
        result.best_loss = best
    result.seconds = round(time.perf_counter() - began, 2)
    last = result.history[-1]
    kept = result.best_round if best_state is not None else None
    restored = f", restored {task.unit[:-1]} {task.position(kept)}" if kept is not None else ""
    done = f"{task.position(result.rounds - 1)} {task.unit}"
    log(
        f"{tag}: {done} ({result.reason.replace('_', ' ')}{restored}) in {result.seconds:.1f} s, "
        f"{watched} loss {last['val_loss']:.4f}, train loss {last['train_loss']:.4f}"
    )
    return result


# -- the report of a training run ---------------------------------------------------------------------------------


def write_training_report(
    folder: str | Path,
    logits: np.ndarray,
    targets: np.ndarray,
    calibration: dict[str, Any],
    thresholds: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    confusion: tuple[dict[str, Any], str] | None = None,
) -> list[Path]:
    """The figures of a trained model's calibration split, for both models: ``reliability.png`` (before and
    after calibration), ``risk_coverage.json``/``.png`` (with the certified threshold), and optionally
    ``metrics.json`` and ``confusion.png`` (``confusion`` = (classification metrics, title)). Returns the paths."""
    from suelo.atomic import write_json_atomic
    from suelo.calibrate import Calibration, plot_reliability, reliability
    from suelo.evaluate import plot_confusion
    from suelo.threshold import ThresholdChoice, confidence_score, write_risk_coverage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if metrics is not None:
        write_json_atomic(folder / "metrics.json", metrics)
        written.append(folder / "metrics.json")
    if confusion is not None:
        plot_confusion(confusion[0], folder / "confusion.png", confusion[1])
        written.append(folder / "confusion.png")
    fitted = Calibration.from_dict(calibration)
    calibrated = fitted.apply(logits)
    plot_reliability(
        reliability(softmax(logits, axis=1), targets), reliability(calibrated, targets), folder / "reliability.png",
        title=f"Validation reliability ({fitted.method} scaling)",
    )  # fmt: skip
    scores = confidence_score(calibrated, thresholds["policy"]["score"])
    choice = ThresholdChoice.from_dict(thresholds["report"]["global"])
    risk = folder / "risk_coverage.json", folder / "risk_coverage.png"
    write_risk_coverage(scores, calibrated.argmax(1) == targets, choice, *risk)
    return [*written, folder / "reliability.png", *risk]
