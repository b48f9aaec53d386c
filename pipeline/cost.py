"""What a run costs: wall, CPU and GPU time, peak memory, energy and emissions, per run, per km2, per Mpx.

Energy comes from codecarbon's offline tracker in machine mode (the block workers are separate Dask processes, so
a per-process figure would miss them): RAPL counters for the CPU and NVML for GPUs where this machine lets it read
them, otherwise codecarbon's power model (the CPU's TDP scaled by its load, RAM at a constant power per GB), and
then the figures are marked as an estimate with the model named. kg CO2e: the energy times the job's carbon
intensity (``cost.carbon_intensity_g_per_kwh``) when it gives one, else codecarbon's figure for the country's grid
mix (``cost.country_iso_code``). A meter that cannot measure never fails a run: the energy is then 0 and marked
"not measured".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import time
from typing import Any

import psutil  # type: ignore[import-untyped]

#: CPU / GPU / RAM modes of codecarbon's hardware classes that read a counter rather than a power model.
_MEASURED_MODES = ("intel_rapl", "apple_powermetrics", "intel_power_gadget", "nvml")


@dataclasses.dataclass(frozen=True)
class RunCost:
    """A run's cost as measured (see the module docstring)."""

    wall_s: float
    cpu_s: float
    gpu_s: float | None  # None: a GPU was used, its busy time not measured (see _gpu_seconds)
    peak_rss_mb: float
    energy_kwh: float
    energy_method: str
    energy_estimated: bool
    co2e_kg: float
    carbon_intensity_g_per_kwh: float
    intensity_source: str

    def to_dict(self, area_km2: float | None = None, pixels: int | None = None) -> dict[str, Any]:
        """All fields, and per km2 and per million pixels when the area and the pixel count are given."""
        out: dict[str, Any] = dataclasses.asdict(self)
        per = {"energy_kwh": self.energy_kwh, "co2e_kg": self.co2e_kg, "wall_s": self.wall_s, "cpu_s": self.cpu_s}
        if area_km2:
            out["per_km2"] = {k: v / area_km2 for k, v in per.items()}
        if pixels:
            out["per_million_pixels"] = {k: v * 1e6 / pixels for k, v in per.items()}
        return out


def grid_area_km2(grid: Any) -> float | None:
    """The grid's area in km2: pixels x pixel area on a projected grid, geodesic on a geographic one."""
    from pyproj import Geod, Transformer
    from rasterio.crs import CRS

    crs = CRS.from_user_input(grid.crs)
    if crs.is_projected:
        _unit, factor = crs.linear_units_factor
        t = grid.transform
        return float(abs(t.a * t.e - t.b * t.d) * factor**2 * grid.width * grid.height / 1e6)
    left, bottom, right, top = grid.bounds
    to_lonlat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    lons, lats = to_lonlat.transform([left, right, right, left], [bottom, bottom, top, top])
    area, _perimeter = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(float(area)) / 1e6 if math.isfinite(area) else None


class CostMeter:
    """Measures from :meth:`start` to :meth:`stop` (or :meth:`snapshot`, which keeps measuring)."""

    def __init__(
        self,
        carbon_intensity_g_per_kwh: float | None = None,
        country_iso_code: str | None = None,
        measure_power_secs: float = 5.0,
    ) -> None:
        self.intensity = carbon_intensity_g_per_kwh
        self.country = country_iso_code
        self.measure_power_secs = measure_power_secs
        self._tracker: Any = None
        self._started = 0.0
        self._cpu0 = 0.0
        self._final: RunCost | None = None
        self._problem = ""

    def start(self) -> CostMeter:
        self._started = time.perf_counter()
        self._cpu0 = _cpu_seconds()
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = OfflineEmissionsTracker(
                # a code codecarbon has no data for ("WLD") gives its world average, 475 g/kWh
                country_iso_code=self.country or "WLD", save_to_file=False, log_level="critical",
                tracking_mode="machine",
                measure_power_secs=self.measure_power_secs,
            )  # fmt: skip
            self._tracker.start()
        except Exception as exc:
            self._tracker, self._problem = None, f"not measured ({type(exc).__name__}: {exc})"
        return self

    def __enter__(self) -> CostMeter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _method(self) -> tuple[str, bool]:
        if self._tracker is None:
            return self._problem or "not measured", True
        parts, estimated = [], False
        for hardware in getattr(self._tracker, "_hardware", []):
            mode = str(getattr(hardware, "_mode", "") or "constant")
            measured = mode in _MEASURED_MODES or type(hardware).__name__ == "GPU"
            estimated = estimated or not measured
            parts.append(f"{type(hardware).__name__} {'measured' if measured else 'model'} ({mode})")
        return ("estimated: " if estimated else "measured: ") + "codecarbon " + ", ".join(parts), estimated

    def _cost(self, energy_kwh: float, emissions_kg: float) -> RunCost:
        method, estimated = self._method()
        if self.intensity is not None:
            intensity, source = self.intensity, "job spec"
            co2 = energy_kwh * intensity / 1000
        else:
            intensity = emissions_kg * 1000 / energy_kwh if energy_kwh > 0 else 0.0
            where = f"grid mix of {self.country}" if self.country else "world average"
            source, co2 = f"codecarbon {where}", emissions_kg
        return RunCost(
            time.perf_counter() - self._started, _cpu_seconds() - self._cpu0, _gpu_seconds(), _peak_rss_mb(),
            energy_kwh, method, estimated, co2, intensity, source,
        )  # fmt: skip

    def snapshot(self) -> RunCost:
        """The cost so far; the meter keeps running."""
        if self._final is not None:
            return self._final
        energy = emissions = 0.0
        if self._tracker is not None:
            try:
                emissions = float(self._tracker.flush() or 0.0)
                energy = float(self._tracker._total_energy.kWh)
            except Exception:
                pass
        return self._cost(energy, emissions)

    def stop(self) -> RunCost:
        """The final cost (the same on every later call)."""
        if self._final is not None:
            return self._final
        energy = emissions = 0.0
        if self._tracker is not None:
            try:
                emissions = float(self._tracker.stop() or 0.0)
                energy = float(self._tracker.final_emissions_data.energy_consumed)
            except Exception:
                pass
        self._final = self._cost(energy, emissions)
        return self._final


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, its reaped children and its live descendants (local Dask
    workers): a worker that exits between two readings is counted once reaped."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    try:
        for child in psutil.Process().children(recursive=True):
            with_times = child.cpu_times()
            total += with_times.user + with_times.system
    except psutil.Error:
        pass
    return float(total)


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def _gpu_seconds() -> float | None:
    """0 when this process used no GPU; None when it did: its busy time is not measured yet (NVML's utilisation is
    machine-wide and sampled; a per-kernel timing needs the encoder's cooperation). Its energy is in the total."""
    import sys

    torch = sys.modules.get("torch")  # imported by the run only if it encoded anything
    if torch is None or not torch.cuda.is_initialized():
        return 0.0
    return None
