"""Run one DAG with ``dag.test()`` in a process of its own, for tests that SIGKILL it mid-run.

    python dag_test_process.py DAG_ID RUN_CONF_JSON
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[sys.argv[1]]
    run = dag.test(run_conf=json.loads(sys.argv[2]))
    print(f"DAGRUN {run.state}", flush=True)
