"""The self-describing model artifact of both suelo models: one ``torch.save`` file loadable with
``weights_only=True``, and the one check of its input contract on load.

Layout (format 3; a flat dict, so nothing but tensors and plain values is ever unpickled):

- ``format`` = ``"suelo-model"``, ``format_version`` = 3, ``kind``: ``"pixel_head"`` (the land-cover MLP head
  on Presto embeddings, suelo.train) or ``"segmenter"`` (the urban-atlas U-Net, suelo.train_segmenter),
- ``meta``: one JSON string with ``legend`` (a {code, name, color} list), ``input_contract`` (bands, months,
  normalization, product_level, encoder weights), the network's config under the network's name (``head`` or
  ``unet``), ``novelty`` (the gate's scalars), ``calibration``, ``thresholds``, ``validation_scores``, ``metrics``,
  ``model_card`` (when one was made), how the model was made (``training``/``split``, or ``provenance``) and the
  ``software`` versions,
- ``<network>.<name>``: the network's state dict (``head.*`` or ``unet.*``); ``encoder.<name>``: the encoder's,
  only for a fine-tuned pixel head (otherwise the shipped pretrained Presto weights are used, identified by their
  sha256 in the contract),
- ``novelty.whiten`` / ``novelty.means``: the novelty gate's matrices (``suelo.novelty``). Every model has one.

:func:`load_artifact` is the one way in: it refuses anything else and a file of another kind, then runs
:func:`artifact_problems` (the same check for both kinds: contract, legend, network, gate), so every problem is
one :class:`~suelo.errors.ModelFileError` naming the file. :func:`save_artifact` runs the same check first and
writes format 3 only. Older files still load: format 2 of the land-cover model (this layout without ``kind``) and
the segmenter's file before format 3 (``state.*`` tensors and ``*_json`` entries, :func:`_upgrade_segmenter`);
format 1, made before novelty gates, is refused with a message to retrain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from suelo.atomic import file_sha256
from suelo.errors import ConfigError, InputError, ModelFileError
from suelo.ingest.auxiliary import CUBE_VARIABLES as AUXILIARY_VARIABLES
from suelo.legend import Legend
from suelo.models.heads import HeadConfig, MLPHead
from suelo.models.segmenter import SegmenterConfig, UNetSegmenter
from suelo.novelty import NoveltyGate

if TYPE_CHECKING:
    from suelo.models.presto import Encoder

FORMAT = "suelo-model"
FORMAT_VERSION = 3  # 3: one format for both kinds; 2: the novelty gate is part of every model
LEGACY_FORMAT = "suelo-landcover-model"  # formats 1 and 2: land-cover models only
PIXEL_HEAD, SEGMENTER = "pixel_head", "segmenter"
KINDS = (PIXEL_HEAD, SEGMENTER)
#: the network of each kind: its config's meta key and its weights' prefix
NETWORK = {PIXEL_HEAD: "head", SEGMENTER: "unet"}
#: what each kind is called in messages
KIND_NAMES = {PIXEL_HEAD: "land-cover model (pixel head)", SEGMENTER: "segmenter (urban atlas U-Net)"}
NORMALIZATION = "presto-l2a-v1"  # suelo.models.presto_inputs: reflectance as is, NDVI from B8/B4, absent inputs masked
# suelo.models.segmenter.segmenter_features (cube summaries of reflectance as is) + the Presto embedding of
# NORMALIZATION inputs; the per-channel standardization is in the network's weights
SEGMENTER_NORMALIZATION = "segmenter-features-v1"
NORMALIZATIONS = {PIXEL_HEAD: NORMALIZATION, SEGMENTER: SEGMENTER_NORMALIZATION}
PRODUCT_LEVEL = "L2A"  # the level of models whose contract does not say (all artifacts before L1C training)
PRODUCT_LEVELS = ("L2A", "L1C")
# Level names as the readers record them in the cube's ``scenes`` attribute, and their long forms
_LEVEL_ALIASES = {"L2A": "L2A", "LEVEL-2A": "L2A", "MSIL2A": "L2A", "L1C": "L1C", "LEVEL-1C": "L1C", "MSIL1C": "L1C"}
_REFLECTANCE = {
    "L2A": "physical surface reflectance (DN + offset) / 10000, NaN where a month has no clear value",
    "L1C": "top-of-atmosphere reflectance (DN + offset) / 10000, NaN where a month has no clear value",
}
_REQUIRED_CONTRACT = ("bands", "months", "normalization")
#: The encoder inputs a model may be trained with (suelo.train.TrainConfig.inputs); "s2" always. A contract without
#: ``inputs`` (every model before they existed) is ("s2",): the other inputs were masked.
INPUTS = ("s2", "s1", "terrain", "weather")
LEGACY_INPUTS = ("s2",)
INPUT_NAMES = {
    "s2": "Sentinel-2",
    "s1": "Sentinel-1",
    "terrain": "terrain (elevation, slope)",
    "weather": "weather (2 m temperature, precipitation)",
}
#: The job input kind (suelo.settings.AUXILIARY_KINDS) that supplies each optional input.
INPUT_KINDS = {"s1": "sentinel1", "terrain": "dem", "weather": "weather"}
#: The cube data variables that carry each optional input (any one of them), as the auxiliary ingest writes them.
CUBE_VARIABLES = {name: (variable,) for name, (variable, *_layout) in AUXILIARY_VARIABLES.items()}
#: What a model's contract records of each input: the physical values suelo.models.presto_inputs normalizes.
INPUT_UNITS = {
    "s2": "reflectance (see reflectance)",
    "s1": "VV, VH backscatter in dB, monthly mean in linear power",
    "terrain": "elevation in m, slope in degrees (static)",
    "weather": "2 m temperature in K (monthly mean), total precipitation in m of water per day (monthly mean)",
}


def normalize_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    """``inputs`` in the canonical order of :data:`INPUTS`; a ValueError for an unknown name, a repeated one or a
    set without ``"s2"`` (every model is a Sentinel-2 model; the others add to it)."""
    names = [str(i).strip().lower() for i in inputs]
    unknown = [i for i in names if i not in INPUTS]
    if unknown:
        raise ValueError(f"unknown inputs {unknown} (known: {', '.join(INPUTS)})")
    if len(set(names)) != len(names):
        raise ValueError(f"inputs {names} name one twice")
    if "s2" not in names:
        raise ValueError(f"inputs {names} must include s2 (Sentinel-2 is every model's input)")
    return tuple(i for i in INPUTS if i in names)


def contract_inputs(contract: dict[str, Any]) -> tuple[str, ...]:
    """The inputs a model was trained with: its contract's ``inputs``, ``("s2",)`` for a model made before them."""
    return tuple(contract.get("inputs") or LEGACY_INPUTS)


def cube_inputs(cube: Any) -> tuple[str, ...]:
    """The inputs a monthly cube offers: ``"s2"`` and each optional input one of whose :data:`CUBE_VARIABLES`
    it holds."""
    names = set(getattr(cube, "data_vars", ()))
    return ("s2", *(i for i, variables in CUBE_VARIABLES.items() if names & set(variables)))


def job_inputs(kinds: Iterable[str]) -> tuple[str, ...]:
    """The inputs a job offers, from the kinds of its ``inputs`` entries (``sentinel1``, ``dem``, ``weather``; the
    Sentinel-2 kinds give ``"s2"``)."""
    given = set(kinds)
    return ("s2", *(i for i, kind in INPUT_KINDS.items() if kind in given))


def input_contract(
    bands: list[str],
    months: int,
    encoder_sha256: str | None,
    product_level: str = PRODUCT_LEVEL,
    normalization: str = NORMALIZATION,
    inputs: Sequence[str] = LEGACY_INPUTS,
) -> dict[str, Any]:
    """The input contract of a model trained on ``months`` x ``bands`` of ``product_level`` reflectance
    (``normalization``: how the model turns them into its inputs, one of NORMALIZATIONS) and the other encoder
    ``inputs`` (:data:`INPUTS`; those not named were masked in training, as they must be at run time).

    Presto was pre-trained on L1C top-of-atmosphere reflectance, and both levels enter it on the same scale (the
    reflectance itself), so the normalization is the same; the level is recorded because a model trained on one
    level does not transfer to the other (TOA adds the atmosphere), and ``check_contract`` refuses a mismatch.
    """
    if product_level not in PRODUCT_LEVELS:
        raise ValueError(f"product_level must be one of {PRODUCT_LEVELS}, got {product_level!r}")
    chosen = normalize_inputs(inputs)
    return {
        "bands": list(bands),
        "inputs": list(chosen),
        "input_units": {i: INPUT_UNITS[i] for i in chosen},
        "product_level": product_level,
        "months": int(months),
        "normalization": normalization,
        # Presto embeds the calendar month of every step, so a series may start in any month; it must be
        # `months` consecutive calendar months (the cube's time coordinate gives the start month).
        "start_month": "any (read from the cube's first month; months must be consecutive)",
        "reflectance": _REFLECTANCE[product_level],
        "encoder": "presto",
        "encoder_weights_sha256": encoder_sha256,
    }


@dataclass
class ModelArtifact:
    """A model file in memory: ``meta`` (see the module), the network's ``weights``, the fine-tuned encoder's
    (pixel heads only), the novelty gate and the ``kind``."""

    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    encoder_state: dict[str, torch.Tensor] | None = None
    path: Path | None = field(default=None)
    gate: NoveltyGate | None = None  # where the training data lies in input space; None only while training
    kind: str = PIXEL_HEAD

    @property
    def head_state(self) -> dict[str, torch.Tensor]:
        """The pixel head's weights (the name they had before the segmenter shared the format)."""
        return self.weights

    @property
    def legend(self) -> Legend:
        return Legend.from_list(self.meta["legend"], self.path or "<artifact>")

    @property
    def contract(self) -> dict[str, Any]:
        return self.meta["input_contract"]

    @property
    def network_config(self) -> HeadConfig | SegmenterConfig:
        config = self.meta[NETWORK[self.kind]]
        return HeadConfig.from_dict(config) if self.kind == PIXEL_HEAD else SegmenterConfig.from_dict(config)

    @property
    def head_config(self) -> HeadConfig:
        config = self.network_config
        assert isinstance(config, HeadConfig), f"a {self.kind} has no head"
        return config

    def build(self) -> nn.Module:
        """The network in eval mode with its weights (a segmenter also with its ``novelty_gate``)."""
        config = self.network_config
        network: nn.Module
        if isinstance(config, HeadConfig):
            network = MLPHead(config)
        else:
            network = UNetSegmenter(config)
            network.novelty_gate = self.gate
        network.load_state_dict(self.weights, strict=True)
        return network.eval()

    def build_head(self) -> MLPHead:
        head = self.build()
        assert isinstance(head, MLPHead), f"a {self.kind} has no head"
        return head

    def build_encoder(self, default_weights: str | Path | None = None) -> Encoder:
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def artifact_problems(artifact: ModelArtifact) -> list[str]:
    """What keeps a model from being used, whatever its kind (empty when nothing does): a complete input contract
    of the kind's normalization, a valid legend, a network that builds from its config and weights with one output
    per legend class, and a novelty gate that scores the network's inputs. :func:`load_artifact` and
    :func:`save_artifact` both run it, so a file that was written can be read."""
    kind = artifact.kind
    if kind not in KINDS:
        return [f"unknown model kind {kind!r} (one of {', '.join(KINDS)})"]
    noun = NETWORK[kind] if kind == PIXEL_HEAD else "segmenter"
    problems = []
    contract = artifact.meta.get("input_contract")
    if not isinstance(contract, dict) or any(k not in contract for k in _REQUIRED_CONTRACT):
        problems.append(f"model has no complete input contract (needs {', '.join(_REQUIRED_CONTRACT)})")
    else:
        bands, months = contract["bands"], contract["months"]
        if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
            problems.append(f"input contract bands must be a list of band names, got {bands!r}")
        if isinstance(months, bool) or not isinstance(months, int) or months < 1:
            problems.append(f"input contract months must be a positive integer, got {months!r}")
        if contract["normalization"] != NORMALIZATIONS[kind]:
            problems.append(
                f"model normalization {contract['normalization']!r} is not the {kind}'s ({NORMALIZATIONS[kind]})"
            )
        try:
            normalize_inputs(contract_inputs(contract))
        except (TypeError, ValueError) as exc:
            problems.append(f"input contract inputs unusable ({_one_line(exc)})")
        level = contract.get("product_level", PRODUCT_LEVEL)
        if level not in PRODUCT_LEVELS:
            problems.append(f"input contract product_level {level!r} is not one of {', '.join(PRODUCT_LEVELS)}")
    legend = None
    try:
        legend = artifact.legend
    except (KeyError, ConfigError) as exc:
        problems.append(f"model legend unusable ({_one_line(exc)})")
    network = None
    if not artifact.weights:
        problems.append(f"model has no {noun} weights")
    else:
        try:
            network = artifact.build()
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: state dict of the wrong shape
            problems.append(f"model {noun} does not build: {_one_line(exc)}")
    if network is not None:
        config = artifact.network_config
        inputs = config.in_features if isinstance(config, HeadConfig) else config.in_channels
        if legend is not None and config.n_classes != len(legend):
            problems.append(f"model legend has {len(legend)} classes, its {noun} {config.n_classes} outputs")
        if artifact.gate is None:
            problems.append("a model needs a novelty gate (suelo.novelty.fit_gate)")
        elif artifact.gate.whiten.shape[0] != inputs:
            problems.append(f"the novelty gate scores {artifact.gate.whiten.shape[0]} features, the {noun} takes "
                            f"{inputs} inputs")  # fmt: skip
    if artifact.encoder_state is not None and kind != PIXEL_HEAD:
        problems.append(f"a {kind} has no encoder of its own")
    return problems


def save_artifact(artifact: ModelArtifact, path: str | Path) -> None:
    """Write ``artifact`` atomically as one weights-only torch file of format 3; a model that would not load
    again (:func:`artifact_problems`) is a ValueError and nothing is written."""
    from suelo.atomic import atomic_output

    problems = artifact_problems(artifact)
    if problems:
        raise ValueError("; ".join(problems))
    assert artifact.gate is not None
    network = NETWORK[artifact.kind]
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": artifact.kind,
        "meta": json.dumps(pack_split_ids(artifact.meta), sort_keys=True, default=_json_default),
    }
    payload.update({f"{network}.{k}": v.detach().cpu().contiguous() for k, v in artifact.weights.items()})
    if artifact.encoder_state is not None:
        payload.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in artifact.encoder_state.items()})
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


def load_artifact(path: str | Path, kind: str | None = PIXEL_HEAD) -> ModelArtifact:
    """Read a model file with ``weights_only=True`` and check it (:func:`artifact_problems`). ``kind``: the kind
    the caller can use (None: either); a file of another kind, anything not a suelo model (a pickle, a plain
    state dict) and every problem are one :class:`ModelFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for pickles with code, RuntimeError/EOFError for non-torch files
        raise ModelFileError(
            path, "not a suelo model artifact " + f"(not a weights-only torch file: {type(exc).__name__})"
        ) from exc
    payload = _upgrade(payload, path)
    found = payload.get("kind")
    if found not in KINDS:
        raise ModelFileError(path, f"unknown model kind {found!r} (one of {', '.join(KINDS)})")
    if kind is not None and found != kind:
        raise ModelFileError(path, f"is a {KIND_NAMES[found]} file; a {KIND_NAMES[kind]} is needed here")
    try:
        meta = unpack_split_ids(json.loads(payload["meta"]))
        if not isinstance(meta, dict):
            raise TypeError(f"meta is a {type(meta).__name__}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, "artifact has no readable meta") from exc

    def tensors(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in payload.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}

    arrays = {k: v.numpy() for k, v in tensors("novelty.").items()}
    try:
        gate = NoveltyGate.from_parts(meta.get("novelty") or {}, arrays, "model")
    except ValueError as exc:
        raise ModelFileError(path, f"artifact has no usable novelty gate ({_one_line(exc)})") from exc
    artifact = ModelArtifact(meta, tensors(f"{NETWORK[found]}."), tensors("encoder.") or None, path, gate, found)
    problems = artifact_problems(artifact)
    if problems:
        raise ModelFileError(path, "; ".join(problems))
    return artifact


def _upgrade(payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` as format 3 (in memory): format 2 of the land-cover model and the segmenter's file before
    format 3 are read as they would have been written today; anything else is refused."""
    if not isinstance(payload, dict):
        raise ModelFileError(path, f"not a suelo model artifact (no format={FORMAT!r} entry)")
    if payload.get("format") == LEGACY_FORMAT:
        version = payload.get("format_version")
        if version == 2:
            return payload | {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": PIXEL_HEAD}
        if isinstance(version, int) and version < 2:
            raise ModelFileError(
                path,
                f"model format {version} was made before novelty gates and cannot say where it does not apply; "
                "retrain it with `suelo train`",
            )
        raise ModelFileError(path, f"artifact format version {version!r}; this suelo reads up to {FORMAT_VERSION}")
    if payload.get("format") is None and isinstance(payload.get("config_json"), str):
        return _upgrade_segmenter(payload, path)
    if payload.get("format") != FORMAT:
        raise ModelFileError(path, f"not a suelo model artifact (no format={FORMAT!r} entry)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version != FORMAT_VERSION:
        raise ModelFileError(path, f"artifact format version {version!r}; this suelo reads up to {FORMAT_VERSION}")
    return payload


def _upgrade_segmenter(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """A segmenter file of before format 3 (``state.*`` tensors, ``config_json`` and one ``<key>_json`` per
    extra, as ``save_segmenter`` wrote it) as format 3."""
    if "novelty_json" not in payload and not any(k.startswith("novelty.") for k in payload):
        raise ModelFileError(path, "segmenter made before novelty gates; retrain it with suelo train --model segmenter")
    try:
        extras = {k[: -len("_json")]: json.loads(v) for k, v in payload.items() if k.endswith("_json")}
        config = SegmenterConfig.from_dict(extras.pop("config"))
        meta = segmenter_meta(config, **extras)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"not a usable suelo segmenter ({type(exc).__name__}: {_one_line(exc)})") from exc
    upgraded = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": SEGMENTER, "meta": json.dumps(meta)}
    upgraded |= {f"unet.{k[len('state.') :]}": v for k, v in payload.items() if k.startswith("state.")}
    return upgraded | {k: v for k, v in payload.items() if k.startswith("novelty.")}


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
    *,
    inputs: Sequence[str] = LEGACY_INPUTS,
    mask_missing_inputs: bool = False,
) -> list[str]:
    """What keeps inputs of ``bands`` x ``n_months`` months of ``levels`` scenes from feeding a model with this
    input ``contract`` (empty when they fit). Shared by the plan-time checks of a job (land-cover model and
    segmenter) and the load-time check of a cube, so all say the same thing. ``allow_fewer_months``: fewer months
    than the contract's are accepted (the encoder takes the months there are; more never are); ``opt_in_key``: the
    job-spec section whose ``allow_fewer_months`` (and ``mask_missing_inputs``) would accept them, named in the
    problem. ``inputs``: the encoder inputs the cube or job offers (:data:`INPUTS`); one the model was trained with
    that they lack is a problem unless ``mask_missing_inputs`` (the encoder then sees it masked, which Presto was
    pre-trained to take but which costs accuracy: benchmarks/INPUTS.md)."""
    problems = []
    offered = set(inputs)
    key = opt_in_key or "products.landcover"
    for name in contract_inputs(contract):
        if name not in offered and name in INPUT_KINDS and not mask_missing_inputs:
            problems.append(
                f"trained with {INPUT_NAMES[name]} ({name}) which this cube/job lacks; add a {INPUT_KINDS[name]} "
                f"input or set {key}.mask_missing_inputs: true"
            )
    if contract.get("normalization") not in NORMALIZATIONS.values():
        supported = ", ".join(NORMALIZATIONS.values())
        problems.append(f"model normalization {contract.get('normalization')!r} is not supported ({supported})")
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
    artifact: ModelArtifact,
    cube: Any,
    cube_name: str | Path = "cube",
    allow_fewer_months: bool = False,
    *,
    inputs: Sequence[str] | None = None,
    mask_missing_inputs: bool = False,
) -> None:
    """Raise InputError naming ``cube_name`` when the cube cannot feed the model (bands, months, level, the
    encoder inputs it was trained with: ``inputs``, by default ``("s2",)`` plus what the cube holds,
    :func:`cube_inputs`; ``mask_missing_inputs`` accepts lacking ones)."""
    if "reflectance" not in cube or "band" not in cube.coords or "time" not in cube.coords:
        raise InputError(cube_name, "not a monthly cube (needs reflectance (time, band, y, x))")
    times = cube["time"].values.astype("datetime64[M]").astype(np.int64)
    consecutive = len(times) < 2 or bool((np.diff(times) == 1).all())
    have = [str(b) for b in cube["band"].values]
    problems = contract_problems(
        artifact.contract, have, int(cube.sizes["time"]), consecutive, cube_levels(cube), allow_fewer_months,
        inputs=cube_inputs(cube) if inputs is None else inputs, mask_missing_inputs=mask_missing_inputs,
    )  # fmt: skip
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
    *,
    inputs: Sequence[str] = LEGACY_INPUTS,
    mask_missing_inputs: bool = False,
) -> None:
    """Plan-time check of a model file against the job it is to serve, naming the model file: the model itself
    (:func:`artifact_problems`, as on load, for an artifact made in memory) and a contract the job's cube will
    meet (its ``bands``, ``n_months`` consecutive months, the scenes' product ``levels`` and the encoder ``inputs``
    the job's entries supply, :func:`job_inputs`; ``mask_missing_inputs`` accepts lacking ones)."""
    problems = artifact_problems(artifact)
    if problems:
        raise ModelFileError(path, "; ".join(problems))
    levels = sorted({normalize_level(lv) or str(lv) for lv in levels})
    problems = contract_problems(
        artifact.contract, bands, n_months, True, levels, allow_fewer_months, key, inputs=inputs,
        mask_missing_inputs=mask_missing_inputs,
    )  # fmt: skip
    if problems:
        raise InputError(path, "does not fit this job (" + "; ".join(problems).replace("cube has", "ingest.bands")
                         + ")")  # fmt: skip


# -- the segmenter's saving / loading -------------------------------------------------------------------------------


# The segmenter's view of its artifact (kind "segmenter"): callers read and write a flat
# dict of extras ("legend_codes", "bands", "months", ... as segmenter files held them before format 3); the file
# stores each fact once (legend, input contract, network config), and these are derived from it on load.
_DERIVED = ("legend_codes", "legend_names", "bands", "months", "product_level", "feature_names", "gate", "unet",
            "encoder_weights_sha256")  # fmt: skip


def _legend_of(codes: Sequence[int], names: Sequence[str] | None) -> list[dict[str, Any]]:
    """A {code, name, color} legend for class codes: Urban Atlas colours (and names) where the code is one."""
    from suelo.urban_atlas import urban_atlas_legend

    known = {c.code: c for c in urban_atlas_legend()}
    names = list(names) if names else [known[int(c)].name if int(c) in known else str(c) for c in codes]
    return [{"code": int(c), "name": str(n), "color": known[int(c)].color if int(c) in known else "#808080"}
            for c, n in zip(codes, names, strict=True)]  # fmt: skip


def segmenter_meta(config: SegmenterConfig, **extra: Any) -> dict[str, Any]:
    """The artifact meta of a segmenter with ``config`` from flat extras: ``legend`` (or ``legend_codes`` and
    ``legend_names``), ``bands``, ``months``, ``product_level`` and ``encoder_weights_sha256`` (or an
    ``input_contract``) make the legend and the contract; the rest (metrics, calibration, thresholds, provenance,
    model_card, ...) is kept as it is. Missing facts are left for the contract check to name."""
    contract = extra.get("input_contract") or {}
    meta = {k: v for k, v in extra.items() if k not in _DERIVED}
    meta["unet"] = config.to_dict()
    codes = extra.get("legend_codes")
    if extra.get("legend"):
        meta["legend"] = extra["legend"]
    elif codes:
        meta["legend"] = _legend_of(codes, extra.get("legend_names"))
    bands, months = extra.get("bands", contract.get("bands")), extra.get("months", contract.get("months"))
    if bands is not None and months is not None:
        meta["input_contract"] = input_contract(
            list(bands), int(months), extra.get("encoder_weights_sha256", contract.get("encoder_weights_sha256")),
            extra.get("product_level", contract.get("product_level", PRODUCT_LEVEL)), SEGMENTER_NORMALIZATION,
        )  # fmt: skip
    return meta


def save_segmenter(model: UNetSegmenter, path: str | Path, **extra: Any) -> None:
    """Write ``model`` (with its ``novelty_gate``) and ``extra`` as a segmenter artifact (
    :func:`segmenter_meta` for what ``extra`` holds). ``extra`` may be what :func:`load_segmenter` returned, so a
    loaded file can be re-saved with changed extras. A model that could not be loaded again (no gate, a gate of
    other inputs, no legend or contract) is a ValueError and nothing is written."""
    if model.novelty_gate is None:
        # a file without a gate could not be loaded again: refuse it here rather than at the next job
        raise ValueError("a segmenter needs a novelty gate (model.novelty_gate, suelo.novelty.fit_gate)")
    meta = segmenter_meta(model.config, **extra) | {"novelty": model.novelty_gate.meta()}
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_artifact(ModelArtifact(meta, weights, None, None, model.novelty_gate, SEGMENTER), path)


def load_segmenter(path: Any) -> tuple[UNetSegmenter, dict[str, Any]]:
    """The model (eval mode, ``novelty_gate`` set) and the extras of a segmenter artifact, checked on load
    (suelo.models.artifact.load_artifact): everything in its meta, plus the flat view ``legend_codes``,
    ``legend_names``, ``bands``, ``months``, ``product_level``, ``feature_names`` and ``gate`` (the
    :class:`suelo.novelty.NoveltyGate` itself; its scalars are the meta's ``novelty``)."""
    artifact = load_artifact(path, SEGMENTER)
    model = artifact.build()
    assert isinstance(model, UNetSegmenter) and artifact.gate is not None
    legend, contract = artifact.legend, artifact.contract
    extras = dict(artifact.meta) | {
        "legend_codes": list(legend.codes),
        "legend_names": list(legend.names),
        "legend": legend.to_list(),
        "bands": list(contract["bands"]),
        "months": int(contract["months"]),
        "product_level": contract.get("product_level", "L2A"),
        "feature_names": list(model.config.feature_names),
        "gate": artifact.gate,
    }
    return model, extras
