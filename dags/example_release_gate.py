"""
### example_release_gate

An example release gate: runs whenever a load test publishes its results, and fails (blocking what
depends on it) unless every scenario it was told about passed and left no test data behind.

Every load-test run emits one Asset event per environment and scenario through the alias
`stampede.results` (the asset `stampede.results.<environment>.<scenario>`). The event's extra holds the
verdict, `passed`, `p95_ms`, `p99_ms`, `error_rate`, `rps`, `peak_users`, each stage's figures,
`cleanup_left`, `report_url`, `dag_id` and `run_id`. This DAG is scheduled on the alias, so it sees every
environment; to gate on one scenario in one environment only, schedule on its asset instead:
`schedule=results_asset("staging", "normal")`. Copy it, put your release steps after `gate`, unpause it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from stampede.surfaces.assets import RESULTS_ALIAS
from stampede.surfaces.dag_defaults import dag_defaults


@dag(
    dag_id="example_release_gate",
    schedule=RESULTS_ALIAS,
    doc_md=__doc__,
    tags=["stampede", "example", "release-gate"],
    **dag_defaults(),
)
def example_release_gate():
    @task(retries=0, execution_timeout=timedelta(minutes=10))
    def gate(*, triggering_asset_events=None) -> dict:
        """Pass only when the latest event of every scenario passed; several events may come in one run."""
        latest: dict[str, dict] = {}
        for events in (triggering_asset_events or {}).values():
            for event in events:
                latest[event.asset.name] = dict(event.extra or {})
        if not latest:
            raise RuntimeError("no load-test result came with this run: nothing to gate on")
        failed = {name: extra for name, extra in latest.items() if not extra.get("passed")}
        for name, extra in sorted(latest.items()):
            print(f"{name}: {extra.get('verdict')} p95={extra.get('p95_ms')} ms "
                  f"errors={extra.get('error_rate')} report={extra.get('report_url')}")
        if failed:
            raise RuntimeError("release blocked: " + "; ".join(
                f"{name} {extra.get('verdict')} (cleanup left {extra.get('cleanup_left')})"
                for name, extra in sorted(failed.items())))
        return {"gated": sorted(latest), "passed": True}

    gate()


example_release_gate()
