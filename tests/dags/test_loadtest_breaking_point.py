"""loadtest_breaking_point follows the conventions and wires the search where the stages would run."""

from __future__ import annotations


def test_breaking_point_dag_wiring(dag_bag):
    dag = dag_bag.dags.get("loadtest_breaking_point")
    assert dag is not None and dag.catchup is False and dag.max_active_runs == 1
    assert "stampede" in dag.tags and "loadtest_breaking_point" in dag.doc_md
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream == {
        "preflight": sorted([
            "lease_held", "cost_check", "provision_workers", "search_breaking_point", "analyse",
            "cleanup_test_data", "teardown_workers", "report", "notify_summary", "final_verdict",
        ]),
        "lease_held": ["cost_check", "teardown_workers"],  # the setup that makes the teardown give the lease back
        "cost_check": ["provision_workers"],
        "provision_workers": ["cleanup_test_data", "search_breaking_point", "teardown_workers"],
        "search_breaking_point": ["analyse"],
        "analyse": ["cleanup_test_data"],
        "cleanup_test_data": ["teardown_workers"],
        "teardown_workers": ["final_verdict", "report"],
        "report": ["notify_summary"],
        "notify_summary": ["final_verdict"],
        "final_verdict": [],
    }
    assert dag.get_task("search_breaking_point").retries == 0  # never resend load by itself
    assert dag.get_task("cleanup_test_data").is_teardown and dag.get_task("teardown_workers").is_teardown
    for task in dag.tasks:
        assert task.owner == "platform-sre" and task.on_failure_callback
