"""Which novelty score: the measurement behind ``suelo.novelty``'s choice.

``python -m benchmarks.novelty_methods [--seeds 10]`` embeds the real WorldCereal samples (and the hand-labelled
built-up pixels of the Belgian sample) once with the pretrained Presto encoder, then for each spatial split seed
(10 km blocks, 30 % of the in-legend samples as the in-distribution test set) fits every candidate score on the
training points and prints its AUROC (scikit-learn) of novel points against the in-distribution test points:

- leave-one-class-out: fitted without one class, that class is novel (5 folds),
- leave-one-region-out: fitted without one of the three extraction files, its points are novel (3 folds),
- built-up: fitted on all in-legend training points; the Belgium village/road/farmyard pixels and the WorldCereal
  built-up points are novel,
- Slovenia leave-one-class-out: a legend of well separated classes (forest, grassland, shrubland, artificial
  surface) on the eo-learn patch (L1C, 3 months), 200 m blocks, at most 3,000 training pixels per fit.

Candidates: class-conditional Gaussians with a shared Ledoit-Wolf covariance, smallest Mahalanobis distance (Lee
et al. 2018; the shipped gate, through ``suelo.novelty.fit_gate``); the same with one Ledoit-Wolf covariance per
class; one Gaussian for all classes; relative Mahalanobis (Ren et al. 2021: class minus background); k-th nearest
neighbour cosine distance on L2-normalised embeddings (Sun et al. 2022), k = 1, 5, 10, 50; k = 10 in plain L2.
Only the shipped one is project code; the others are written here in a few lines each, for the comparison only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from benchmarks.open_set import embed, ensure_cube, load_belgium, load_worldcereal_regions
from suelo.novelty import fit_gate
from suelo.samples import spatial_blocks

Score = Callable[[np.ndarray], np.ndarray]
IN_LEGEND = (1, 2, 3, 4, 5)


def shipped(x: np.ndarray, y: np.ndarray) -> Score:
    gate = fit_gate(x, y, x[:2], 0.5)  # the threshold is irrelevant to an AUROC
    return gate.score


def per_class_covariance(x: np.ndarray, y: np.ndarray) -> Score:
    parts = []
    for c in np.unique(y):
        xc = x[y == c]
        mu = xc.mean(0)
        parts.append((mu, np.linalg.cholesky(np.linalg.inv(LedoitWolf().fit(xc - mu).covariance_))))

    def score(z: np.ndarray) -> np.ndarray:
        return np.min([(((z - mu) @ w) ** 2).sum(1) for mu, w in parts], axis=0)

    return score


def one_gaussian(x: np.ndarray, _y: np.ndarray) -> Score:
    mu = x.mean(0)
    w = np.linalg.cholesky(np.linalg.inv(LedoitWolf().fit(x - mu).covariance_))
    return lambda z: (((z - mu) @ w) ** 2).sum(1)


def relative_mahalanobis(x: np.ndarray, y: np.ndarray) -> Score:
    classes, background = shipped(x, y), one_gaussian(x, y)
    return lambda z: classes(z) ** 2 - background(z)


def knn(k: int, cosine: bool = True) -> Callable[[np.ndarray, np.ndarray], Score]:
    def fit(x: np.ndarray, _y: np.ndarray) -> Score:
        ref = x / np.linalg.norm(x, axis=1, keepdims=True) if cosine else x

        def score(z: np.ndarray) -> np.ndarray:
            if cosine:
                d = 1 - (z / np.linalg.norm(z, axis=1, keepdims=True)) @ ref.T
            else:
                d = (z**2).sum(1)[:, None] - 2 * z @ ref.T + (ref**2).sum(1)[None]
            return np.sort(d, axis=1)[:, k - 1]

        return score

    return fit


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], Score]] = {
    "Mahalanobis, shared covariance (shipped)": shipped,
    "Mahalanobis, covariance per class": per_class_covariance,
    "one Gaussian": one_gaussian,
    "relative Mahalanobis": relative_mahalanobis,
    "kNN cosine k=1": knn(1),
    "kNN cosine k=5": knn(5),
    "kNN cosine k=10": knn(10),
    "kNN cosine k=50": knn(50),
    "kNN L2 k=10": knn(10, cosine=False),
}


def test_blocks(groups: np.ndarray, candidates: np.ndarray, seed: int, fraction: float = 0.3) -> np.ndarray:
    """A seeded set of whole spatial blocks holding about ``fraction`` of the ``candidates`` points."""
    names = np.unique(groups[candidates])
    order = np.random.default_rng(seed).permutation(len(names))
    chosen, count, total = [], 0, candidates.sum()
    for i in order:
        chosen.append(names[i])
        count += int((groups[candidates] == names[i]).sum())
        if count >= fraction * total:
            break
    return candidates & np.isin(groups, chosen)


def auroc(score: Score, known: np.ndarray, novel: np.ndarray) -> float:
    s_known, s_novel = score(known), score(novel)
    return float(roc_auc_score(np.r_[np.zeros(len(s_known)), np.ones(len(s_novel))], np.r_[s_known, s_novel]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    started = time.perf_counter()
    samples, regions = load_worldcereal_regions()
    emb = embed(samples).astype(np.float64)
    labels = samples.labels
    belgium, village_masks = load_belgium_built_up()
    built_up = np.concatenate([emb[labels == 7], embed(belgium)[village_masks].astype(np.float64)])
    groups = spatial_blocks(samples.latlons, 10_000)
    in_legend = np.isin(labels, IN_LEGEND)
    tasks = [f"LOCO {c}" for c in IN_LEGEND] + [f"LORO {r}" for r in np.unique(regions)] + ["built-up"]
    table = {m: {t: [] for t in tasks} for m in METHODS}
    for seed in range(args.seeds):
        test = test_blocks(groups, in_legend, seed)
        train = in_legend & ~test
        for name, fit in METHODS.items():
            for c in IN_LEGEND:
                keep = train & (labels != c)
                table[name][f"LOCO {c}"].append(
                    auroc(fit(emb[keep], labels[keep]), emb[test & (labels != c)], emb[labels == c])
                )
            for r in np.unique(regions):
                keep = train & (regions != r)
                table[name][f"LORO {r}"].append(
                    auroc(fit(emb[keep], labels[keep]), emb[test & (regions != r)], emb[in_legend & (regions == r)])
                )
            table[name]["built-up"].append(auroc(fit(emb[train], labels[train]), emb[test], built_up))
    print(f"AUROC, mean over {args.seeds} spatial split seeds ({time.perf_counter() - started:.0f} s)")
    header = ["method", "LOCO mean", "LORO mean", "LOCO+LORO", "built-up", *tasks[:-1]]
    print(" | ".join(header))
    for name, cells in table.items():
        means = {t: float(np.mean(v)) for t, v in cells.items()}
        loco = np.mean([means[t] for t in tasks if t.startswith("LOCO")])
        loro = np.mean([means[t] for t in tasks if t.startswith("LORO")])
        row = [name, f"{loco:.3f}", f"{loro:.3f}", f"{(loco + loro) / 2:.3f}", f"{means['built-up']:.3f}"]
        print(" | ".join(row + [f"{means[t]:.3f}" for t in tasks[:-1]]))
    slovenia_loco(args.seeds)


def slovenia_loco(seeds: int, classes: tuple[int, ...] = (2, 3, 4, 8), max_fit: int = 3000) -> None:
    """Leave-one-class-out AUROC within the Slovenia patch, for the shipped score, one Gaussian and kNN."""
    from benchmarks.open_set import SLOVENIA_CUBE, SLOVENIA_JOB, load_slovenia

    pixels = load_slovenia(ensure_cube(SLOVENIA_CUBE, SLOVENIA_JOB))
    emb, labels = embed(pixels).astype(np.float64), pixels.labels
    groups = spatial_blocks(pixels.latlons, 200)
    in_legend = np.isin(labels, classes)
    chosen = {k: METHODS[k] for k in ("Mahalanobis, shared covariance (shipped)", "one Gaussian", "kNN L2 k=10")}
    table: dict[str, list[list[float]]] = {name: [] for name in chosen}
    for seed in range(seeds):
        test = test_blocks(groups, in_legend, seed)
        train = in_legend & ~test
        for name, fit in chosen.items():
            row = []
            for c in classes:
                candidates = np.flatnonzero(train & (labels != c))
                keep = np.random.default_rng(seed).permutation(candidates)[:max_fit]
                row.append(auroc(fit(emb[keep], labels[keep]), emb[test & (labels != c)], emb[labels == c]))
            table[name].append(row)
    print(f"Slovenia leave-one-class-out AUROC (classes {list(classes)}; mean over {seeds} seeds)")
    for name, rows in table.items():
        means = np.mean(rows, axis=0)
        cells = " | ".join(f"{c}: {m:.3f}" for c, m in zip(classes, means, strict=True))
        print(f"{name} | mean {means.mean():.3f} | {cells}")


def load_belgium_built_up() -> tuple[object, np.ndarray]:
    """The Belgian sample's pixels and the mask of the hand-labelled built-up ones (all polygons)."""
    from benchmarks.open_set import BELGIUM_CUBE, BELGIUM_JOB

    pixels, masks = load_belgium(ensure_cube(BELGIUM_CUBE, BELGIUM_JOB))
    return pixels, masks["all"]


if __name__ == "__main__":
    main()
