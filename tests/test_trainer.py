"""The one training loop (suelo.trainer.fit) with a toy task, the class weights of both models, both models
trained through it, and the one training report writer."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suelo.train_progress import StderrProgress
from suelo.trainer import Schedule, TrainTask, class_weights, fit, seeded, write_training_report

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Toy(TrainTask):
    """A linear layer on fixed data whose watched losses are scripted, so stopping is predictable."""

    def __init__(self, watched: list[float]) -> None:
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(2, 2)
        self.watched = iter(watched)
        self.x, self.y = torch.randn(12, 2), torch.arange(12) % 2
        self.states: list[torch.Tensor] = []  # the weight after each round

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.layer]

    def param_groups(self) -> list[dict]:
        return [{"params": self.layer.parameters(), "lr": 0.1}]

    def batches(self, round_: int) -> Iterator[torch.Tensor]:
        yield from torch.arange(12).split(5)  # 5 + 5 + 2

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        return F.cross_entropy(self.layer(self.x[batch]), self.y[batch]), len(batch)

    def validate(self) -> dict[str, float]:
        assert not self.layer.training and not torch.is_grad_enabled()
        self.states.append(self.layer.weight.detach().clone())
        return {"val_loss": next(self.watched)}


def test_early_stopping_restores_the_best_round() -> None:
    task = Toy([1.0, 0.5, 0.6, 0.7, 0.8, 0.1])
    done = fit(task, Schedule(rounds=6, weight_decay=0.0, patience=3), "toy", "held-out")
    assert done.reason == "early_stopping" and done.rounds == 5 and done.best_round == 1 and done.best_loss == 0.5
    assert torch.equal(task.layer.weight, task.states[1]) and not task.layer.training
    assert [row["epoch"] for row in done.history] == [0, 1, 2, 3, 4]
    assert all(row["train_loss"] > 0 for row in done.history)  # the sample-weighted mean over 5 + 5 + 2


def test_without_keep_best_the_last_state_stays_and_min_delta_counts() -> None:
    task = Toy([1.0, 0.5, 0.6])
    done = fit(task, Schedule(3, 0.0, keep_best=False), "toy", "held-out")
    assert done.reason == "max_epochs" and done.best_round is None and done.best_loss is None
    assert torch.equal(task.layer.weight, task.states[-1])
    # a loss lower by less than min_delta is no improvement: round 0 stays the best
    task = Toy([1.0, 0.95, 0.9])
    assert fit(task, Schedule(3, 0.0, min_delta=0.2), "toy", "held-out").best_round == 0


def test_a_spent_time_budget_stops_after_one_round() -> None:
    task = Toy([1.0, 0.9, 0.8])
    done = fit(task, Schedule(3, 0.0, deadline=time.perf_counter()), "toy", "held-out")
    assert done.reason == "time_budget" and done.rounds == 1


def test_progress_and_log_of_a_fit() -> None:
    out, lines = io.StringIO(), []
    fit(Toy([1.0, 0.5]), Schedule(2, 0.0), "toy", "held-out", StderrProgress(out, 1, terminal=False), lines.append)
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == ["toy: epoch 1/2", "toy: epoch 2/2"]
    assert lines == [lines[0]] and lines[0].startswith("toy: 2 epochs (max epochs, restored epoch 2) in ")


def test_class_weights_of_both_models() -> None:
    labels = np.array([0, 0, 0, 0, 2])
    assert torch.allclose(class_weights(labels, 3, "balanced"), torch.tensor([5 / 12, 5 / 3, 5 / 3]))
    assert torch.equal(class_weights(labels, 3, "none"), torch.ones(3))
    present = class_weights(labels, 3, "sqrt_present")  # the segmenter's: absent classes weigh nothing
    assert (
        present[1] == 0 and present[[0, 2]].mean() == pytest.approx(1) and present[2] == pytest.approx(2 * present[0])
    )
    from suelo.errors import ConfigError

    with pytest.raises(ConfigError, match="class_weighting must be one of"):
        class_weights(labels, 3, "log")


def test_seeded_gives_the_same_draws_again() -> None:
    rng, gen = seeded(3)
    first = (rng.integers(0, 100, 5), torch.randperm(10, generator=gen), torch.rand(2))
    rng, gen = seeded(3)
    assert np.array_equal(first[0], rng.integers(0, 100, 5)) and torch.equal(
        first[1], torch.randperm(10, generator=gen)
    )
    assert torch.equal(first[2], torch.rand(2))


def test_the_segmenter_trains_through_the_shared_loop() -> None:
    from suelo.models.segmenter import segmenter_features
    from suelo.synthetic_city import CLASSES, make_synthetic_city
    from suelo.train_segmenter import SegmenterTrainConfig, train_segmenter

    city = make_synthetic_city(seed=0, shape=(48, 48))
    features = segmenter_features(city.cube)
    config = SegmenterTrainConfig(chip=16, batch_size=2, steps=7, block=16, guard=2, eval_every=3, depth=1,
                                  base_width=4)  # fmt: skip
    out = io.StringIO()
    model, metrics = train_segmenter(features, city.labels, CLASSES, config=config,
                                     progress=StderrProgress(out, 1, terminal=False))  # fmt: skip
    history = metrics["history"]
    assert [row["step"] for row in history] == [3, 6, 7]  # a round is eval_every steps, the last one shorter
    best = int(np.argmin([row["val_loss"] for row in history]))
    assert metrics["best_step"] == history[best]["step"] and metrics["best_val_loss"] == history[best]["val_loss"]
    assert metrics["stopping"]["reason"] == "max_epochs" and metrics["stopping"]["evaluations"] == 3
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "segmenter: step 3/7", "segmenter: step 6/7", "segmenter: step 7/7",
    ]  # fmt: skip
    again, metrics_again = train_segmenter(features, city.labels, CLASSES, config=config)
    assert metrics_again["history"] == history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    patient = SegmenterTrainConfig(**{**config.to_dict(), "steps": 30, "eval_every": 1, "patience": 1})
    stopped = train_segmenter(features, city.labels, CLASSES, config=patient)[1]
    assert stopped["stopping"]["reason"] == "early_stopping" and len(stopped["history"]) < 30


def test_one_report_writer_for_both_models(tmp_path: Path) -> None:
    from suelo.threshold import calibrate_and_certify

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 3 * np.eye(3)[targets]
    confidence = calibrate_and_certify(logits, targets, "temperature", 0.8)
    matrix = {"matrix": np.eye(3, dtype=int).tolist(), "names": ["a", "b", "c"]}
    cm = {"confusion_matrix": matrix, "overall_accuracy": 1.0, "macro_f1": 1.0}
    files = write_training_report(tmp_path / "report", logits, targets, confidence["calibration"],
                                  confidence["thresholds"], {"validation": cm}, (cm, "title"))  # fmt: skip
    assert [f.name for f in files] == [
        "metrics.json", "confusion.png", "reliability.png", "risk_coverage.json", "risk_coverage.png",
    ]  # fmt: skip
    assert all(f.is_file() for f in files) and files[1].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(files[0].read_text()) == {"validation": cm}
    only = write_training_report(
        tmp_path / "bare", logits, targets, confidence["calibration"], confidence["thresholds"]
    )
    assert [f.name for f in only] == ["reliability.png", "risk_coverage.json", "risk_coverage.png"]
