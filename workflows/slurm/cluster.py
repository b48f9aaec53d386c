"""Start a Dask cluster on Slurm (dask-jobqueue), print its scheduler address, optionally run a suelo job on it.

Needs ``pip install dask-jobqueue`` in the suelo environment (it is not a suelo dependency: only Slurm sites need it).
The scheduler runs in this process; every worker is a Slurm job of its own, so this process must live as long as
the work: run it inside a small allocation (workflows/slurm/suelo_region.sbatch) or on a login node under tmux.

    python workflows/slurm/cluster.py --jobs 8                       # print the address, keep the cluster up
    python workflows/slurm/cluster.py --jobs 8 --run /etc/suelo/region.yaml   # ... and run the job on it
    python workflows/slurm/cluster.py --jobs 8 --run /etc/suelo/region.yaml \
        --period last-12-months --output '/shared/suelo/region/{period}'    # ... on the 12 months before today

With ``--run`` the job spec is copied with ``compute.scheduler`` set to this cluster's address (the original is
not changed), ``suelo validate`` and ``suelo run`` are called on the copy, and the workers are released afterwards.
``--period`` goes to both (``START:END``, ``last-N-months`` or ``previous-year``, today being ``$SUELO_TODAY`` if
set), ``--output`` to ``suelo run``, where ``{period}`` becomes the resolved months (``2023-03_2024-02``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="Slurm worker jobs (one Dask worker process each)")
    parser.add_argument("--cores", type=int, default=8, help="cores per worker job (threads of its Dask worker)")
    parser.add_argument("--memory", default="32GB", help="memory per worker job")
    parser.add_argument("--walltime", default="12:00:00", help="wall-time limit of each worker job")
    parser.add_argument("--queue", default=os.environ.get("SUELO_SLURM_PARTITION"), help="Slurm partition")
    parser.add_argument("--account", default=os.environ.get("SUELO_SLURM_ACCOUNT"), help="Slurm account")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per worker job (adds --gres=gpu:N)")
    parser.add_argument("--interface", default=None, help="network interface workers reach the scheduler on, e.g. ib0")
    parser.add_argument("--port", type=int, default=8786, help="scheduler port (0: any free port)")
    parser.add_argument("--address-file", type=Path, help="also write the scheduler address to this file")
    parser.add_argument("--run", type=Path, metavar="JOB.yaml", help="run this suelo job on the cluster, then stop")
    parser.add_argument("--period", help="with --run: suelo's --period, e.g. last-12-months or 2024-01-01:2024-12-31")
    parser.add_argument(
        "--output", help="with --run: suelo run's -o; {period} becomes the period, e.g. 2023-03_2024-02"
    )
    return parser.parse_args(argv)


def suelo_commands(job: Path, period: str | None = None, output: str | None = None) -> list[list[str]]:
    """``suelo validate`` then ``suelo run`` of ``job``, with ``--period`` (both) and ``--output`` (run) if given."""
    chosen = ["--period", period] if period else []
    validate = ["suelo", "validate", str(job), *chosen]
    run = ["suelo", "run", str(job), *chosen, *(["--output", output] if output else [])]
    return [validate, run]


def start_cluster(args: argparse.Namespace) -> Any:  # a dask_jobqueue.SLURMCluster (an optional import)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        sys.exit("dask-jobqueue is not installed: pip install dask-jobqueue")
    extra = [f"--gres=gpu:{args.gpus}"] if args.gpus else []
    return SLURMCluster(
        cores=args.cores,
        processes=1,  # one worker process per job: suelo loads one model per worker and uses threads inside it
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
        job_extra_directives=extra,
        scheduler_options={"port": args.port, "dashboard_address": ":8787"},
        log_directory=os.environ.get("SUELO_SLURM_LOGS", "slurm-logs"),
    )


def job_on(address: str, job: Path) -> Path:
    """A copy of the job spec whose compute.scheduler is ``address``, beside the original (relative paths hold)."""
    spec = yaml.safe_load(job.read_text(encoding="utf-8"))
    spec.setdefault("compute", {})["scheduler"] = address
    handle, name = tempfile.mkstemp(prefix=f".{job.stem}.slurm-", suffix=".yaml", dir=job.resolve().parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        yaml.safe_dump(spec, out, sort_keys=False)
    return Path(name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cluster = start_cluster(args)
    address = cluster.scheduler_address
    print(address, flush=True)  # the line a job spec's compute.scheduler takes
    if args.address_file:
        args.address_file.write_text(address + "\n", encoding="utf-8")
    cluster.scale(jobs=args.jobs)
    try:
        if args.run is None:
            while True:  # keep the scheduler up until the allocation ends or Ctrl-C
                time.sleep(3600)
        job = job_on(address, args.run)
        try:
            for command in suelo_commands(job, args.period, args.output):
                status = subprocess.call(command)
                if status != 0:
                    return status
            return 0
        finally:
            job.unlink(missing_ok=True)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
