"""Make the shipped default land-cover model, ``models/landcover_default.pt``.

Exactly how it was made::

    .venv/bin/python models/train_default.py \\
        ../shared/data/worldcereal_extractions/point_timeseries/month_2022_FRA_LPIS_POLY_110.geoparquet \\
        ../shared/data/worldcereal_extractions/point_timeseries/dekad_2023_FRA_LPIS_POLY_110.geoparquet \\
        ../shared/data/worldcereal_extractions/point_timeseries/test_public_extractions_2017_SSD_UGA.parquet

i.e. the three ESA WorldCereal point extractions (real Sentinel-2 L2A, MIT) loaded with
``pipeline.samples.load_worldcereal`` (12 months around each label's valid_time, dekads -> monthly median),
ewoc_code -> LANDCOVER10, bands B02 B03 B04 B05 B06 B07 B08 B11 B12 (the data have no B8A), the pretrained Presto
encoder frozen, an MLP head trained with ``TrainConfig()`` defaults (seed 0), 10 km spatial blocks with 20 % of the
samples held out for validation. Validation metrics of the model and of the RandomForest baseline on the same
split are stored in the artifact's ``meta.metrics``. Classes with fewer than 5 training samples are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.artifact import save_artifact  # noqa: E402
from pipeline.legend import load_legend  # noqa: E402
from pipeline.samples import Samples, load_worldcereal  # noqa: E402
from pipeline.train import TrainConfig, train_model, write_training_figures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extractions", nargs="+", type=Path, help="WorldCereal parquet extractions")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "models" / "landcover_default.pt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    legend = load_legend()
    samples = Samples.concat([load_worldcereal(p, legend) for p in args.extractions])
    result = train_model(
        samples, legend, TrainConfig(seed=args.seed), sources=[p.name for p in args.extractions], log=print
    )
    save_artifact(result.artifact, args.output)
    figures = write_training_figures(result, args.output.with_name(f"{args.output.stem}_report"))
    summary = {
        k: {m: v[m] for m in ("overall_accuracy", "macro_f1", "kappa") if m in v}
        for k, v in result.artifact.meta["metrics"].items()
    }
    print(json.dumps(summary, indent=2))
    print("calibration:", json.dumps(result.artifact.meta["metrics"]["calibration"]))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB) and {[f.name for f in figures]}")


if __name__ == "__main__":
    main()
