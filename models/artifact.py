"""The self-describing land-cover model artifact: one ``torch.save`` file loadable with ``weights_only=True``.

Layout (a flat dict, so nothing but tensors and plain values is ever unpickled):

- ``format`` = ``"suelo-landcover-model"``, ``format_version`` (int),
- ``meta``: a JSON string with the legend, the input contract, the head config, the training config, metrics,
  the software version and the split used,
- ``head.<name>``: the classifier head's state dict; ``encoder.<name>``: the encoder's, only when fine-tuned
  (otherwise the shipped pretrained Presto weights are used, identified by their sha256 in the contract),
- ``novelty.whiten`` / ``novelty.means``: the novelty gate's matrices (``suelo.novelty``); its threshold and
  rejection rate are in ``meta["novelty"]``. Every model has a gate (format 2); format-1 files, made before gates
  existed, are refused with a message to retrain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suelo.atomic import file_sha256
from suelo.errors import InputError
from suelo.legend import Legend
from suelo.models.heads import HeadConfig, MLPHead
from suelo.novelty import NoveltyGate

FORMAT = "suelo-landcover-model"
FORMAT_VERSION = 2  # 2: the novelty gate is part of every model
NORMALIZATION = "presto-l2a-v1"  # suelo.models.presto_inputs: reflectance as is, NDVI from B8/B4, absent inputs masked
PRODUCT_LEVEL = "L2A"  # the level of models whose contract does not say (all artifacts before L1C training)
PRODUCT_LEVELS = ("L2A", "L1C")
# Level names as the readers record them in the cube's ``scenes`` attribute, and their long forms
_LEVEL_ALIASES = {"L2A": "L2A", "LEVEL-2A": "L2A", "MSIL2A": "L2A", "L1C": "L1C", "LEVEL-1C": "L1C", "MSIL1C": "L1C"}
_REFLECTANCE = {
    "L2A": "physical surface reflectance (DN + offset) / 10000, NaN where a month has no clear value",
    "L1C": "top-of-atmosphere reflectance (DN + offset) / 10000, NaN where a month has no clear value",
}


def input_contract(
    bands: list[str], months: int, encoder_sha256: str | None, product_level: str = PRODUCT_LEVEL
) -> dict[str, Any]:
    """The input contract of a model trained on ``months`` x ``bands`` of ``product_level`` reflectance.

    Presto was pre-trained on L1C top-of-atmosphere reflectance, and both levels enter it on the same scale (the
    reflectance itself), so the normalization is the same; the level is recorded because a head trained on one
    level does not transfer to the other (TOA adds the atmosphere), and ``check_contract`` refuses a mismatch.
    """
    if product_level not in PRODUCT_LEVELS:
        raise ValueError(f"product_level must be one of {PRODUCT_LEVELS}, got {product_level!r}")
    return {
        "bands": list(bands),
        "product_level": product_level,
        "months": int(months),
        "normalization": NORMALIZATION,
        # Presto embeds the calendar month of every step, so a series may start in any month; it must be
        # `months` consecutive calendar months (the cube's time coordinate gives the start month).
        "start_month": "any (read from the cube's first month; months must be consecutive)",
        "reflectance": _REFLECTANCE[product_level],
        "encoder": "presto",
        "encoder_weights_sha256": encoder_sha256,
    }


@dataclass
class ModelArtifact:
    meta: dict[str, Any]
    head_state: dict[str, torch.Tensor]
    encoder_state: dict[str, torch.Tensor] | None = None
    path: Path | None = field(default=None)
    gate: NoveltyGate | None = None  # where the training data lies in embedding space; None only while training

    @property
    def legend(self) -> Legend:
        return Legend.from_list(self.meta["legend"], self.path or "<artifact>")

    @property
    def contract(self) -> dict[str, Any]:
        return self.meta["input_contract"]

    @property
    def head_config(self) -> HeadConfig:
        return HeadConfig.from_dict(self.meta["head"])

    def build_head(self) -> MLPHead:
        head = MLPHead(self.head_config)
        head.load_state_dict(self.head_state)
        return head.eval()

    def build_encoder(self, default_weights: str | Path | None = None):  # type: ignore[no-untyped-def]
        """The encoder: the fine-tuned weights in the artifact, else the pretrained Presto weights."""
        from suelo.models.presto import DEFAULT_WEIGHTS, Encoder, load_presto_encoder

        if self.encoder_state is not None:
            encoder = Encoder()
            encoder.load_state_dict(self.encoder_state)
            return encoder.eval()
        weights = Path(default_weights or DEFAULT_WEIGHTS)
        expected = self.contract.get("encoder_weights_sha256")
        if expected and file_sha256(weights) != expected:
            raise InputError(
                weights, "encoder weights differ from those the model was trained with " + f"(sha256 {expected})"
            )
        return load_presto_encoder(weights)


def save_artifact(artifact: ModelArtifact, path: str | Path) -> None:
    """Write ``artifact`` atomically as one weights-only torch file."""
    from suelo.atomic import atomic_output

    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": json.dumps(pack_split_ids(artifact.meta), sort_keys=True, default=_json_default),
    }
    payload.update({f"head.{k}": v.detach().cpu().contiguous() for k, v in artifact.head_state.items()})
    if artifact.encoder_state is not None:
        payload.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in artifact.encoder_state.items()})
    if artifact.gate is None:
        raise ValueError("a model artifact needs a novelty gate (suelo.novelty.fit_gate)")
    payload.update(
        {f"novelty.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in artifact.gate.arrays().items()}
    )
    with atomic_output(Path(path)) as tmp:
        torch.save(payload, tmp)


#: The sample-id lists of ``meta["split"]`` (``suelo.train``); in memory always lists of str.
SPLIT_ID_KEYS = ("train_ids", "calibration_ids", "test_ids")
#: A longer id list is stored zlib-compressed (base64 of its JSON): 100,000 pixel ids are ~2 MB of JSON, ten
#: times the rest of the model, and sorted ids with shared prefixes compress 7-9 fold (measured on WorldCereal
#: and polygon-pixel ids; base64 gives back a third).
PACK_IDS_ABOVE = 10_000


def pack_split_ids(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with every long id list of its split replaced by ``{"zlib_base64": ..., "count": n}``."""
    import base64
    import zlib

    split = meta.get("split")
    if not isinstance(split, dict) or not any(len(split.get(k) or ()) > PACK_IDS_ABOVE for k in SPLIT_ID_KEYS):
        return meta
    packed = dict(split)
    for key in SPLIT_ID_KEYS:
        ids = split.get(key)
        if isinstance(ids, list) and len(ids) > PACK_IDS_ABOVE:
            data = zlib.compress(json.dumps([str(i) for i in ids]).encode(), 9)
            packed[key] = {"zlib_base64": base64.b64encode(data).decode("ascii"), "count": len(ids)}
    return {**meta, "split": packed}


def unpack_split_ids(meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`pack_split_ids` (a compressed list that does not decode is an error)."""
    import base64
    import zlib

    split = meta.get("split")
    if not isinstance(split, dict):
        return meta
    for key in SPLIT_ID_KEYS:
        value = split.get(key)
        if isinstance(value, dict):
            try:
                ids = json.loads(zlib.decompress(base64.b64decode(value["zlib_base64"])).decode())
            except zlib.error as exc:  # not a ValueError: the loader reports ValueErrors as unreadable meta
                raise ValueError(f"split {key}: {exc}") from exc
            if len(ids) != int(value["count"]):
                raise ValueError(f"split {key}: {len(ids)} ids decoded, {value['count']} stored")
            split[key] = ids
    return meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_artifact(path: str | Path) -> ModelArtifact:
    """Read an artifact with ``weights_only=True``; anything else (a pickle, a plain state dict) is refused."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for pickles with code, RuntimeError/EOFError for non-torch files
        raise InputError(
            path, "not a suelo model artifact " + f"(not a weights-only torch file: {type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a suelo model artifact (no format={FORMAT!r} entry)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(path, f"artifact format version {version!r}; this suelo reads up to {FORMAT_VERSION}")
    if version < 2:
        raise InputError(
            path,
            f"model format {version} was made before novelty gates and cannot say where it does not apply; "
            "retrain it with `suelo train`",
        )
    try:
        meta = unpack_split_ids(json.loads(payload["meta"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, "artifact has no readable meta") from exc
    head = {k[5:]: v for k, v in payload.items() if k.startswith("head.")}
    encoder = {k[8:]: v for k, v in payload.items() if k.startswith("encoder.")} or None
    if not head:
        raise InputError(path, "artifact has no head weights")
    arrays = {k[8:]: v.numpy() for k, v in payload.items() if k.startswith("novelty.") and isinstance(v, torch.Tensor)}
    try:
        gate = NoveltyGate.from_parts(meta.get("novelty"), arrays, "model")
    except ValueError as exc:
        raise InputError(path, f"artifact has no usable novelty gate ({exc})") from exc
    features = meta.get("head", {}).get("in_features")
    if features is not None and gate.whiten.shape[0] != int(features):
        raise InputError(path, f"novelty gate is {gate.whiten.shape[0]}-dimensional, the head takes {features}")
    return ModelArtifact(meta, head, encoder, path, gate)


def normalize_level(level: Any) -> str | None:
    """``"L2A"`` or ``"L1C"`` for the level names readers and products use; None for anything else."""
    return _LEVEL_ALIASES.get(str(level).strip().upper()) if level else None


def cube_levels(cube: Any) -> list[str]:
    """The distinct product levels of the scenes a cube was made from (its ``scenes`` attribute), sorted; an
    unrecognised level is kept as written. Empty when the cube does not record its scenes."""
    scenes = json.loads(cube.attrs.get("scenes", "[]") or "[]")
    return sorted({normalize_level(s["level"]) or str(s["level"]) for s in scenes if s.get("level")})


def cube_product_level(cube: Any, cube_name: str | Path = "cube") -> str:
    """The one product level of a cube's scenes: what a model trained on it records in its contract.

    A cube that does not record its scenes is taken as L2A (suelo's default input). A cube mixing levels, or of
    an unknown level, is an error: no contract describes it.
    """
    levels = cube_levels(cube)
    if not levels:
        return PRODUCT_LEVEL
    if len(levels) > 1 or levels[0] not in PRODUCT_LEVELS:
        raise InputError(cube_name, f"was made from {levels} scenes; a model is trained on one of {PRODUCT_LEVELS}")
    return levels[0]


def contract_problems(
    contract: dict[str, Any],
    bands: Sequence[str],
    n_months: int,
    consecutive: bool,
    levels: Sequence[str],
    allow_fewer_months: bool = False,
    opt_in_key: str | None = None,
) -> list[str]:
    """What keeps inputs of ``bands`` x ``n_months`` months of ``levels`` scenes from feeding a model with this
    input ``contract`` (empty when they fit). Shared by the plan-time checks of a job (land-cover model and
    segmenter) and the load-time check of a cube, so all say the same thing. ``allow_fewer_months``: fewer months
    than the contract's are accepted (the encoder takes the months there are; more never are); ``opt_in_key``: the
    job-spec section whose ``allow_fewer_months`` would accept them, named in the problem."""
    problems = []
    if contract.get("normalization") != NORMALIZATION:
        problems.append(f"model normalization {contract.get('normalization')!r} is not supported ({NORMALIZATION})")
    missing = [b for b in contract["bands"] if b not in bands]
    if missing:
        problems.append(f"lacks bands {missing} the model needs (cube has {list(bands)})")
    needed = int(contract["months"])
    if n_months > needed or (n_months < needed and not allow_fewer_months):
        opt_in = (
            f" (or set {opt_in_key}.allow_fewer_months: true to run it on {n_months}; its certificate then does not "
            "hold)"
            if opt_in_key and n_months < needed
            else ""
        )
        problems.append(f"has {n_months} months, the model needs {needed}{opt_in}")
    if not consecutive:
        problems.append("months are not consecutive")
    wanted = normalize_level(contract.get("product_level", PRODUCT_LEVEL)) or str(contract.get("product_level"))
    bad_levels = [lv for lv in levels if lv != wanted]
    if bad_levels:
        what = {"L2A": "L2A (surface reflectance)", "L1C": "L1C (top-of-atmosphere reflectance)"}
        problems.append(
            f"was made from {', '.join(what.get(lv, lv) for lv in bad_levels)} scenes but the model was trained on "
            f"{what.get(wanted, wanted)}; use a cube of that level or a model trained on this one"
        )
    return problems


def check_contract(
    artifact: ModelArtifact, cube: Any, cube_name: str | Path = "cube", allow_fewer_months: bool = False
) -> None:
    """Raise InputError naming ``cube_name`` when the cube cannot feed the model (bands, months, level)."""
    if "reflectance" not in cube or "band" not in cube.coords or "time" not in cube.coords:
        raise InputError(cube_name, "not a monthly cube (needs reflectance (time, band, y, x))")
    times = cube["time"].values.astype("datetime64[M]").astype(np.int64)
    consecutive = len(times) < 2 or bool((np.diff(times) == 1).all())
    have = [str(b) for b in cube["band"].values]
    problems = contract_problems(
        artifact.contract, have, int(cube.sizes["time"]), consecutive, cube_levels(cube), allow_fewer_months
    )
    if problems:
        raise InputError(cube_name, "does not match the model's input contract: " + "; ".join(problems))


def check_artifact_for_job(
    artifact: ModelArtifact,
    bands: Sequence[str],
    n_months: int,
    levels: Sequence[str],
    path: str | Path,
    allow_fewer_months: bool = False,
    key: str = "products.landcover",
) -> None:
    """Plan-time check of a model file against the job it is to serve, naming the model file: a complete input
    contract, head weights that build and match the legend, and a contract the job's cube will meet (its
    ``bands``, ``n_months`` consecutive months and the scenes' product ``levels``)."""
    contract = artifact.meta.get("input_contract")
    required = ("bands", "months", "normalization")
    if not isinstance(contract, dict) or any(k not in contract for k in required):
        raise InputError(path, f"model has no complete input contract (needs {', '.join(required)})")
    try:
        legend = artifact.legend
        head = artifact.build_head()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: state dict of the wrong shape
        raise InputError(path, f"model head does not build: {' '.join(str(exc).split())[:300]}") from exc
    if head.config.n_classes != len(legend):
        raise InputError(path, f"model legend has {len(legend)} classes, its head {head.config.n_classes} outputs")
    levels = sorted({normalize_level(lv) or str(lv) for lv in levels})
    problems = contract_problems(contract, bands, n_months, True, levels, allow_fewer_months, key)
    if problems:
        raise InputError(path, "does not fit this job (" + "; ".join(problems).replace("cube has", "ingest.bands")
                         + ")")  # fmt: skip
