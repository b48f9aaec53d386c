"""Property-based fuzzing of the parsers that read user files: only the documented error type may escape.

- job specs (``load_job`` / ``validate_job``): ConfigError,
- legends (``load_legend``): ConfigError,
- SAFE product metadata (``MTD_MSIL2A.xml``): InputError.

Each has a quick version (50 examples) in the default run and a long one (>= 1000 examples) marked slow.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suelo.errors import ConfigError, InputError
from suelo.ingest import safe
from suelo.legend import load_legend
from suelo.settings import load_job, validate_job
from tests.fixtures import build_safe

QUICK = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))

KEYS = [
    "name", "inputs", "kind", "paths", "period", "start", "end", "aoi", "bbox", "file", "crs", "grid", "resolution",
    "ingest", "bands", "masking", "scl_classes", "compute", "block_size", "workers", "scheduler", "products",
    "landcover", "urban_atlas", "enabled", "model", "threshold", "target_accuracy", "output", "dir", "tiles", "x",
]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["safe", "stac", "geotiff", "stac_api", "2021-01-01", "2021-13-45", "EPSG:32631", "B02", "\0",
                     "local", "tcp://x:1", "https://example.invalid", "../..", "1e308", "-1"]),
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=30,
)
job_like = st.dictionaries(st.sampled_from(KEYS), documents, max_size=8).map(
    lambda d: {"inputs": [{"kind": "stac", "paths": ["a.json"]}], "period": {"start": "2021-01-01"}, **d}
)


def check_job_dict(data: object) -> None:
    with contextlib.suppress(ConfigError):
        validate_job(data)  # type: ignore[arg-type]


def check_job_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if _encodable(text) else path.write_bytes(
            text.encode("utf-8", "replace")
        )
        with contextlib.suppress(ConfigError):
            load_job(path)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


yaml_texts = st.one_of(
    st.text(max_size=300),
    st.one_of(documents, job_like).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.tuples(job_like, st.sampled_from(["!!python/object/apply:os.system ['true']", "&a [*a]", "{", "]", "!!binary x",
                                         "? [a]\n: b", "*undefined", "!!float nope", "%TAG ! x"]),
              st.integers(0, 200)).map(
        lambda t: (lambda s: s[: t[2]] + t[1] + s[t[2]:])(yaml.safe_dump(t[0]))  # splice a hostile token anywhere
    ),
)  # fmt: skip


@QUICK
@given(st.one_of(job_like, documents))
def test_job_dicts_quick(data: object) -> None:
    check_job_dict(data)


@QUICK
@given(yaml_texts)
def test_job_yaml_quick(text: str) -> None:
    check_job_text(text)


@pytest.mark.slow
@LONG
@given(st.one_of(job_like, documents))
def test_job_dicts_long(data: object) -> None:
    check_job_dict(data)


@pytest.mark.slow
@LONG
@given(yaml_texts)
def test_job_yaml_long(text: str) -> None:
    check_job_text(text)


# -- legends ------------------------------------------------------------------------------------------------------

legend_entries = st.one_of(
    st.fixed_dictionaries(
        {
            "code": st.one_of(st.integers(-5, 70000), st.booleans(), st.floats(), st.text(max_size=5), st.none()),
            "name": st.one_of(st.text(max_size=10), st.integers(), st.none(), st.sampled_from(["A b", "a_B", "!!"])),
            "color": st.one_of(st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True), st.text(max_size=8), st.integers()),
        }
    ),
    documents,
)
legend_documents = st.one_of(
    st.lists(legend_entries, max_size=6),
    st.fixed_dictionaries({"classes": st.lists(legend_entries, max_size=4)}),
    documents,
)


def check_legend(document: object, suffix: str, raw: bytes | None = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"legend{suffix}"
        if raw is not None:
            path.write_bytes(raw)
        else:
            import json

            text = json.dumps(document, allow_nan=True) if suffix == ".json" else yaml.safe_dump(document)
            path.write_text(text, encoding="utf-8")
        with contextlib.suppress(ConfigError):
            load_legend(path)


legend_cases = st.one_of(
    st.tuples(legend_documents, st.sampled_from([".yaml", ".json"]), st.none()),
    st.tuples(st.none(), st.sampled_from([".yaml", ".json"]), st.binary(max_size=200)),
)


@QUICK
@given(legend_cases)
def test_legend_quick(case: tuple) -> None:
    check_legend(*case)


@pytest.mark.slow
@LONG
@given(legend_cases)
def test_legend_long(case: tuple) -> None:
    check_legend(*case)


# -- SAFE metadata ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtd_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    product = build_safe(tmp_path_factory.mktemp("mtd"))
    return (product / "MTD_MSIL2A.xml").read_text(encoding="utf-8")


FIELDS = [
    "PRODUCT_START_TIME", "PROCESSING_BASELINE", "BOA_QUANTIFICATION_VALUE", "BOA_ADD_OFFSET", "PROCESSING_LEVEL",
    "PRODUCT_URI", "SPECIAL_VALUE_INDEX", "SPECIAL_VALUE_TEXT",
]  # fmt: skip
values = st.one_of(
    st.text(max_size=30), st.integers().map(str), st.floats().map(str),
    st.sampled_from(["99999-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00",
                     "2021-06-01T10:00:00+99:99", "-10000", "1e-300", "NaN", "inf", "04.00", "4", "N9999.99", "",
                     "² ", "١٢", "&amp;", "<x>", "]]>", "Level-2A", "Level-1C"]),
)  # fmt: skip
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("value"), st.sampled_from(FIELDS), values),
        st.tuples(st.just("attr"), st.integers(0, 12), values),
        st.tuples(st.just("drop"), st.sampled_from(FIELDS), st.just("")),
        st.tuples(st.just("cut"), st.integers(0, 10_000), st.just("")),
        st.tuples(st.just("insert"), st.integers(0, 10_000), values),
    ),
    min_size=1,
    max_size=4,
)


def mutate(text: str, steps: list[tuple[str, object, str]]) -> bytes:
    from xml.sax.saxutils import escape

    for kind, where, value in steps:
        if kind == "value" and f"<{where}" in text:
            start = text.find(">", text.index(f"<{where}")) + 1
            end = text.find("<", start)
            if start > 0 and end > 0:
                text = text[:start] + escape(value) + text[end:]
        elif kind == "attr":
            text = text.replace(f'band_id="{where}"', f'band_id="{escape(value, {chr(34): "&quot;"})}"', 1)
        elif kind == "drop" and f"<{where}" in text and f"</{where}>" in text:
            start, end = text.index(f"<{where}"), text.index(f"</{where}>") + len(f"</{where}>")
            text = text[:start] + text[end:]
        elif kind == "cut":
            text = text[: int(where) % (len(text) + 1)]
        elif kind == "insert":
            at = int(where) % (len(text) + 1)
            text = text[:at] + value + text[at:]
    return text.encode("utf-8", "surrogatepass") if _encodable(text) else text.encode("utf-8", "replace")


def check_metadata(data: bytes) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "MTD_MSIL2A.xml").write_bytes(data)
        product = safe._Product(folder, str(folder), ("MTD_MSIL2A.xml",))
        try:
            metadata = safe._parse_metadata(product, "MTD_MSIL2A.xml")
        except InputError:
            return
        # what parsed must be usable: positive finite quantification, finite offsets, an aware time
        assert 0 < metadata.radiometry.quantification < float("inf")
        assert all(abs(v) < float("inf") for v in metadata.radiometry.offsets.values())
        assert metadata.acquired.tzinfo is not None
    finally:
        shutil.rmtree(folder)


@QUICK
@given(mutations)
def test_safe_metadata_quick(mtd_text: str, steps: list) -> None:
    check_metadata(mutate(mtd_text, steps))


@QUICK
@given(st.binary(max_size=500))
def test_safe_metadata_garbage_quick(data: bytes) -> None:
    check_metadata(data)


@pytest.mark.slow
@LONG
@given(mutations)
def test_safe_metadata_long(mtd_text: str, steps: list) -> None:
    check_metadata(mutate(mtd_text, steps))


@pytest.mark.slow
@LONG
@given(st.binary(max_size=2000))
def test_safe_metadata_garbage_long(data: bytes) -> None:
    check_metadata(data)
