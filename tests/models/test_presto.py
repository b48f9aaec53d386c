"""Presto encoder: parity with the reference implementation, input contract, masking, loading, cube inference."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from suelo.grid import Grid
from suelo.models.cpu_engine import CpuEngine, attention_torch, executed_flops_per_pixel
from suelo.models.inference import (
    CUBE_READ_PIXELS,
    GPU_BATCH,
    cpu_engine,
    cube_read_pixels,
    encode_cube,
    encode_pixels,
)
from suelo.models.presto import (
    CHANNELS,
    DEFAULT_WEIGHTS,
    Encoder,
    PrestoConfig,
    count_parameters,
    flops_per_pixel,
    load_presto_encoder,
    month_table,
    sinusoid_table,
)
from suelo.models.presto_inputs import cube_to_pixels, presto_inputs
from tests.fixtures import TEST_DATA

PARITY = TEST_DATA / "presto_parity.npz"
S2_DN_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
TOL = 1e-4


@pytest.fixture(scope="module")
def parity() -> dict[str, np.ndarray]:
    with np.load(PARITY) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_presto_encoder()


Model = Encoder | CpuEngine


@pytest.fixture(scope="module", params=["plain modules", "cpu engine"])
def model(request: pytest.FixtureRequest, encoder: Encoder) -> Model:
    """The model's own forward and the CPU engine that production runs on a CPU: every contract holds for both."""
    return encoder if request.param == "plain modules" else CpuEngine(encoder)


def run(model: Model, x: np.ndarray, mask: np.ndarray, dw: np.ndarray, ll: np.ndarray, month: int) -> np.ndarray:
    with torch.inference_mode():
        out = model(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(dw), torch.from_numpy(ll), month)
    return out.numpy()


def random_inputs(n: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    refl = rng.uniform(0.01, 0.5, size=(n, t, len(S2_DN_BANDS))).astype(np.float32)
    refl[rng.random((n, t)) < 0.3] = np.nan  # cloudy months, different per pixel
    latlons = np.stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)], -1).astype(np.float32)
    x, mask, dw = presto_inputs(refl, S2_DN_BANDS, latlons=latlons)
    return x, mask, dw, latlons


# (a) parity with the reference encoder -------------------------------------------------------------------------


def test_parity_masked_pixels_in_one_batch(model: Model, parity: dict[str, np.ndarray]) -> None:
    emb = run(
        model, parity["x"], parity["mask"], parity["dynamic_world"], parity["latlons"], int(parity["start_month"])
    )
    err = float(np.abs(emb - parity["embeddings"]).max())
    print(f"parity max abs error, 256 masked pixels in one batch: {err:.3g}")
    assert err < TOL


def test_parity_with_mixed_masks_in_one_batch(model: Model, parity: dict[str, np.ndarray]) -> None:
    # The 256 pixels share one mask (two empty months), so also batch them with the 16 unmasked-month pixels: a
    # batch the reference could not run (it needs equal mask counts), checked against its per-set outputs.
    n = len(parity["x_full"])
    x = np.concatenate([parity["x"], parity["x_full"]])
    mask = np.concatenate([parity["mask"], parity["mask_full"]])
    dw = np.concatenate([parity["dynamic_world"], parity["dynamic_world"][:n]])
    ll = np.concatenate([parity["latlons"], parity["latlons"][:n]])
    assert len(np.unique(mask.sum(axis=(1, 2)))) == 2
    emb = run(model, x, mask, dw, ll, int(parity["start_month"]))
    expected = np.concatenate([parity["embeddings"], parity["embeddings_full"]])
    err = float(np.abs(emb - expected).max())
    print(f"parity max abs error, 272 pixels with two mask patterns in one batch: {err:.3g}")
    assert err < TOL


def test_parity_full_pixels(model: Model, parity: dict[str, np.ndarray]) -> None:
    n = len(parity["x_full"])
    emb = run(
        model,
        parity["x_full"],
        parity["mask_full"],
        parity["dynamic_world"][:n],
        parity["latlons"][:n],
        int(parity["start_month"]),
    )
    err = float(np.abs(emb - parity["embeddings_full"]).max())
    print(f"parity max abs error, {n} full pixels: {err:.3g}")
    assert err < TOL


def test_weights_and_fixed_tables(encoder: Encoder) -> None:
    assert count_parameters(encoder) == 402_240
    cfg = PrestoConfig()
    # the tables stored in the published file are the ones we compute (base 1000, January = 0)
    expected_pos = sinusoid_table(cfg.max_sequence_length, cfg.position_embed_size, cfg.position_base)
    torch.testing.assert_close(encoder.pos_embed[0], expected_pos, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoder.month_embed.weight, month_table(cfg.month_embed_size), atol=1e-6, rtol=0)
    assert flops_per_pixel(12) > flops_per_pixel(12, n_tokens=61) > flops_per_pixel(1) > 0


# (b) input contract ---------------------------------------------------------------------------------------------


def test_presto_inputs_reproduce_parity_inputs(parity: dict[str, np.ndarray]) -> None:
    dn = parity["s2_dn"]
    reflectance = np.where(dn == 65535, np.nan, dn / 10000).astype(np.float32)
    x, mask, dw = presto_inputs(reflectance, S2_DN_BANDS, latlons=parity["latlons"])
    np.testing.assert_array_equal(mask, parity["mask"].astype(bool))
    np.testing.assert_allclose(x, parity["x"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dw, parity["dynamic_world"])


def test_ndvi_masked_when_red_or_nir_missing() -> None:
    refl = np.full((2, 1, 2), 0.2, dtype=np.float32)
    refl[0, 0, 0] = np.nan  # B04 missing
    x, mask, _ = presto_inputs(refl, ("B04", "B08"))
    ndvi = CHANNELS.index("NDVI")
    assert mask[0, 0, ndvi] and x[0, 0, ndvi] == 0
    assert not mask[1, 0, ndvi] and x[1, 0, ndvi] == 0  # equal bands: a real NDVI of 0, kept
    assert mask[..., CHANNELS.index("B8A")].all() and mask[..., CHANNELS.index("VV")].all()


def test_other_sources_are_normalized() -> None:
    refl = np.full((1, 2, 1), 0.1, dtype=np.float32)
    s1 = np.array([[[-10.0, -20.0], [np.nan, -15.0]]])
    era5 = np.array([[[290.0, 0.003], [280.0, 0.0]]])
    x, mask, _ = presto_inputs(refl, ("B02",), s1=s1, era5=era5, srtm=np.array([[400.0, 5.0]]))
    c = {name: CHANNELS.index(name) for name in CHANNELS}
    assert x[0, 0, c["VV"]] == pytest.approx(0.6) and x[0, 0, c["VH"]] == pytest.approx(0.2)
    assert mask[0, 1, c["VV"]] and x[0, 1, c["VV"]] == 0
    assert x[0, 0, c["temperature"]] == pytest.approx((290 - 272.15) / 35)
    assert x[0, 0, c["precipitation"]] == pytest.approx(0.1)
    assert x[0, 1, c["elevation"]] == pytest.approx(0.2) and x[0, 1, c["slope"]] == pytest.approx(0.1)
    assert not mask[..., [c["temperature"], c["elevation"]]].any()


# (c) different masks in one batch -------------------------------------------------------------------------------


def test_batch_equals_one_at_a_time(model: Model) -> None:
    x, mask, dw, ll = random_inputs(12, 12)
    months = np.arange(12) % 12
    with torch.inference_mode():
        together = model(*map(torch.from_numpy, (x, mask, dw, ll, months))).numpy()
        alone = np.concatenate(
            [model(*(torch.from_numpy(a[i : i + 1]) for a in (x, mask, dw, ll, months))).numpy() for i in range(12)]
        )
    assert len({int(m.sum()) for m in mask}) > 1  # the batch really mixes mask counts
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


# (d) sequence lengths and start months --------------------------------------------------------------------------


@pytest.mark.parametrize(("n_months", "start"), [(1, 0), (24, 11), (7, 11)])
def test_any_length_and_start_month(model: Model, n_months: int, start: int) -> None:
    x, mask, dw, ll = random_inputs(5, n_months, seed=n_months)
    emb = run(model, x, mask, dw, ll, start)
    assert emb.shape == (5, 128) and np.isfinite(emb).all()


def test_too_many_months_or_bad_month_raise(model: Model) -> None:
    x, mask, dw, ll = random_inputs(2, 25)
    with pytest.raises(ValueError, match=r"1\.\.24 months"):
        run(model, x, mask, dw, ll, 0)
    x, mask, dw, ll = random_inputs(2, 3)
    with pytest.raises(ValueError, match="start month"):
        run(model, x, mask, dw, ll, 12)


# (e) NaN inputs ---------------------------------------------------------------------------------------------------


def test_nan_equals_masked(model: Model) -> None:
    x, mask, dw, ll = random_inputs(4, 6)
    mask[:] = False  # all present, so the NaN below is the only difference
    x_nan = x.copy()
    x_nan[0, 2, CHANNELS.index("B11")] = np.nan
    x_masked, mask_masked = x.copy(), mask.copy()
    x_masked[0, 2, CHANNELS.index("B11")] = 0.7  # any value: the mask must make it irrelevant
    mask_masked[0, 2, CHANNELS.index("B11")] = True
    a = run(model, x_nan, mask, dw, ll, 3)
    b = run(model, x_masked, mask_masked, dw, ll, 3)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# (f) strict, safe loading -----------------------------------------------------------------------------------------


def test_loading_rejects_missing_keys_and_pickles(tmp_path: Path) -> None:
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    del state["encoder.blocks.1.mlp.fc2.bias"]
    truncated = tmp_path / "truncated.pt"
    torch.save(state, truncated)
    with pytest.raises(ValueError, match=r"missing \['blocks.1.mlp.fc2.bias'\]"):
        load_presto_encoder(truncated)

    reshaped = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    reshaped["encoder.blocks.0.mlp.fc1.weight"] = torch.zeros(256, 128)  # mlp_ratio 2, the upstream default
    torch.save(reshaped, tmp_path / "reshaped.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_presto_encoder(tmp_path / "reshaped.pt")

    pickled = tmp_path / "pickled.pt"
    with pickled.open("wb") as f:
        pickle.dump({"encoder.norm.weight": np.ones(128), "hook": Grid}, f, protocol=2)
    with pytest.raises(ValueError, match="not a weights-only"):
        load_presto_encoder(pickled)


# (g) cube inference -----------------------------------------------------------------------------------------------


def tiny_cube(ny: int = 5, nx: int = 3, t: int = 4) -> xr.Dataset:
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 650000, 0, -10, 5610000), ny, nx)
    rng = np.random.default_rng(1)
    refl = rng.uniform(0.01, 0.4, size=(t, len(S2_DN_BANDS), ny, nx)).astype(np.float32)
    valid = rng.random((t, ny, nx)) > 0.25
    refl[np.broadcast_to(~valid[:, None], refl.shape)] = np.nan
    times = np.array(
        [np.datetime64(f"2021-{m:02d}-01", "ns") for m in range(11, 13)]
        + [np.datetime64(f"2022-{m:02d}-01", "ns") for m in range(1, t - 1)]
    )
    return xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), refl), "valid": (("time", "y", "x"), valid)},
        coords={"time": times, "band": list(S2_DN_BANDS), "y": grid.y_coords(), "x": grid.x_coords()},
        attrs={"grid": json.dumps(grid.to_dict()), "crs": grid.crs.to_string()},
    )


def test_cube_to_pixels_order_and_coordinates() -> None:
    cube = tiny_cube()
    reflectance, latlons, start = cube_to_pixels(cube)
    assert start == 10  # November
    assert reflectance.shape == (15, 4, 9)
    np.testing.assert_array_equal(reflectance[1 * 3 + 2], cube["reflectance"].isel(y=1, x=2).values)
    assert np.all((latlons[:, 0] > 50) & (latlons[:, 0] < 51) & (latlons[:, 1] > 5) & (latlons[:, 1] < 6))
    assert latlons[0, 0] > latlons[3, 0] and latlons[1, 1] > latlons[0, 1]  # north first, then east


def test_cube_reads_give_a_gpu_full_batches() -> None:
    assert cube_read_pixels("cpu") == cube_read_pixels("cpu", 10**6) == CUBE_READ_PIXELS  # memory bound on CPU
    assert cube_read_pixels("cuda") == GPU_BATCH  # a descriptor only: no GPU needed to ask
    assert cube_read_pixels("cuda:1", 100) == CUBE_READ_PIXELS
    assert cube_read_pixels("cuda", 300_000) == 300_000


def test_encode_cube_matches_encode_pixels(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    cube = tiny_cube()
    # reads of 6 pixels = 2 rows per chunk, so the 5 rows take three chunks, the last one short
    monkeypatch.setattr("suelo.models.inference.CUBE_READ_PIXELS", 6)
    emb = encode_cube(encoder, cube, batch_size=4, device="cpu")
    assert emb.dims == ("y", "x", "feature") and emb.shape == (5, 3, 128)
    assert np.isfinite(emb.values).all()
    reflectance, latlons, start = cube_to_pixels(cube)
    x, mask, dw = presto_inputs(reflectance, S2_DN_BANDS, latlons=latlons)
    expected = encode_pixels(encoder, x, mask, dw, latlons, start, device="cpu")
    np.testing.assert_allclose(emb.values.reshape(15, 128), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(emb["x"].values, cube["x"].values)


def test_encode_pixels_bf16_is_close(encoder: Encoder, parity: dict[str, np.ndarray]) -> None:
    args = (parity["x"][:32], parity["mask"][:32], parity["dynamic_world"][:32], parity["latlons"][:32], 10)
    fp32 = encode_pixels(encoder, *args, batch_size=16, device="cpu")
    bf16 = encode_pixels(encoder, *args, batch_size=16, device="cpu", fast=True)
    assert fp32.dtype == np.float32 and np.abs(fp32 - parity["embeddings"][:32]).max() < TOL
    assert np.abs(bf16 - fp32).max() < 0.25


# (i) the CPU engine: the same function as the plain modules ----------------------------------------------------


def test_cpu_engine_equals_plain_modules(encoder: Encoder) -> None:
    x, mask, dw, ll = random_inputs(40, 12, seed=3)
    months = np.arange(40) % 12
    args = [torch.from_numpy(a) for a in (x, mask, dw, ll, months)]
    with torch.inference_mode():
        plain = encoder(*args).numpy()
        engine = CpuEngine(encoder)(*args).numpy()
        torch_forms = CpuEngine(encoder, kernels=False)(*args).numpy()  # no C kernels: their PyTorch equivalents
        bf16 = CpuEngine(encoder, torch.bfloat16)(*args).numpy()
    assert len({int(m.sum()) for m in mask}) > 1  # masked keys and padding are exercised
    np.testing.assert_allclose(engine, plain, rtol=0, atol=1e-5)
    np.testing.assert_allclose(torch_forms, plain, rtol=0, atol=1e-5)
    assert 1e-3 < np.abs(bf16 - plain).max() < 0.25  # really bf16, and still close


def test_cpu_engine_is_an_inference_snapshot(encoder: Encoder) -> None:
    """Built from the weights as they are; no gradients; the encoder's later changes do not reach it."""
    x, mask, dw, ll = random_inputs(8, 6, seed=5)
    args = [torch.from_numpy(a) for a in (x, mask, dw, ll)]
    other = load_presto_encoder().requires_grad_(True)
    engine = CpuEngine(other)
    before = engine(*args, 2)
    assert not before.requires_grad and other.blocks[0].attn.qkv.weight.requires_grad  # the encoder is untouched
    state = other.state_dict()
    state["blocks.1.mlp.fc2.weight"] = state["blocks.1.mlp.fc2.weight"] * 1.5
    state["latlon_embed.weight"] = state["latlon_embed.weight"] * 1.5  # the embedding is in the snapshot too
    other.load_state_dict(state)
    with torch.no_grad():
        plain = other(*args, 2)
    torch.testing.assert_close(engine(*args, 2), before, rtol=0, atol=0)  # the snapshot, unchanged
    rebuilt = CpuEngine(other)(*args, 2)
    assert (rebuilt - before).abs().max() > 1e-3
    torch.testing.assert_close(rebuilt, plain, rtol=0, atol=1e-5)
    assert engine.is_snapshot_of(load_presto_encoder()) and not engine.is_snapshot_of(other)


def test_encode_pixels_runs_the_current_weights(encoder: Encoder) -> None:
    """encode_pixels reuses an encoder's engine only while the weights equal its snapshot, however they change."""
    x, mask, dw, ll = random_inputs(8, 6, seed=6)
    other = load_presto_encoder()
    first = encode_pixels(other, x, mask, dw, ll, 2, device="cpu")
    engine = cpu_engine(other)
    assert cpu_engine(other) is engine  # unchanged weights: the same engine
    with torch.no_grad():
        other.blocks[0].mlp.fc1.weight.mul_(1.5)  # in place, as an optimizer step: no hook, no new tensor
    changed = encode_pixels(other, x, mask, dw, ll, 2, device="cpu")
    assert cpu_engine(other) is not engine
    with torch.inference_mode():
        plain = other(*(torch.from_numpy(a) for a in (x, mask, dw, ll)), 2).numpy()
    assert np.abs(changed - first).max() > 1e-3
    np.testing.assert_allclose(changed, plain, rtol=0, atol=1e-5)


def test_cpu_engine_takes_cpu_tensors_only(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="dtype"):
        CpuEngine(encoder, torch.float16)
    meta = load_presto_encoder().to("meta")  # any device but the CPU; "meta" needs no GPU
    with pytest.raises(ValueError, match="on the CPU"):
        CpuEngine(meta)


def reference_attention(qkv: torch.Tensor, keep: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    b, n, three_d = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, three_d // 3 // heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~keep[:, None, None, :], -torch.inf)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, three_d // 3)


@pytest.mark.parametrize("magnitude", [1.0, 300.0])
def test_attention_torch_equals_softmax_attention(magnitude: float) -> None:
    """At 300 the Cauchy-Schwarz shift is far above the true row max: exp2 underflows and the row-max path runs."""
    generator = torch.Generator().manual_seed(0)
    b, n, heads, dh = 6, 9, 2, 4
    qkv = torch.randn(b, n, 3 * heads * dh, generator=generator)
    # queries orthogonal to every key (disjoint coordinates), so scores stay small while |q||k| is huge
    qkv[..., : heads * dh].view(b, n, heads, dh)[..., 2:] = 0
    qkv[..., heads * dh : 2 * heads * dh].view(b, n, heads, dh)[..., :2] = 0
    qkv[..., : 2 * heads * dh] *= magnitude
    qkv[..., : 2 * heads * dh].view(b, n, 2, heads, dh)[:, :, 0, :, 0] += 0.5  # non-zero scores where q.k != 0
    qkv[..., : 2 * heads * dh].view(b, n, 2, heads, dh)[:, :, 1, :, 0] += 0.5
    keep = torch.rand(b, n, generator=generator) > 0.3
    keep[:, 0] = True
    with torch.inference_mode():
        log2_units = qkv.clone()
        log2_units[..., : heads * dh] /= math.log(2)  # the kernels take queries pre-scaled to log2 units
        ours = attention_torch(log2_units, keep, heads)
        expected = reference_attention(qkv, keep, heads, 1.0)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_encode_pixels_does_not_depend_on_thread_count(encoder: Encoder) -> None:
    x, mask, dw, ll = random_inputs(100, 12, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = encode_pixels(encoder, x, mask, dw, ll, 4, batch_size=16, device="cpu")
        torch.set_num_threads(3)
        three = encode_pixels(encoder, x, mask, dw, ll, 4, batch_size=16, device="cpu")
        assert torch.get_num_threads() == 3  # restored after the batches ran one per thread
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)


def test_flops_of_the_pooled_last_fc2() -> None:
    cfg = PrestoConfig()
    full, pooled = flops_per_pixel(12, 61), executed_flops_per_pixel(12, 61)
    assert full - pooled == 2 * 60 * cfg.embedding_size * cfg.mlp_hidden


def test_plain_modules_under_bf16_autocast(encoder: Encoder) -> None:
    """What the GPU path runs (plain modules, bf16 autocast, SDPA with a key mask), here on the CPU's autocast."""
    x, mask, dw, ll = random_inputs(24, 12, seed=11)
    args = [torch.from_numpy(a) for a in (x, mask, dw, ll)]
    with torch.inference_mode():
        fp32 = encoder(*args, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = encoder(*args, 3)
    assert bf16.shape == fp32.shape and torch.isfinite(bf16).all()
    assert 1e-3 < (bf16.float() - fp32).abs().max() < 0.25  # really ran in bf16, and stayed close
