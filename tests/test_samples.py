"""Sample loaders on tiny real-format files, exact pixel selection on a tiny cube, and the spatial split."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import Point, box

from suelo.errors import InputError
from suelo.samples import Samples, load_samples, load_worldcereal, sample_raster, sample_vector, spatial_split
from tests.fixtures import BANDS, tiny_cube

CROPS, IGNORED, TREES = 1100000000, 1000000000, 4300000000  # temporary_crops, ignore, trees in LANDCOVER10


def _long_frame(timestamps: list[pd.Timestamp], value: callable, sample: str, ewoc: int, lat: float) -> pd.DataFrame:
    rows = []
    for k, ts in enumerate(timestamps):
        row = {"sample_id": sample, "timestamp": ts, "ewoc_code": ewoc, "lat": lat, "lon": 5.0}
        row.update({f"S2-L2A-{b}": value(k, i) for i, b in enumerate(BANDS)})
        row["S2-L2A-B8A"] = 65535
        row.update(valid_time="2022-06-01", start_date="2021-09-01", end_date="2023-01-31", tile="31UFS")
        rows.append(row)
    return pd.DataFrame(rows)


def test_long_monthly_takes_12_months_around_valid_time(tmp_path: Path) -> None:
    months = list(pd.date_range("2021-09-01", "2023-01-01", freq="MS"))  # 17 steps like the real file
    df = pd.concat(
        [
            _long_frame(months, lambda k, b: 100 * k + b, "a", CROPS, 45.0),
            _long_frame(months, lambda k, b: 65535 if k == 5 else 1000 + b, "b", TREES, 46.0),
            _long_frame(months, lambda k, b: 7, "c", IGNORED, 47.0),
        ]
    )
    path = tmp_path / "month.geoparquet"
    df.to_parquet(path)
    s = load_worldcereal(path)
    assert list(s.sample_ids) == ["a", "b"] and list(s.labels) == [1, 5]  # "ignore" dropped
    assert s.reflectance.shape == (2, 12, 9) and s.band_names == tuple(BANDS)
    # valid_time 2022-06 sits at position 6: the window is 2021-12 .. 2022-11, i.e. steps 3..14 of the file
    assert list(s.start_month) == [11, 11]
    expected = (100 * np.arange(3, 15)[:, None] + np.arange(9)[None]) / 1e4
    np.testing.assert_allclose(s.reflectance[0], expected, rtol=1e-6)
    assert np.isnan(s.reflectance[1, 2]).all()  # step 5 of the file (2022-02) was 65535 = no data
    np.testing.assert_allclose(s.reflectance[1, 3], (1000 + np.arange(9)) / 1e4, rtol=1e-6)
    np.testing.assert_allclose(s.latlons, [[45.0, 5.0], [46.0, 5.0]])


def test_long_dekads_become_monthly_medians_of_valid_values(tmp_path: Path) -> None:
    months = pd.date_range("2021-09-01", "2022-12-01", freq="MS")
    dekads = [m + pd.Timedelta(days=d) for m in months for d in (0, 10, 20)]
    # per month: dekad values 100, 300 and a cloudy 65535 -> median of valid = 200; the valid month is offset

    def value(k: int, b: int) -> int:
        return 65535 if k % 3 == 2 else (100, 300)[k % 3] + 1000 * (k // 3) + b

    df = _long_frame(dekads, value, "d", CROPS, 45.0)
    path = tmp_path / "dekad.geoparquet"
    df.to_parquet(path)
    s = load_worldcereal(path)
    assert s.reflectance.shape == (1, 12, 9) and s.start_month[0] == 11
    month_of_file = np.arange(3, 15)  # 2021-12 .. 2022-11 of a series starting 2021-09
    expected = (200 + 1000 * month_of_file[:, None] + np.arange(9)[None]) / 1e4
    np.testing.assert_allclose(s.reflectance[0], expected, rtol=1e-6)


def test_wide_format_reads_ts_columns_from_start_date(tmp_path: Path) -> None:
    data: dict[str, list] = {"sample_id": ["w1", "w2"], "ewoc_code": [CROPS, TREES], "lat": [4.0, 3.0],
                             "lon": [33.0, 32.0], "start_date": ["2016-12-01", "2017-03-01"]}  # fmt: skip
    for b, band in enumerate([*BANDS, "B8A"]):
        res = "10m" if band in ("B02", "B03", "B04", "B08") else "20m"
        for t in range(12):
            data[f"OPTICAL-{band}-ts{t}-{res}"] = [10 * t + b, 65535 if t == 0 else 5]
    path = tmp_path / "wide.parquet"
    pd.DataFrame(data).to_parquet(path)
    s = load_worldcereal(path)
    assert list(s.labels) == [1, 5] and list(s.start_month) == [11, 2]
    np.testing.assert_allclose(s.reflectance[0], (10 * np.arange(12)[:, None] + np.arange(9)[None]) / 1e4, rtol=1e-6)
    assert np.isnan(s.reflectance[1, 0]).all() and (s.reflectance[1, 1:] == np.float32(5e-4)).all()


def test_worldcereal_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(InputError, match="no column 'sample_id'"):
        load_worldcereal(path)


def _wgs84(x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(x, y)


def test_points_pick_the_pixel_containing_them(tmp_path: Path) -> None:
    cube = tiny_cube()
    # inside pixel (row 1, col 2), near its corner; the second point is off the cube
    lon, lat = _wgs84(664020.5, 5611989.5)
    far_lon, far_lat = _wgs84(600000, 5600000)
    path = tmp_path / "pts.csv"
    pd.DataFrame({"lon": [lon, far_lon], "lat": [lat, far_lat], "cls": ["Trees", "Water"]}).to_csv(path, index=False)
    s = sample_vector(cube, path, "cls")
    assert len(s) == 1 and s.labels[0] == 5
    np.testing.assert_allclose(s.reflectance[0, :, 0], 0.12)  # (10 * 1 + 2) / 100 at every month
    np.testing.assert_allclose(s.reflectance[0, 0], 0.12 + np.arange(9) / 1000, rtol=1e-6)


def test_polygons_take_pixels_whose_centre_is_inside(tmp_path: Path) -> None:
    cube = tiny_cube()
    # covers the centres of (row 0, cols 0..1) and (row 1, cols 0..1), and touches (row 2, col 0) without its centre
    poly = box(664001, 5611979, 664019, 5611999)
    gdf = gpd.GeoDataFrame({"cls": [4], "geometry": [poly]}, crs="EPSG:32631").to_crs("EPSG:4326")
    path = tmp_path / "poly.gpkg"
    gdf.to_file(path)
    s = sample_vector(cube, path, "cls")
    assert sorted(np.round(s.reflectance[:, 0, 0] * 100).astype(int).tolist()) == [0, 1, 10, 11]
    assert set(s.labels) == {4}
    assert len(set(s.groups)) == 1  # a polygon's pixels share one block: it never straddles the split


def test_unknown_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pts.geojson"
    gpd.GeoDataFrame({"cls": ["forest"], "geometry": [Point(664015, 5611995)]}, crs="EPSG:32631").to_file(path)
    with pytest.raises(InputError, match="labels not in the legend"):
        sample_vector(tiny_cube(), path, "cls")


def test_label_raster_on_another_grid_skips_nodata(tmp_path: Path) -> None:
    cube = tiny_cube()
    # 20 m label pixels aligned with the cube: each covers 2 x 2 cube pixels; nodata = 0
    labels = np.array([[5, 0, 8], [0, 0, 1]], dtype=np.uint8)
    path = tmp_path / "labels.tif"
    profile = {"driver": "GTiff", "width": 3, "height": 2, "count": 1, "dtype": "uint8", "crs": "EPSG:32631",
               "transform": rasterio.transform.from_origin(664000, 5612000, 20, 20), "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
    s = sample_raster(cube, path)
    got = {round(v * 100): int(c) for v, c in zip(s.reflectance[:, 0, 0], s.labels, strict=True)}
    assert got == {0: 5, 1: 5, 10: 5, 11: 5, 4: 8, 14: 8, 24: 1, 34: 1}


def test_load_samples_needs_a_cube_for_labels(tmp_path: Path) -> None:
    path = tmp_path / "pts.csv"
    pd.DataFrame({"lon": [5.3], "lat": [50.6], "cls": [1]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="--cube"):
        load_samples([path])


def test_spatial_split_never_shares_a_block_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    n = 500
    latlons = np.stack([rng.uniform(40, 42, n), rng.uniform(0, 3, n)], axis=-1)
    s = Samples(np.zeros((n, 12, 9), np.float32), BANDS, np.zeros(n), latlons, np.ones(n), np.arange(n).astype(str))
    train, val = spatial_split(s, block_m=20_000, val_fraction=0.25, seed=3)
    assert len(train) + len(val) == n and not set(train) & set(val)
    from suelo.samples import spatial_blocks

    blocks = spatial_blocks(latlons, 20_000)
    assert not set(blocks[train]) & set(blocks[val])
    assert 0.15 * n <= len(val) <= 0.25 * n
    again = spatial_split(s, block_m=20_000, val_fraction=0.25, seed=3)
    assert (again[1] == val).all()
    assert not np.array_equal(spatial_split(s, block_m=20_000, val_fraction=0.25, seed=4)[1], val)
