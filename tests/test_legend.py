"""Legend files: the shipped LANDCOVER10 legend and every validation error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suelo.errors import ConfigError
from suelo.legend import DEFAULT_LEGEND, Legend, load_legend


def test_shipped_landcover10_legend() -> None:
    legend = load_legend(DEFAULT_LEGEND)
    assert legend.codes == tuple(range(1, 11))
    assert [c.key() for c in legend] == [
        "temporary_crops", "temporary_grasses", "permanent_crops", "grasslands", "trees",
        "shrubland", "built_up", "water", "wetlands", "bare_sparsely_vegetated",
    ]  # fmt: skip
    assert not {0, 253, 254} & set(legend.codes)  # reason codes belong to the map writer
    assert len(set(legend.colors)) == 10
    assert legend.code_for("Temporary crops") == 1 and legend.code_for("built_up") == 7 and legend.code_for(99) is None


def test_json_and_yaml_load_the_same(tmp_path: Path) -> None:
    items = [{"code": 1, "name": "A", "color": "#00FF00"}, {"code": 300, "name": "B", "color": "#000000"}]
    (tmp_path / "l.json").write_text(json.dumps(items))
    legend = load_legend(tmp_path / "l.json")
    assert legend == Legend.from_list(items)
    assert legend.colors == ("#00ff00", "#000000")
    assert legend.subset([300]).names == ("B",)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [{"code": 1, "name": "A", "color": "#000000"}, {"code": 1, "name": "B", "color": "#000001"}],
            "duplicate code 1",
        ),
        (
            [{"code": 1, "name": "Trees", "color": "#000000"}, {"code": 2, "name": "trees", "color": "#000001"}],
            "duplicate name",
        ),
        ([{"code": 1, "name": "A", "color": "green"}], "color must be '#rrggbb'"),
        ([{"code": 1, "name": "A", "color": "#12345"}], "color must be '#rrggbb'"),
        ([{"code": 65536, "name": "A", "color": "#000000"}], "code must be an integer in 0..65535"),
        ([{"code": -1, "name": "A", "color": "#000000"}], "code must be an integer in 0..65535"),
        ([{"code": 1, "name": "", "color": "#000000"}], "name must be a non-empty string"),
        ([{"code": 1, "name": "A"}], "exactly the keys"),
        ([], "non-empty list"),
    ],
)
def test_invalid_legends_name_the_file(tmp_path: Path, items: list, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(items))  # JSON is valid YAML
    with pytest.raises(ConfigError, match=message) as info:
        load_legend(path)
    assert str(path) in str(info.value)


def test_unreadable_legend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read legend"):
        load_legend(tmp_path / "missing.yaml")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_legend(tmp_path / "x.json")
