"""Airflow DAG: validate, then run, the regional suelo job once a month, each month on a new period.

Copy this file into the Airflow ``dags/`` folder of a deployment whose workers have suelo installed (or change
``SUELO`` to a ``docker run`` of the suelo image). Settings come from Airflow Variables so one file serves several
regions: ``suelo_job`` (job spec path, default /etc/suelo/region.yaml), ``suelo_bin`` (default
/opt/suelo/bin/suelo) and ``suelo_output`` (the folder holding one output folder per period, default
/srv/suelo/region). Written for Airflow 2.4+ (``schedule=``); tested here only for being valid Python, since
Airflow is not a suelo dependency.

Each run maps the 12 complete months before the end of its data interval (``--period last-12-months`` with
``SUELO_TODAY`` set to that day, not the wall clock), into ``<suelo_output>/<first month>_<last month>``: the run of
the interval ending 2024-03-05 maps 2023-03 .. 2024-02 into ``2023-03_2024-02``, also when it is retried, cleared
or backfilled later.

Why two tasks: ``suelo validate`` fails in seconds on a broken spec or an unreachable input (exit status 2, one
JSON line in the task log), before a worker slot is held for hours. ``suelo run`` is idempotent (a finished period
does nothing, an interrupted one resumes), so Airflow's retries and a manual "clear" are safe.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

SUELO = "{{ var.value.get('suelo_bin', '/opt/suelo/bin/suelo') }}"
JOB = "{{ var.value.get('suelo_job', '/etc/suelo/region.yaml') }}"
OUTPUT = "{{ var.value.get('suelo_output', '/srv/suelo/region') }}"
# "today" of the relative period: the end of the run's data interval, so a retry or backfill maps the same months
TODAY = "{{ data_interval_end | ds }}"
PERIOD = "last-12-months"
# {period} (single braces: not Jinja) is filled by suelo with the resolved period's months
COMMON = f"--period {PERIOD} --log-format json"

with DAG(
    dag_id="suelo_monthly",
    description="Monthly Sentinel-2 land-cover maps of the region (suelo)",
    # 02:30 on the 5th: the previous month's L2A products are complete by then.
    schedule="30 2 5 * *",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,  # each run has its own period and folder: `airflow dags backfill` may map missed months
    max_active_runs=1,  # two runs at once would compete for the workers
    default_args={
        "owner": "suelo",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=30),
    },
    tags=["suelo", "sentinel-2"],
) as dag:
    validate = BashOperator(
        task_id="validate",
        bash_command=f"SUELO_TODAY={TODAY} {SUELO} validate {JOB} {COMMON}",
        execution_timeout=dt.timedelta(minutes=30),
    )
    run = BashOperator(
        task_id="run",
        bash_command=f"SUELO_TODAY={TODAY} {SUELO} run {JOB} {COMMON} -o '{OUTPUT}/{{period}}'",
        execution_timeout=dt.timedelta(days=2),
    )
    validate >> run
