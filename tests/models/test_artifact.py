"""The one model artifact format (suelo.models.artifact, format 3) for both kinds: round trips, the one contract
check on load (one error naming the file), kinds kept apart, old layouts still read, and the shipped models
converted to it with their weights unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from suelo.errors import InputError, ModelFileError
from suelo.legend import Legend
from suelo.models.artifact import (
    FORMAT,
    FORMAT_VERSION,
    PIXEL_HEAD,
    SEGMENTER,
    ModelArtifact,
    check_artifact_for_job,
    input_contract,
    load_artifact,
    load_segmenter,
    save_artifact,
    save_segmenter,
)
from suelo.models.heads import HeadConfig, MLPHead
from suelo.models.segmenter import SegmenterConfig, UNetSegmenter
from suelo.novelty import fit_gate
from tests.fixtures import REPO_ROOT

PROJECT = REPO_ROOT
LEGEND = [{"code": 5, "name": "Trees", "color": "#00a000"}, {"code": 8, "name": "Water", "color": "#0000ff"}]
SEGMENTER_EXTRAS = {"legend_codes": [11100, 50000], "bands": ["B04", "B08"], "months": 12, "product_level": "L2A"}

# sha256 of the shipped models' tensors (name, dtype, shape, bytes; suelo.models.artifact format 2 / the segmenter's
# own layout), computed from the files before they were rewritten in format 3: the conversion kept every weight
SHIPPED_SEGMENTER_STATE = "93be156bbe0e5885dab905031e791d20e92e6f807fffbe29387b94e2a3bd94cb"
SHIPPED_SEGMENTER_GATE = "59fca144b0a192ccb7d78f84c433367c3d1df968b43935407369ffbd573d07d6"
SHIPPED_HEAD = "aea39e9accdb8c27dc77ea9320019a7e9cbfce2ba62b0147bda57c2e6b235804"
SHIPPED_HEAD_GATE = "e3c5b12f81344f834c86dd910924aee72bd28da7d243c7acac0b591985f557ea"


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()


def gate_of(dims: int) -> object:
    rng = np.random.default_rng(0)
    return fit_gate(rng.normal(size=(80, dims)), np.arange(80) % 2, rng.normal(size=(40, dims)), 0.05, "test inputs")


def head_artifact() -> ModelArtifact:
    torch.manual_seed(0)
    config = HeadConfig(in_features=4, hidden=3, dropout=0.0, n_classes=2)
    gate = gate_of(4)
    meta = {
        "legend": LEGEND, "input_contract": input_contract(["B04", "B08"], 12, None), "head": config.to_dict(),
        "novelty": gate.meta(), "metrics": {"validation": {"overall_accuracy": 0.9}}, "model_card": {"seeds": 3},
        "calibration": {"method": "temperature", "temperature": 1.5, "class_scale": [], "class_bias": []},
    }  # fmt: skip
    return ModelArtifact(meta, MLPHead(config).state_dict(), gate=gate)


def gated_segmenter() -> UNetSegmenter:
    torch.manual_seed(0)
    model = UNetSegmenter(SegmenterConfig(3, 2, depth=1, base_width=4, feature_names=("a", "b", "c"))).eval()
    model.novelty_gate = gate_of(3)
    return model


def edited(path: Path, meta_change: dict | None = None, **entries: object) -> Path:
    """A copy of the model file with meta keys replaced (None: removed) and payload entries replaced."""
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    for key, value in (meta_change or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    payload = payload | {"meta": json.dumps(meta)} | entries
    out = path.with_name(f"edited_{path.name}")
    torch.save(payload, out)
    return out


def test_a_pixel_head_round_trips(tmp_path: Path) -> None:
    artifact = head_artifact()
    save_artifact(artifact, tmp_path / "head.pt")
    payload = torch.load(tmp_path / "head.pt", weights_only=True)
    assert (payload["format"], payload["format_version"], payload["kind"]) == (FORMAT, FORMAT_VERSION, PIXEL_HEAD)
    assert {k for k in payload if isinstance(payload[k], torch.Tensor)} == {
        "head.net.1.weight", "head.net.1.bias", "head.net.4.weight", "head.net.4.bias",
        "novelty.whiten", "novelty.means",
    }  # fmt: skip
    loaded = load_artifact(tmp_path / "head.pt")
    assert loaded.kind == PIXEL_HEAD and loaded.path == tmp_path / "head.pt" and loaded.encoder_state is None
    assert loaded.meta == json.loads(json.dumps(artifact.meta)) and loaded.legend.codes == (5, 8)
    assert digest(loaded.weights) == digest(artifact.weights) and loaded.head_state is loaded.weights
    assert np.array_equal(loaded.gate.whiten, artifact.gate.whiten) and loaded.gate.threshold == artifact.gate.threshold
    x = torch.randn(7, 4)
    with torch.no_grad():
        assert torch.equal(loaded.build_head()(x), artifact.build_head()(x))
    assert load_artifact(tmp_path / "head.pt", kind=None).kind == PIXEL_HEAD


def test_a_segmenter_round_trips_through_either_entry_point(tmp_path: Path) -> None:
    model = gated_segmenter()
    model.set_normalization(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, 2.0]))
    save_segmenter(model, tmp_path / "seg.pt", **SEGMENTER_EXTRAS, metrics={"summary": {"mean_iou": 0.5}})
    payload = torch.load(tmp_path / "seg.pt", weights_only=True)
    assert (payload["format"], payload["format_version"], payload["kind"]) == (FORMAT, FORMAT_VERSION, SEGMENTER)
    assert all(k.startswith(("unet.", "novelty.")) for k, v in payload.items() if isinstance(v, torch.Tensor))
    loaded, meta = load_segmenter(tmp_path / "seg.pt")
    assert digest(loaded.state_dict()) == digest(model.state_dict()) and loaded.config == model.config
    # the flat view callers use, derived from the one legend and contract the file stores
    assert meta["legend_codes"] == [11100, 50000] and meta["legend_names"][1] == "Water"
    assert (meta["bands"], meta["months"], meta["product_level"]) == (["B04", "B08"], 12, "L2A")
    assert meta["feature_names"] == ["a", "b", "c"] and meta["metrics"]["summary"]["mean_iou"] == 0.5
    assert (
        meta["input_contract"]["normalization"] == "segmenter-features-v1"
        and meta["novelty"] == model.novelty_gate.meta()
    )
    assert meta["gate"] is loaded.novelty_gate
    artifact = load_artifact(tmp_path / "seg.pt", kind=None)
    assert artifact.kind == SEGMENTER and artifact.legend.codes == (11100, 50000)
    x = torch.randn(1, 3, 11, 13)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) and torch.equal(artifact.build()(x), model(x))
    save_segmenter(loaded, tmp_path / "again.pt", **meta)  # what was loaded saves again, unchanged
    assert load_segmenter(tmp_path / "again.pt")[1]["input_contract"] == meta["input_contract"]


@pytest.mark.parametrize(
    ("kind", "change", "problem"),
    [
        (PIXEL_HEAD, {"input_contract": None}, "model has no complete input contract (needs bands, months"),
        (PIXEL_HEAD, {"legend": LEGEND[:1]}, "model legend has 1 classes, its head 2 outputs"),
        (PIXEL_HEAD, {"head": {"in_features": 5, "hidden": 3, "dropout": 0.0, "n_classes": 2}}, "does not build"),
        (SEGMENTER, {"input_contract": {"bands": [], "months": 0, "normalization": "presto-l2a-v1"}}, "months must"),
        (SEGMENTER, {"legend": [*LEGEND, {"code": 9, "name": "x", "color": "#123456"}]}, "its segmenter 2 outputs"),
    ],
)
def test_a_broken_contract_is_one_error_naming_the_file(tmp_path: Path, kind: str, change: dict, problem: str) -> None:
    path = tmp_path / "m.pt"
    if kind == PIXEL_HEAD:
        save_artifact(head_artifact(), path)
    else:
        save_segmenter(gated_segmenter(), path, **SEGMENTER_EXTRAS)
    broken = edited(path, change)
    with pytest.raises(InputError) as info:
        load_artifact(broken, kind)
    message = str(info.value)
    assert isinstance(info.value, ModelFileError) and info.value.path == str(broken)
    assert message.startswith(f"{broken}: ") and problem in message and "\n" not in message
    if problem == "months must":  # every problem of the file, in one line
        assert "bands must be a list" in message and "normalization 'presto-l2a-v1' is not the segmenter's" in message


def test_a_file_of_the_other_kind_is_refused(tmp_path: Path) -> None:
    save_artifact(head_artifact(), tmp_path / "head.pt")
    save_segmenter(gated_segmenter(), tmp_path / "seg.pt", **SEGMENTER_EXTRAS)
    with pytest.raises(ModelFileError, match=r"is a segmenter .* file; a land-cover model .* is needed here") as info:
        load_artifact(tmp_path / "seg.pt")
    assert str(info.value).startswith(f"{tmp_path / 'seg.pt'}: ")
    with pytest.raises(ModelFileError, match=r"is a land-cover model .* file; a segmenter .* is needed here"):
        load_segmenter(tmp_path / "head.pt")
    with pytest.raises(ModelFileError, match="unknown model kind 'forest'"):
        load_artifact(edited(tmp_path / "head.pt", kind="forest"))
    with pytest.raises(ModelFileError, match="format version 4"):
        load_artifact(edited(tmp_path / "head.pt", format_version=4))


def test_what_would_not_load_is_not_saved(tmp_path: Path) -> None:
    artifact = head_artifact()
    artifact.meta["input_contract"]["normalization"] = "segmenter-features-v1"
    with pytest.raises(ValueError, match="is not the pixel_head's"):
        save_artifact(artifact, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no complete input contract"):
        save_segmenter(gated_segmenter(), tmp_path / "m.pt", legend_codes=[1, 2])
    assert not (tmp_path / "m.pt").exists()


def test_the_job_check_names_the_file(tmp_path: Path) -> None:
    save_artifact(head_artifact(), tmp_path / "m.pt")
    artifact = load_artifact(tmp_path / "m.pt")
    check_artifact_for_job(artifact, ["B04", "B08"], 12, ["L2A"], tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"m.pt: does not fit this job \(lacks bands \['B08'\]"):
        check_artifact_for_job(artifact, ["B04"], 12, ["L2A"], tmp_path / "m.pt")


def test_old_layouts_are_still_read(tmp_path: Path) -> None:
    # format 2 of the land-cover model: the same entries without "kind"
    save_artifact(head_artifact(), tmp_path / "head.pt")
    payload = torch.load(tmp_path / "head.pt", weights_only=True)
    v2 = {k: v for k, v in payload.items() if k != "kind"} | {"format": "suelo-landcover-model", "format_version": 2}
    torch.save(v2, tmp_path / "v2.pt")
    assert digest(load_artifact(tmp_path / "v2.pt").weights) == digest(head_artifact().weights)
    # the segmenter's own file before format 3: state.* tensors, config_json and one <key>_json per extra
    model = gated_segmenter()
    old: dict[str, object] = {f"state.{k}": v for k, v in model.state_dict().items()}
    old |= {f"novelty.{k}": torch.from_numpy(v) for k, v in model.novelty_gate.arrays().items()}
    old |= {"config_json": json.dumps(model.config.to_dict()), "novelty_json": json.dumps(model.novelty_gate.meta())}
    old |= {f"{k}_json": json.dumps(v) for k, v in SEGMENTER_EXTRAS.items()}
    torch.save(old, tmp_path / "old_seg.pt")
    loaded, meta = load_segmenter(tmp_path / "old_seg.pt")
    assert digest(loaded.state_dict()) == digest(model.state_dict()) and meta["legend_codes"] == [11100, 50000]
    assert meta["months"] == 12 and meta["input_contract"]["normalization"] == "segmenter-features-v1"


def test_the_shipped_models_are_format_3_with_their_weights_unchanged() -> None:
    for name, kind in (("segmenter_default.pt", SEGMENTER), ("landcover_default.pt", PIXEL_HEAD)):
        payload = torch.load(PROJECT / "models" / name, weights_only=True)
        assert (payload["format"], payload["format_version"], payload["kind"]) == (FORMAT, 3, kind)
    model, meta = load_segmenter(PROJECT / "models" / "segmenter_default.pt")
    assert digest(model.state_dict()) == SHIPPED_SEGMENTER_STATE
    gate = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.novelty_gate.arrays().items()}
    assert digest(gate) == SHIPPED_SEGMENTER_GATE
    assert meta["legend_codes"][0] == 11100 and len(meta["legend_codes"]) == model.config.n_classes == 15
    assert meta["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"] and meta["months"] == 12
    assert meta["calibration"]["method"] == "temperature" and "policy" in meta["thresholds"]
    head = load_artifact(PROJECT / "models" / "landcover_default.pt")
    assert digest(head.weights) == SHIPPED_HEAD
    gate = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in head.gate.arrays().items()}
    assert digest(gate) == SHIPPED_HEAD_GATE
    assert head.meta["model_card"] and Legend.from_list(head.meta["legend"]).codes == head.legend.codes
