"""Airflow DAG: validate, then run, the regional suelo job once a month.

Copy this file into the Airflow ``dags/`` folder of a deployment whose workers have suelo installed (or change
``SUELO`` to a ``docker run`` of the suelo image). Settings come from Airflow Variables so one file serves several
regions: ``suelo_job`` (job spec path, default /etc/suelo/region.yaml) and ``suelo_bin`` (default
/opt/suelo/bin/suelo). Written for Airflow 2.4+ (``schedule=``); tested here only for being valid Python, since
Airflow is not a suelo dependency.

Why two tasks: ``suelo validate`` fails in seconds on a broken spec or an unreachable input (exit status 2, one
line in the task log), before a worker slot is held for hours. ``suelo run`` is idempotent (a finished job does
nothing, an interrupted one resumes), so Airflow's retries and a manual "clear" are safe.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

SUELO = "{{ var.value.get('suelo_bin', '/opt/suelo/bin/suelo') }}"
JOB = "{{ var.value.get('suelo_job', '/etc/suelo/region.yaml') }}"

with DAG(
    dag_id="suelo_monthly",
    description="Monthly Sentinel-2 land-cover maps of the region (suelo)",
    # 02:30 on the 5th: the previous month's L2A products are complete by then.
    schedule="30 2 5 * *",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,  # a month's run maps the job's own period; replaying missed months would repeat the same job
    max_active_runs=1,  # two runs of one job would write the same output folder
    default_args={
        "owner": "suelo",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=30),
    },
    tags=["suelo", "sentinel-2"],
) as dag:
    validate = BashOperator(
        task_id="validate",
        bash_command=f"{SUELO} validate {JOB}",
        execution_timeout=dt.timedelta(minutes=30),
    )
    run = BashOperator(
        task_id="run",
        bash_command=f"{SUELO} run {JOB}",
        execution_timeout=dt.timedelta(days=2),
    )
    validate >> run
