"""Which attribution method and baseline for ``suelo explain``: the measurement behind ``suelo.explain``'s choice.

``python -m benchmarks.explain_methods [--samples 120]`` explains, with the shipped model
(models/landcover_default.pt), the reference-class logit of real WorldCereal samples of its stored calibration
(validation) split, by:

- captum's integrated gradients (``IntegratedGradients``), Gauss-Legendre quadrature at 8, 16, 32 and 64 steps and
  the trapezoid rule (``riemann_trapezoid``) at 32, from the mean baseline of ``suelo.explain``; Gauss-Legendre at
  16, 32 and 64 from the zero baseline (Presto's normalized zeros at 0 N 0 E);
- SHAP's ``GradientExplainer`` (expected gradients) at 32 and 64 path samples with the mean baseline as its one
  background point (then it is integrated gradients by Monte Carlo: random points on the same straight path), and at
  64 with 50 real validation samples as background (expected gradients proper: its sum is ``f(x) - E f(background)``
  in expectation only);
- SHAP's ``DeepExplainer`` (DeepLIFT rescale rules), with 20 real samples as background; on this transformer
  (scaled dot-product attention, layer norms) it may refuse or break additivity: the error is reported.

Every method sees the same function: the encoder and head with each sample's mask, Dynamic World and start month
held fixed, and a sample's masked values the same in every baseline and background point (zero attribution).

Per method: the completeness error ``|sum of attributions - (logit - baseline logit)|`` (for the SHAP explainers the
baseline logit is the mean over their background), max and mean, and relative to ``|logit - baseline logit|`` (over
gaps of at least 0.01 logit); seconds per explained logit; and the agreement of the token rankings (months x band
groups, terrain, lat/lon; tokens present in the sample) with the reference, integrated gradients at 64
Gauss-Legendre steps from the mean baseline: Spearman's rho per sample (median, 10th percentile) and how often the
top token is the same. Also: the completeness of every class's logit (not only the reference class's) at the
default steps; how much the mean baseline depends on the set it is taken from (attributions with the means of two
disjoint halves of the validation split, Spearman); and which baseline puts the mass where the signal is, on a
model trained by ``suelo.train`` on WorldCereal series in which two classes differ in one month only
(:func:`one_month_samples`, also the data of tests/test_explain.py).

Writes benchmarks/explain_methods_results.json and prints a table; benchmarks/EXPLAIN.md is written from them.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from suelo import explain
from suelo.evaluate import samples_legend
from suelo.legend import Legend
from suelo.models.artifact import ModelArtifact, load_artifact
from suelo.samples import Samples, load_samples

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "landcover_default.pt"
WORLDCEREAL = sorted((ROOT / "data" / "worldcereal").glob("*.*parquet"))
RESULTS = Path(__file__).with_name("explain_methods_results.json")
REFERENCE = "IG gausslegendre 64 (mean baseline)"

#: One month's spectrum of each synthetic class, bare soil and dense green vegetation, in these bands (the shipped
#: model's and the WorldCereal extractions').
SPECTRUM_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
SOIL = np.array([0.08, 0.11, 0.14, 0.17, 0.19, 0.21, 0.23, 0.30, 0.26], dtype=np.float32)
GREEN = np.array([0.03, 0.06, 0.03, 0.10, 0.30, 0.40, 0.45, 0.22, 0.10], dtype=np.float32)
SIGNAL_MONTH = 5  # the sixth month of the series


def real_samples(artifact: ModelArtifact) -> Samples:
    """Every WorldCereal sample of the repository, loaded with the legend ``suelo evaluate`` would use."""
    return load_samples(WORLDCEREAL, samples_legend(artifact.legend))


def one_month_samples(
    real: Samples, n: int = 300, month: int = SIGNAL_MONTH, noise: float = 0.05, seed: int = 0
) -> tuple[Samples, Legend]:
    """Two classes that differ in one month only, in real format: one real WorldCereal series with no missing
    value (the same for every sample, at its location within ~1 km), each band and month scaled by ``1 + N(0,
    noise)``; at ``month`` the reflectance is bare soil (class 1) or green vegetation (class 2), noised alike.

    One series rather than many: with many, the other months differ between samples far more than the noise, a
    Presto embedding mixes them into every direction, and the model's logit really depends on them (it then also
    classifies worse); one series keeps "the class signal is in one month" true of the model, not only of the data.
    """
    rng = np.random.default_rng(seed)
    complete = np.flatnonzero(np.isfinite(real.reflectance).all(axis=(1, 2)))
    base = real.subset(np.full(n, rng.choice(complete)))
    labels = rng.permutation(np.repeat([1, 2], [n // 2, n - n // 2]))
    reflectance = base.reflectance * rng.normal(1, noise, base.reflectance.shape).astype(np.float32)
    bands = list(base.band_names)
    soil, green = (dict(zip(SPECTRUM_BANDS, spectrum, strict=True)) for spectrum in (SOIL, GREEN))
    jitter = rng.normal(1, noise, (n, len(bands))).astype(np.float32)
    spectra = [[spectrum.get(b, np.nan) for b in bands] for spectrum in (soil, green)]
    reflectance[:, month] = np.where((labels == 2)[:, None], spectra[1], spectra[0]) * jitter
    legend = Legend.from_list(
        [{"code": 1, "name": f"soil in month {month + 1}", "color": "#a6761d"},
         {"code": 2, "name": f"green in month {month + 1}", "color": "#1b9e77"}],
        "one-month synthetic legend",
    )  # fmt: skip
    samples = Samples(
        reflectance, base.band_names, base.start_month, base.latlons + rng.normal(0, 0.01, (n, 2)), labels,
        np.array([f"one-month-{i}" for i in range(n)], dtype=object),
    )  # fmt: skip
    return samples, legend


def train_one_month_model(real: Samples, seed: int = 0) -> tuple[ModelArtifact, Samples]:
    """A land-cover model trained by ``suelo.train`` on :func:`one_month_samples` (frozen pretrained Presto, the
    default head; 100 epochs, no early stopping, no RandomForest): about 2 s on 2 cores."""
    from suelo.train import TrainConfig, train_model

    samples, legend = one_month_samples(real.select_bands(SPECTRUM_BANDS), seed=seed)
    config = TrainConfig(bands=SPECTRUM_BANDS, max_epochs=100, early_stopping=False, rf_baseline=False,
                         seed=seed, block_m=10_000.0)  # fmt: skip
    return train_model(samples, legend, config).artifact, samples


# methods --------------------------------------------------------------------------------------------------------


class _OneSample(nn.Module):
    """One sample's logit as a function of ``(x, latlons)`` only, its mask, Dynamic World, month held fixed: what
    SHAP's explainers take (they pass no extra arguments)."""

    def __init__(self, model: explain.LogitsOfInputs, mask: torch.Tensor, dw: torch.Tensor, month: int, target: int):
        super().__init__()
        self.model, self.mask, self.dw, self.month, self.target = model, mask, dw, month, target

    def forward(self, x: torch.Tensor, latlons: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        months = torch.full((b,), self.month, dtype=torch.long)
        logits = self.model(x, latlons, self.mask.expand(b, -1, -1), self.dw.expand(b, -1), months)
        return logits[:, self.target : self.target + 1]


def tokens_of(channels: np.ndarray, latlon: np.ndarray) -> np.ndarray:
    """``(N, T, 17)``, ``(N, 2)`` -> ``(N, T * groups + 2)``: every token of each sample as one vector."""
    tokens, terrain, ll = explain.token_attributions(channels, latlon)
    return np.concatenate([tokens.reshape(len(tokens), -1), terrain[:, None], ll[:, None]], axis=1)


def run_ig(model: explain.LogitsOfInputs, a: dict[str, np.ndarray], target: np.ndarray, baseline: Any, steps: int,
           integration: str = "gausslegendre") -> dict[str, Any]:  # fmt: skip
    result = explain.attribute(model, a["x"], a["mask"], a["dw"], a["latlons"], a["month"], target=target,
                               baseline=baseline, steps=steps, integration=integration)  # fmt: skip
    return {
        "tokens": tokens_of(result.channels[:, 0], result.latlon_channels[:, 0]),
        "error": result.error()[:, 0],
        "gap": result.gap()[:, 0],
        "seconds": result.seconds,
    }


def run_shap(
    kind: str,
    model: explain.LogitsOfInputs,
    a: dict[str, np.ndarray],
    target: np.ndarray,
    background: tuple[np.ndarray, np.ndarray],
    nsamples: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """SHAP's gradient (``kind="gradient"``) or deep explainer, one sample at a time (its own mask in the model
    and in the background); ``background``: ``(M, T, 17)`` and ``(M, 2)`` points."""
    import shap

    tokens, errors, gaps = [], [], []
    started = time.perf_counter()
    bg_x, bg_ll = background
    for i in range(len(a["x"])):
        mask = torch.from_numpy(a["mask"][i : i + 1])
        one = _OneSample(model, mask, torch.from_numpy(a["dw"][i : i + 1]), int(a["month"][i]), int(target[i]))
        x = torch.from_numpy(a["x"][i : i + 1])
        ll = torch.from_numpy(a["latlons"][i : i + 1])
        data = [torch.from_numpy(np.where(a["mask"][i], a["x"][i], bg_x).astype(np.float32)), torch.from_numpy(bg_ll)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "gradient":
                explainer = shap.GradientExplainer(one, data, batch_size=max(nsamples, 1))
                values = explainer.shap_values([x, ll], nsamples=nsamples, rseed=seed + i)
            else:
                explainer = shap.DeepExplainer(one, data)
                values = explainer.shap_values([x, ll], check_additivity=False)
        vx, vl = (np.asarray(v, dtype=np.float64).reshape(np.asarray(v).shape[: 3 if j == 0 else 2])
                  for j, v in enumerate(values))  # fmt: skip
        tokens.append(tokens_of(vx, vl)[0])
        with torch.no_grad():
            fx = float(one(x, ll)[0, 0])
            fb = float(one(data[0], data[1]).mean())
        gaps.append(fx - fb)
        errors.append(float(vx.sum() + vl.sum()) - (fx - fb))
    return {"tokens": np.array(tokens), "error": np.array(errors), "gap": np.array(gaps),
            "seconds": time.perf_counter() - started}  # fmt: skip


def agreement(tokens: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Spearman's rho between a method's and the reference's token attributions, per sample over the tokens the
    sample has (nonzero in the reference; masked tokens are exactly zero in both), and top-token agreement."""
    rhos, same_top = [], []
    for mine, ref in zip(tokens, reference, strict=True):
        present = ref != 0
        if present.sum() < 3:
            continue
        rho = spearmanr(mine[present], ref[present]).statistic
        rhos.append(float(rho) if np.isfinite(rho) else 0.0)
        same_top.append(float(np.argmax(np.abs(mine)) == np.argmax(np.abs(ref))))
    return {
        "spearman_median": float(np.median(rhos)),
        "spearman_p10": float(np.percentile(rhos, 10)),
        "top_token_same": float(np.mean(same_top)),
    }


def method_row(name: str, out: dict[str, Any], reference: np.ndarray | None, n: int) -> dict[str, Any]:
    stats = explain.completeness_stats(out["error"], out["gap"])
    row = {
        "method": name,
        "max_abs_error": stats["max_abs_error"],
        "mean_abs_error": stats["mean_abs_error"],
        "max_relative_error": stats["max_relative_error"],
        "mean_abs_gap": stats["mean_abs_gap"],
        "ms_per_logit": 1000 * out["seconds"] / n,
    }
    if reference is not None:
        row |= agreement(out["tokens"], reference)
    return row


def one_month_check(real: Samples) -> dict[str, Any]:
    """Share of the absolute attribution mass in the signal month, for class 2's samples of the one-month model,
    per baseline (32 Gauss-Legendre steps); and how often the signal month is the most influential one."""
    artifact, samples = train_one_month_model(real)
    model = explain.model_of(artifact)
    a = explain.sample_arrays(artifact, samples)
    green = np.flatnonzero(samples.labels == 2)[:40]
    point = explain.baseline_values(a["x"], a["mask"], a["latlons"], "mean")  # the whole set's mean
    out: dict[str, Any] = {"accuracy": artifact.meta["metrics"]["validation"]["overall_accuracy"], "n": len(green)}
    for kind, baseline in (("mean", point), ("zeros", "zeros")):
        g = {k: v[green] for k, v in a.items()}
        ones = np.ones(len(green), dtype=np.int64)
        result = explain.attribute(
            model, g["x"], g["mask"], g["dw"], g["latlons"], g["month"], target=ones, baseline=baseline, steps=32
        )
        tokens, terrain, latlon = result.tokens()
        mass = explain.monthly_mass(tokens[:, 0])
        share = mass[:, SIGNAL_MONTH] / (mass.sum(1) + np.abs(terrain[:, 0]) + np.abs(latlon[:, 0]))
        out[kind] = {
            "signal_month_share_mean": float(share.mean()),
            "signal_month_share_min": float(share.min()),
            "signal_month_most_influential": float((mass.argmax(1) == SIGNAL_MONTH).mean()),
            "latlon_share_mean": float((np.abs(latlon[:, 0]) / (mass.sum(1) + np.abs(latlon[:, 0]))).mean()),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=120, help="validation samples explained (seeded choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    artifact = load_artifact(MODEL)
    real = real_samples(artifact)
    val, info = explain.select_samples(artifact, real, "stored")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(val))
    chosen = val.subset(np.sort(order[: args.samples]))
    rest = val.subset(np.sort(order[args.samples :]))
    a = explain.sample_arrays(artifact, chosen)
    codes = list(artifact.legend.codes)
    target = np.array([codes.index(int(c)) for c in chosen.labels])
    model = explain.model_of(artifact)
    mean_point = explain.baseline_values(a["x"], a["mask"], a["latlons"], "mean")
    n = len(target)
    runs: dict[str, dict[str, Any]] = {}

    def timed(name: str, run: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            runs[name] = run()
        except Exception as exc:  # a method that cannot explain this model is a result, not a crash
            runs[name] = {"failed": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)

    print(f"{n} validation samples of {MODEL.name} ({info['split']} split, {info['n']} found)", flush=True)
    timed(REFERENCE, lambda: run_ig(model, a, target, mean_point, 64))
    for steps in (8, 16, 32):
        timed(f"IG gausslegendre {steps} (mean baseline)", lambda s=steps: run_ig(model, a, target, mean_point, s))
    timed("IG riemann_trapezoid 32 (mean baseline)",
          lambda: run_ig(model, a, target, mean_point, 32, "riemann_trapezoid"))  # fmt: skip
    for steps in (16, 32, 64):
        timed(f"IG gausslegendre {steps} (zero baseline)", lambda s=steps: run_ig(model, a, target, "zeros", s))
    one_point = (mean_point[0][None], mean_point[1][None])
    for ns in (32, 64):
        timed(f"SHAP GradientExplainer {ns} (mean baseline)",
              lambda k=ns: run_shap("gradient", model, a, target, one_point, k, args.seed))  # fmt: skip
    bg = explain.sample_arrays(artifact, rest.subset(np.arange(min(50, len(rest)))))
    background = (explain.clean_inputs(bg["x"], bg["mask"])[0], bg["latlons"])
    timed("SHAP GradientExplainer 64 (50 real samples)",
          lambda: run_shap("gradient", model, a, target, background, 64, args.seed))  # fmt: skip
    timed("SHAP DeepExplainer (20 real samples)",
          lambda: run_shap("deep", model, a, target, (background[0][:20], background[1][:20])))  # fmt: skip

    reference = runs[REFERENCE]["tokens"]
    rows = []
    for name, out in runs.items():
        if "failed" in out:
            rows.append({"method": name, "failed": out["failed"]})
        else:
            rows.append(method_row(name, out, None if name == REFERENCE else reference, n))

    t0 = time.perf_counter()
    every = explain.attribute(model, a["x"], a["mask"], a["dw"], a["latlons"], a["month"], baseline=mean_point,
                              steps=explain.DEFAULT_STEPS)  # fmt: skip
    all_classes = every.completeness() | {"ms_per_logit": 1000 * every.seconds / every.error().size}
    print(f"  every class's logit, {explain.DEFAULT_STEPS} steps: {time.perf_counter() - t0:.1f} s", flush=True)

    # how much the mean baseline depends on the set: the means of two disjoint halves of the validation split
    halves = np.array_split(rng.permutation(len(val)), 2)
    half_tokens = []
    for half in halves:
        h = explain.sample_arrays(artifact, val.subset(np.sort(half)))
        point = explain.baseline_values(h["x"], h["mask"], h["latlons"], "mean")
        half_tokens.append(run_ig(model, a, target, point, 16)["tokens"])
    stability = agreement(half_tokens[0], half_tokens[1])
    t0 = time.perf_counter()
    one_month = one_month_check(real)
    print(f"  one-month model: {time.perf_counter() - t0:.1f} s", flush=True)

    results = {
        "model": MODEL.name,
        "samples": n,
        "split": info["split"],
        "target": "each sample's reference-class raw logit",
        "reference": REFERENCE,
        "torch_threads": torch.get_num_threads(),
        "methods": rows,
        "every_class_logit": all_classes,
        "mean_baseline_halves_agreement": stability,
        "one_month_signal": one_month,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print()
    header = "| method | max abs err | mean abs err | max rel err | ms/logit | Spearman median | p10 | top token same |"
    print(header)
    print("|" + "---|" * 8)
    for row in rows:
        if "failed" in row:
            print(f"| {row['method']} | failed: {row['failed'][:120]} |")
            continue
        agree = (f"{row['spearman_median']:.3f} | {row['spearman_p10']:.3f} | {row['top_token_same']:.2f}"
                 if "spearman_median" in row else "(reference) | | ")  # fmt: skip
        print(f"| {row['method']} | {row['max_abs_error']:.2e} | {row['mean_abs_error']:.2e} | "
              f"{row['max_relative_error']:.2e} | {row['ms_per_logit']:.1f} | {agree} |")  # fmt: skip
    print(f"\nevery class's logit at {explain.DEFAULT_STEPS} steps: max abs error {all_classes['max_abs_error']:.2e}, "
          f"max relative {all_classes['max_relative_error']:.2e} over {all_classes['n_logits']} logits")  # fmt: skip
    print(f"mean baseline from two halves of the split: Spearman median {stability['spearman_median']:.3f}, "
          f"top token same {stability['top_token_same']:.2f}")  # fmt: skip
    print(f"one-month model (validation accuracy {one_month['accuracy']:.3f}): signal month share "
          f"{one_month['mean']['signal_month_share_mean']:.1%} (mean baseline) vs "
          f"{one_month['zeros']['signal_month_share_mean']:.1%} (zero baseline)")  # fmt: skip
    print(f"wrote {RESULTS} in {results['seconds']} s")


if __name__ == "__main__":
    main()
