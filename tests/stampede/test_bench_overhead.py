"""The bench's split of ``airflow dags test`` time into the tasks' own code and Airflow's (``callable_times``)."""

from __future__ import annotations

from stampede.surfaces.bench.overhead import callable_times

# lines as airflow dags test 3.3 writes them (cut), two tasks, the second failing once then passing
LOG = """\
2026-12-03T14:15:48.697650Z [info     ] [DAG TEST] starting task_id=preflight map_index=-1 [airflow.sdk.definitions.dag]
2026-12-03T14:15:54.031775Z [info     ] Task started                   [airflow.api_fastapi.execution_api.routes.task_instances]
2026-12-03T14:15:54.106172Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2232
2026-12-03T14:15:54.964326Z [info     ] Done. Returned value was: {'run_id': 'manual__x'} [airflow.task.operators]
2026-12-03T14:15:55.353894Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2379
2026-12-03T14:16:14.274728Z [info     ] [DAG TEST] starting task_id=cleanup_test_data map_index=-1 [airflow.sdk.definitions.dag]
2026-12-03T14:16:14.365904Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2232
2026-12-03T14:16:14.565904Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
2026-12-03T14:16:20.000000Z [info     ] [DAG TEST] starting task_id=cleanup_test_data map_index=-1 [airflow.sdk.definitions.dag]
2026-12-03T14:16:20.100000Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2232
2026-12-03T14:16:21.100000Z [info     ] Done. Returned value was: {'left': 0} [airflow.task.operators]
2026-12-03T14:16:22.000000Z [info     ] [DAG TEST] starting task_id=report map_index=-1 [airflow.sdk.definitions.dag]
"""


def test_each_tasks_code_time_is_read_from_its_own_lines_and_tries_add_up():
    times = callable_times(LOG)
    assert times == {"preflight": 0.86, "cleanup_test_data": 1.2}  # 0.2 s failing + 1.0 s passing
    assert "report" not in times  # started, never ended in the log: no figure rather than a guess
