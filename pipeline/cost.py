"""What a run costs: wall, CPU and GPU seconds, peak memory, energy (kWh) and emissions (kg CO2e), per run, per km2
and per million pixels (issue 22, "Cost of a run"). ``suelo run`` records it in run.json and the run report;
``suelo estimate`` measures its calibration with the same meter.

Energy comes from codecarbon's offline tracker in **machine** mode: the block workers are separate Dask processes,
which a per-process tracker would not see, so the meter takes the whole machine's energy while the run lasts (on a
shared machine that includes other work). Per component, codecarbon reads a counter where this machine lets it:
RAPL (``/sys/class/powercap``) or Intel Power Gadget for the CPU, NVML (or AMD SMI) for GPUs; where it cannot, it
uses its power model: the CPU's TDP from its registry times the machine's CPU load (``cpu_load`` mode), or half the
TDP (``constant`` mode); RAM is always its model (a power per estimated DIMM). :attr:`RunCost.energy_method` names
what each component was, and :attr:`RunCost.energy_estimated` is True unless every component was measured (RAM
never is, outside a Raspberry Pi's PMIC). No power figure is written here: they all are codecarbon's.

kg CO2e: the energy times the job's ``cost.carbon_intensity_g_per_kwh`` when it gives one (``intensity_source``
"job spec"), else codecarbon's emissions for the grid mix of ``cost.country_iso_code`` (its own data, offline), with
that mix's intensity. :data:`WORLD` is codecarbon's world average.

Measuring never fails a run: if codecarbon cannot start or read, the meter logs one warning line and the energy,
its parts and the CO2e are 0.0 with ``energy_method`` "not measured: ..." (and ``energy_estimated`` True); the
times and memory are still measured. Zeros rather than None or NaN keep every field a JSON number of one type; the
method says they are not figures (the report shows "not measured").
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import resource
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]  # no inline types; the test extra installs no stubs for it

from suelo.settings import WORLD, codecarbon_countries

if TYPE_CHECKING:
    from suelo.grid import Grid

log = logging.getLogger(__name__)

#: codecarbon's CPU modes that read a counter, and what the energy method calls them.
_CPU_COUNTERS = {
    "intel_rapl": "RAPL (CPU)",
    "windows_emi": "Windows EMI/RAPL (CPU)",
    "intel_power_gadget": "Intel Power Gadget (CPU)",
}
#: How ``energy_method`` begins when the meter gave no energy figures (they are then 0.0).
NOT_MEASURED = "not measured"

#: How many points each edge of a geographic grid's bounds gets, so its north and south edges follow their parallels
#: (the geodesic between two corners does not) to well under a millionth of the area.
_EDGE_POINTS = 256


@dataclasses.dataclass(frozen=True)
class RunCost:
    """A run's cost from the meter's start to its reading (see the module docstring for what each figure is)."""

    wall_s: float  # seconds on the clock
    cpu_s: float  # user + system CPU seconds of this process and its descendants (CostMeter says how they count)
    gpu_s: float  # seconds the machine's GPUs were busy (NVML utilisation sampled each second, summed over GPUs)
    peak_rss_mb: float  # the largest resident memory of this process or one of its descendants (MiB)
    peak_gpu_mb: float | None  # torch's peak allocation in this process; None when this process did not use CUDA
    energy_kwh: float  # cpu_kwh + gpu_kwh + ram_kwh, the whole machine's
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    energy_method: str  # "measured: RAPL (CPU), NVML (GPU); estimated: codecarbon RAM model (...)", ...
    energy_estimated: bool  # True unless every component was measured
    co2e_kg: float
    carbon_intensity_g_per_kwh: float
    intensity_source: str  # "job spec" or "codecarbon <country> grid mix"

    def to_dict(self, area_km2: float | None = None, pixels: int | None = None) -> dict[str, Any]:
        """All fields, and with the grid's ``area_km2`` and ``pixels`` (each when given and positive) those and
        ``per_km2`` / ``per_million_pixels``: energy, CO2e, wall and CPU seconds divided by the area and by the
        pixels / 1e6 (unrounded: the figures are small, and rounding is the reader's choice)."""
        out: dict[str, Any] = dataclasses.asdict(self)
        per = {"energy_kwh": self.energy_kwh, "co2e_kg": self.co2e_kg, "wall_s": self.wall_s, "cpu_s": self.cpu_s}
        if area_km2 is not None and area_km2 > 0:
            out["area_km2"] = area_km2
            out["per_km2"] = {key: value / area_km2 for key, value in per.items()}
        if pixels is not None and pixels > 0:
            out["pixels"] = pixels
            out["per_million_pixels"] = {key: value / (pixels / 1e6) for key, value in per.items()}
        return out

    @property
    def measured(self) -> bool:
        """Whether the energy figures are figures at all (codecarbon ran), measured or estimated."""
        return energy_measured(self.energy_method)


def energy_measured(energy_method: str) -> bool:
    """Whether a cost's ``energy_method`` says its energy figures are figures at all (of :class:`RunCost`, or of
    its :meth:`RunCost.to_dict` read back), measured or estimated."""
    return not energy_method.startswith(NOT_MEASURED)


def grid_area_km2(grid: Grid) -> float | None:
    """The grid's area in km2: on a projected CRS its pixels times the pixel area (the map's area, in the CRS's
    units converted to metres); on a geographic one the geodesic area, on the CRS's ellipsoid, of its bounds (edges
    densified so they follow the meridians and parallels). None for a CRS that is neither."""
    import numpy as np
    import pyproj

    crs = pyproj.CRS.from_user_input(grid.crs.to_wkt())
    t = grid.transform
    if crs.is_projected:
        _unit, factor = crs.axis_info[0].unit_name, crs.axis_info[0].unit_conversion_factor
        return float(abs(t.a * t.e - t.b * t.d) * factor**2 * grid.width * grid.height / 1e6)
    if not crs.is_geographic:
        return None
    geod = crs.get_geod()
    if geod is None:
        return None
    left, bottom, right, top = grid.bounds
    steps = np.linspace(0.0, 1.0, _EDGE_POINTS, endpoint=False)
    lons = np.concatenate([left + (right - left) * steps, np.full(_EDGE_POINTS, right),
                           right - (right - left) * steps, np.full(_EDGE_POINTS, left)])  # fmt: skip
    lats = np.concatenate([np.full(_EDGE_POINTS, bottom), bottom + (top - bottom) * steps,
                           np.full(_EDGE_POINTS, top), top - (top - bottom) * steps])  # fmt: skip
    area, _perimeter = geod.polygon_area_perimeter(lons, lats)
    return abs(float(area)) / 1e6 if math.isfinite(area) else None


class _Capture:
    """A codecarbon output handler that keeps the last totals it is given (on ``flush`` and ``stop``): the public
    way to read a running tracker's energy per component. :func:`_capture_handler` mixes in codecarbon's
    ``BaseOutput`` (its other methods), imported only when a meter starts."""

    def __init__(self) -> None:
        self.total: Any = None
        self.count = 0

    def out(self, total: Any, delta: Any) -> None:
        self.total, self.count = total, self.count + 1


def _capture_handler() -> _Capture:
    from codecarbon.output_methods.base_output import BaseOutput

    class Capture(_Capture, BaseOutput):
        pass

    return Capture()


@dataclasses.dataclass
class _Descendants:
    """CPU seconds and peak RSS of this process's descendants (the local Dask cluster's workers), sampled at each
    reading with psutil and kept per process (pid and start time, so a reused pid is another process): a worker that
    finished between two readings still counts with what it had used at the last one."""

    seen: dict[tuple[int, float], tuple[float, float]] = dataclasses.field(default_factory=dict)  # cpu_s, rss_mb

    def sample(self) -> tuple[float, float, float]:
        """CPU seconds of the live descendants, of the finished ones (at their last reading), and the largest RSS
        (MiB) any of them was seen with."""
        live: set[tuple[int, float]] = set()
        try:
            processes = psutil.Process().children(recursive=True)
        except psutil.Error:
            processes = []
        for process in processes:
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    times = process.cpu_times()
                    rss = process.memory_info().rss / 2**20
            except psutil.Error:  # gone since it was listed, or not ours to read
                continue
            _cpu, peak = self.seen.get(key, (0.0, 0.0))
            self.seen[key] = (times.user + times.system, max(peak, rss))
            live.add(key)
        live_cpu = sum(cpu for key, (cpu, _rss) in self.seen.items() if key in live)
        gone_cpu = sum(cpu for key, (cpu, _rss) in self.seen.items() if key not in live)
        peak_rss = max((rss for _cpu, rss in self.seen.values()), default=0.0)
        return live_cpu, gone_cpu, peak_rss


def _maxrss_mb(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


def _peak_gpu_mb() -> float | None:
    """torch's peak CUDA allocation in this process (its busiest device), None unless this process initialised
    CUDA. The workers' allocations are theirs; NVML's per-process memory is not read."""
    torch = sys.modules.get("torch")  # never imported for this: a run without torch has no GPU memory to report
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        peaks = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA set-up must not fail the run's report
        return None
    return max(peaks, default=0) / 2**20


class CostMeter:
    """Measures a run's cost from :meth:`start` until :meth:`stop`; :meth:`snapshot` reads it on the way.

    Also a context manager (``with CostMeter(...) as meter:``; leaving it stops the meter). CPU seconds are those of
    this process (``RUSAGE_SELF``) plus its descendants: the live ones as psutil reads them at each reading, the
    finished ones either as the kernel accounts them once reaped (``RUSAGE_CHILDREN``: a child counts there only once
    its parent waited for it, and with its own reaped descendants) or as last read while they ran, whichever is more
    (the two overlap, so they are not added); a short-lived child never read and not yet reaped is missed. Peak
    memory is the largest process's: ``ru_maxrss`` of this process (its whole life, the kernel keeps no other peak)
    and of the reaped children, and each descendant's RSS at the readings.

    codecarbon's start takes about 2 s the first time in a process (it looks the CPU up in its TDP registry); its
    energy counts from then, the times from :meth:`start`.
    """

    def __init__(
        self,
        carbon_intensity_g_per_kwh: float | None = None,
        country_iso_code: str | None = WORLD,
        measure_power_secs: float = 5.0,
    ) -> None:
        self.carbon_intensity_g_per_kwh = carbon_intensity_g_per_kwh
        self.country_iso_code = (country_iso_code or WORLD).upper()  # None: the world average too
        self.measure_power_secs = measure_power_secs
        self._tracker: Any = None
        self._capture: _Capture | None = None
        self._hardware: list[Any] = []  # codecarbon's hardware objects, kept past stop (which drops the tracker)
        self._problem = ""  # why the energy is not measured, once it is not
        self._warned = False
        self._started: float | None = None
        self._cpu_start = 0.0
        self._cpu_last = 0.0
        self._descendants = _Descendants()
        self._country_intensity: float | None = None
        self._final: RunCost | None = None

    # life cycle -------------------------------------------------------------------------------------------------
    def start(self) -> CostMeter:
        """Start measuring (again: nothing). Never raises: a tracker that cannot start leaves the energy unmeasured."""
        if self._started is not None:
            return self
        self._started = time.perf_counter()
        self._cpu_start = self._cpu_last = self._cpu_total()[0]
        try:
            self._start_tracker()
        except Exception as exc:  # a meter must never fail the run it measures
            tracker, self._tracker = self._tracker, None
            if tracker is not None:  # started, then failed: its sampling threads must not outlive the meter
                with contextlib.suppress(Exception):
                    tracker.stop()
            self._unmeasured(f"codecarbon did not start ({type(exc).__name__}: {exc})")
        return self

    def __enter__(self) -> CostMeter:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def snapshot(self) -> RunCost:
        """The cost so far; the meter keeps running (after :meth:`stop`: the final cost)."""
        if self._final is not None:
            return self._final
        if self._tracker is not None:
            self._read(self._tracker.flush)
        return self._cost()

    def stop(self) -> RunCost:
        """Stop measuring and return the final cost; later calls return the same."""
        if self._final is not None:
            return self._final
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            self._read(tracker.stop)
        self._final = self._cost()
        return self._final

    # codecarbon ------------------------------------------------------------------------------------------------
    def _start_tracker(self) -> None:
        import codecarbon
        from codecarbon.core.emissions import Emissions
        from codecarbon.core.units import Energy
        from codecarbon.external.geography import GeoMetadata
        from codecarbon.input import DataSource as _DataSource

        # its import set its logger to INFO, printed on stderr beside a run's JSON events: only a crash may show
        logging.getLogger("codecarbon").setLevel(logging.CRITICAL)
        self._capture = _capture_handler()
        # nothing written anywhere (no CSV, API or endpoint, whatever a .codecarbon.config says), no lock file
        # (concurrent runs each measure); codecarbon 3 replaced save_to_file by output_methods: only the options this
        # codecarbon takes are given
        options: dict[str, Any] = {
            "output_methods": [], "save_to_file": False, "emissions_endpoint": None, "allow_multiple_runs": True,
            "output_handlers": [self._capture], "log_level": "critical", "tracking_mode": "machine",
            "measure_power_secs": self.measure_power_secs,
        }  # fmt: skip
        accepted = inspect.signature(codecarbon.emissions_tracker.BaseEmissionsTracker.__init__).parameters
        if "output_methods" in accepted:
            del options["save_to_file"]  # deprecated beside it
        options = {key: value for key, value in options.items() if key in accepted}
        self._tracker = codecarbon.OfflineEmissionsTracker(country_iso_code=self.country_iso_code, **options)
        self._tracker.start()
        if getattr(self._tracker, "_start_time", None) is None:  # its start() swallows its own exceptions
            raise RuntimeError("its tracker did not start")
        self._hardware = list(getattr(self._tracker, "_hardware", None) or [])
        if self.carbon_intensity_g_per_kwh is None:
            # the grid mix's intensity itself, so it is known even before any energy is (else: the one implied)
            one_kwh = Energy.from_energy(kWh=1.0)
            data_source: Any = _DataSource  # its __init__ is unannotated (a no-untyped-call in this strict module)
            try:
                kg = Emissions(data_source()).get_country_emissions(one_kwh, GeoMetadata(self.country_iso_code))
                self._country_intensity = float(kg) * 1000.0
            except Exception:  # the emissions themselves are codecarbon's tracker's: only the label is lost
                self._country_intensity = None

    def _read(self, call: Any) -> None:
        """``flush`` or ``stop`` the tracker: it hands its totals to the capture handler, or (it swallows its own
        errors) does not, and the last totals stay."""
        capture = self._capture
        before = capture.count if capture is not None else 0
        try:
            call()
        except Exception as exc:  # as in start()
            self._unmeasured(f"codecarbon failed ({type(exc).__name__}: {exc})", keep=True)
            return
        if capture is None or capture.count == before:
            self._unmeasured("codecarbon gave no reading", keep=True)

    def _unmeasured(self, why: str, keep: bool = False) -> None:
        """Log one warning line per meter; without ``keep`` the energy becomes 'not measured' (with it, a failed
        reading leaves the last one's figures, which the warning says)."""
        if not keep:
            self._problem = why
        if not self._warned:
            self._warned = True
            if keep:
                log.warning("suelo: warning: reading the run's energy failed: %s; its figures are the last ones", why)
            else:
                log.warning("suelo: warning: the run's energy is not measured: %s", why)

    # figures ---------------------------------------------------------------------------------------------------
    def _cpu_total(self) -> tuple[float, float]:
        """CPU seconds of this process and its descendants so far (see the class docstring), and the peak RSS."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        live, gone, sampled_rss = self._descendants.sample()
        cpu = own.ru_utime + own.ru_stime + max(reaped.ru_utime + reaped.ru_stime, gone) + live
        peak = max(_maxrss_mb(resource.RUSAGE_SELF), _maxrss_mb(resource.RUSAGE_CHILDREN), sampled_rss)
        return cpu, peak

    def _cost(self) -> RunCost:
        wall = time.perf_counter() - self._started if self._started is not None else 0.0
        cpu, peak_rss = self._cpu_total()
        if self._started is not None:
            # the accounting above can lose a child between readings (read, then not yet reaped): never go back
            self._cpu_last = max(self._cpu_last, cpu)
        data = self._capture.total if self._capture is not None and not self._problem else None
        if self._started is None:
            method = f"{NOT_MEASURED}: the meter was not started"
        elif data is None:
            method = f"{NOT_MEASURED}: {self._problem or 'codecarbon gave no reading'}"
        else:
            method = ""
        cpu_kwh = gpu_kwh = ram_kwh = energy = emissions = gpu_s = 0.0
        estimated = True
        if data is not None:
            cpu_kwh, gpu_kwh, ram_kwh = float(data.cpu_energy), float(data.gpu_energy), float(data.ram_energy)
            energy, emissions = float(data.energy_consumed), float(data.emissions)
            gpus = float(data.gpu_count or 0) if self._has_gpu() else 0.0
            gpu_s = float(data.gpu_utilization_percent or 0.0) / 100.0 * float(data.duration) * gpus
            method, estimated = self._method(data)
        if self.carbon_intensity_g_per_kwh is not None:
            intensity, source = self.carbon_intensity_g_per_kwh, "job spec"
            co2e = energy * intensity / 1000.0
        else:
            co2e = emissions
            intensity = self._country_intensity if self._country_intensity is not None else (
                emissions * 1000.0 / energy if energy > 0 else 0.0
            )  # fmt: skip
            source = f"codecarbon {self._country_label()}"
        return RunCost(
            wall_s=wall, cpu_s=self._cpu_last - self._cpu_start, gpu_s=gpu_s, peak_rss_mb=peak_rss,
            peak_gpu_mb=_peak_gpu_mb(), energy_kwh=energy, cpu_kwh=cpu_kwh, gpu_kwh=gpu_kwh, ram_kwh=ram_kwh,
            energy_method=method, energy_estimated=estimated, co2e_kg=co2e, carbon_intensity_g_per_kwh=intensity,
            intensity_source=source,
        )  # fmt: skip

    def _country_label(self) -> str:
        if self.country_iso_code == WORLD:
            return "world average"
        name = codecarbon_countries().get(self.country_iso_code)
        return f"{name} ({self.country_iso_code}) grid mix" if name else f"{self.country_iso_code} grid mix"

    def _has_gpu(self) -> bool:
        return any(type(h).__name__ == "GPU" for h in self._hardware)

    def _method(self, data: Any) -> tuple[str, bool]:
        """What each component's energy is, from codecarbon's hardware objects (their ``_mode`` is the only place
        it says whether a CPU figure is RAPL or its load model), and whether any of them is an estimate."""
        measured: list[str] = []
        modelled: list[str] = []
        order = {"CPU": 0, "AppleSiliconChip": 0, "GPU": 1, "RAM": 2}  # as the totals read: CPU, GPU, RAM
        for hardware in sorted(self._hardware, key=lambda h: order.get(type(h).__name__, 3)):
            kind = type(hardware).__name__
            if kind == "CPU":
                mode = str(getattr(hardware, "_mode", ""))
                tdp = getattr(hardware, "_tdp", None)
                tdp_text = f"TDP {float(tdp):g} W" if isinstance(tdp, (int, float)) else "its TDP"
                if mode in _CPU_COUNTERS:
                    measured.append(_CPU_COUNTERS[mode])
                elif mode == "cpu_load":
                    modelled.append(f"codecarbon cpu_load model ({tdp_text} x machine CPU load)")
                elif mode == "constant":
                    modelled.append(f"codecarbon constant model ({tdp_text} x 50%)")
                else:
                    modelled.append(f"codecarbon {mode or 'unknown'} CPU model")
            elif kind == "GPU":
                measured.append(f"{_gpu_counter()} (GPU)")
            elif kind == "RAM":
                forced = getattr(hardware, "_force_ram_power", None)
                if forced is not None:
                    modelled.append(f"RAM at a configured {float(forced):g} W")
                else:
                    size = float(getattr(data, "ram_total_size", 0.0) or 0.0)
                    modelled.append(f"codecarbon RAM model ({float(data.ram_power):g} W for {size:.0f} GB)")
            elif kind == "AppleSiliconChip":
                measured.append(f"powermetrics ({getattr(hardware, 'chip_part', 'chip')})")
            elif kind == "Raspberry":
                measured.append(f"PMIC ({getattr(hardware, 'chip_part', 'chip')})")
            else:
                modelled.append(f"codecarbon {kind}")
        parts = []
        if measured:
            parts.append("measured: " + ", ".join(measured))
        if modelled:
            parts.append("estimated: " + " + ".join(modelled))
        return "; ".join(parts) or "estimated: codecarbon (no hardware listed)", bool(modelled) or not measured


def _gpu_counter() -> str:
    """NVML on an NVIDIA machine, AMD SMI on an AMD one (codecarbon reads their energy counters)."""
    try:
        from codecarbon.core.gpu_nvidia import is_nvidia_system

        return "NVML" if is_nvidia_system() else "AMD SMI"
    except Exception:  # an older codecarbon without the module: its GPU support was NVIDIA's only
        return "NVML"


# predicted against measured -----------------------------------------------------------------------------------------

#: What ``suelo estimate`` leaves in the job's output folder; the run reads it back for its report and run.json.
ESTIMATE_FILE = "estimate.json"
#: The compute settings a prediction depends on (beyond the plan, whose digest it records).
PREDICTION_COMPUTE = ("device", "scheduler", "workers", "threads_per_worker", "precision")


def prediction_compute(compute: Any) -> dict[str, Any]:
    """The settings of ``compute`` (suelo.settings.ComputeSpec) that a prediction holds for."""
    return {key: getattr(compute, key, None) for key in PREDICTION_COMPUTE}


def read_prediction(path: Path, plan_digest: str, compute: dict[str, Any]) -> dict[str, Any] | None:
    """What ``suelo estimate`` predicted for this run, from its ``estimate.json`` (``path``): None when there is
    none; ``{"compared": False, "why": ...}`` when it cannot be read or was made for another plan (its plan digest
    differs: the job, its inputs or its models changed since), so the report says why it shows no comparison;
    otherwise the predicted seconds and kWh for the job's own worker count, with a ``caveat`` when the estimate was
    made with other ``compute`` settings (:func:`prediction_compute`) than the run's."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"compared": False, "why": f"{path.name} cannot be read ({type(exc).__name__})"}
    if not isinstance(data, dict) or not isinstance(data.get("predicted"), dict):
        return {"compared": False, "why": f"{path.name} holds no prediction"}
    if data.get("plan_digest") != plan_digest:
        return {
            "compared": False,
            "why": f"{path.name} was made for another plan (the job, its inputs or its models changed since): run "
            "suelo estimate again to compare",
        }
    predicted = data["predicted"]
    out: dict[str, Any] = {
        "compared": True,
        "file": path.name,
        "estimated_at": data.get("estimated_at"),
        "workers": predicted.get("workers"),
        "seconds": predicted.get("seconds"),
        "energy_kwh": predicted.get("energy_kwh"),
        "energy_estimated": data.get("energy_estimated"),
    }
    then = data.get("compute") or {}
    differs = [f"{key} {then.get(key)!r} then, {compute.get(key)!r} now" for key in PREDICTION_COMPUTE
               if key in then and then.get(key) != compute.get(key)]  # fmt: skip
    if differs:
        out["caveat"] = "estimated with other compute settings (" + "; ".join(differs) + ")"
    return out


def predicted_vs_actual(prediction: dict[str, Any] | None, actual: dict[str, Any]) -> dict[str, Any] | None:
    """``prediction`` (:func:`read_prediction`) beside the run's measured wall seconds and kWh (``actual``:
    :meth:`RunCost.to_dict`) and their ratios, measured / predicted (1.0: exact; 2.0: the run took twice as long as
    predicted). No energy ratio when the run's energy was not measured."""
    if not prediction or not prediction.get("compared"):
        return prediction
    out = dict(prediction)
    measured_energy = energy_measured(str(actual.get("energy_method", "")))
    out["measured_seconds"] = actual.get("wall_s")
    out["measured_energy_kwh"] = actual.get("energy_kwh") if measured_energy else None

    def ratio(measured: Any, predicted: Any) -> float | None:
        ok = isinstance(measured, (int, float)) and isinstance(predicted, (int, float)) and predicted > 0
        return round(measured / predicted, 3) if ok else None

    out["time_ratio"] = ratio(out["measured_seconds"], out["seconds"])
    out["energy_ratio"] = ratio(out["measured_energy_kwh"], out["energy_kwh"])
    return out
