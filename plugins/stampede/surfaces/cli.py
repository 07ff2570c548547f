"""``stampede``: run the pipeline's steps in order without Airflow.

    stampede run --target URL --scenario NAME|PATH [--workers N] [--out DIR]
    stampede breaking-point --target URL --scenario NAME|PATH [--out DIR] [--workers N]
    stampede baseline pin|unpin|show RUN_ID [--by NAME]

Exit codes: 0 pass, 1 thresholds breached, 2 refused or bad input,
3 run invalid (for example the load generator itself was saturated).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from datetime import datetime, timezone

from stampede.safety import killswitch
from stampede.steps import pipeline
from stampede.core.records import RunResult

EXIT_CODES = {"pass": 0, "fail": 1, "invalid": 3}
EXIT_REFUSED = 2

log = logging.getLogger("stampede")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede", description="Stampede load tests without Airflow.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one or more scenarios against a target")
    run.add_argument("--target", required=True, help="base URL including /v1, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--scenario", required=True, action="append",
                     help="scenario name (loadtests/scenarios/NAME.yaml) or path; repeat to chain scenarios")
    run.add_argument("--workers", type=int, default=None, help="local worker processes (0: one process; default: by cores and users)")
    run.add_argument("--out", default=None, help="folder for results.json and the report (default reports/<run tag>)")
    run.add_argument("--users", type=int, default=None, help="scale the stages to this peak user count")
    run.add_argument("--duration", type=int, default=None, help="scale the stages to this total duration (s)")
    run.add_argument("--run-id", default=None, help="run id (default: cli-<timestamp>-<random>)")
    search = commands.add_parser("breaking-point", help="step the load up until the target breaks (scenario's search block)")
    search.add_argument("--target", required=True, help="base URL including /v1")
    search.add_argument("--scenario", required=True, help="scenario name or path; it must have a search block")
    search.add_argument("--workers", type=int, default=None, help="local worker processes (0: one process)")
    search.add_argument("--out", default=None, help="folder for results.json and the report")
    search.add_argument("--run-id", default=None, help="run id (default: cli-<timestamp>-<random>)")
    baseline = commands.add_parser("baseline", help="pin or unpin the baseline run of a scenario and target")
    baseline.add_argument("action", choices=["pin", "unpin", "show"])
    baseline.add_argument("run_id", help="pin/show: the run id; unpin: any run of that scenario and target")
    baseline.add_argument("--by", default=None, help="who pins it (shown in the report)")
    args = parser.parse_args(argv)
    if args.command == "baseline":
        return baseline_main(args)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    run_id = args.run_id or f"cli-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    if args.command == "breaking-point":
        return breaking_point_main(args, run_id)
    try:
        plan = pipeline.preflight(
            scenarios=args.scenario, target=args.target, run_id=run_id, workers=args.workers,
            users=args.users, duration_s=args.duration, out_dir=args.out,
            kill_switch=killswitch.local_reason,  # checked before the health check: a refusal sends nothing
        )
    except pipeline.RunRefused as exc:
        print(f"stampede: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return execute(plan)


def execute(plan) -> int:
    """Every step in order; cleanup and teardown run whatever happened before them."""
    def load() -> RunResult:
        pipeline.run_stages(plan, stop_probe=killswitch.local_reason)
        return pipeline.validate(plan)

    result = _with_cleanup(plan, load)
    return EXIT_CODES[result.verdict]


def _with_cleanup(plan, load) -> RunResult:
    """notify → workers → ``load()`` → report; then cleanup, teardown and the summary, whatever happened."""
    try:
        pipeline.notify_start(plan)
        pipeline.provision_workers(plan)
        result = load()
        pipeline.report(plan)
    finally:
        cleanup = pipeline.cleanup_test_data(plan)
        pipeline.teardown_workers(plan)
        pipeline.notify_summary(plan)
    print_summary(result, cleanup, pipeline.run_dir_for(plan))
    if not cleanup.ok:
        print(f"stampede: test data left on the target: {cleanup.left} ({cleanup.error})", file=sys.stderr)
    return result


def breaking_point_main(args, run_id: str) -> int:
    """Preflight once, provision once, search, report; cleanup and teardown whatever happened."""
    from stampede.analysis import breaking_point
    from stampede.plan.scenario import ScenarioError, load_scenario
    from stampede.workers.local import default_worker_count

    try:
        scenario = load_scenario(args.scenario)
        if scenario.search is None:
            raise pipeline.RunRefused(f"scenario {scenario.name}: search: missing; fix: add a search block (see stampede.plan.scenario)")
        workers = args.workers
        if workers is None:  # sized for the search's top, not the scenario's own stages
            workers = 1 if scenario.model == "open" else default_worker_count(int(scenario.search.maximum))
        plan = pipeline.preflight(
            scenarios=[args.scenario], target=args.target, run_id=run_id, workers=workers, out_dir=args.out,
            kill_switch=killswitch.local_reason,
        )
    except (pipeline.RunRefused, ScenarioError) as exc:
        print(f"stampede: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    result = _with_cleanup(plan, lambda: breaking_point.search(
        plan, stop_probe=killswitch.local_reason, user_cap=breaking_point.user_cap_for(plan)))
    point = result.breaking_point or {}
    print(f"breaking point: {point.get('users')} users, {point.get('rps')} req/s, p95 {point.get('p95_ms')} ms"
          f" — {point.get('reason')}")
    return EXIT_CODES[result.verdict]


def baseline_main(args) -> int:
    """``stampede baseline pin|unpin|show RUN_ID``: the run later runs of its scenario and target compare with."""
    from stampede.state.history import RunStore

    store = RunStore()
    try:
        run = store.get(args.run_id)
        if run is None:
            print(f"stampede: no run {args.run_id!r} in the history ({store.url_redacted})", file=sys.stderr)
            return EXIT_REFUSED
        if args.action == "pin":
            store.pin(args.run_id, by=args.by)
            print(f"baseline of {run['scenario']} on {run['target_key']}: {args.run_id} (pinned)")
        elif args.action == "unpin":
            done = store.unpin(run["scenario"], run["target"])
            print(f"baseline of {run['scenario']} on {run['target_key']}: "
                  + ("unpinned; the last passing run applies" if done else "was not pinned"))
        else:
            baseline, why = store.baseline_for({**run, "run_id": "", "started_at": "9999"})
            print(f"baseline of {run['scenario']} on {run['target_key']}: "
                  f"{baseline['run_id'] if baseline else 'none'} ({why})")
    finally:
        store.close()
    return 0


def print_summary(result: RunResult, cleanup, run_dir) -> None:
    print(f"\nverdict: {result.verdict.upper()}" + (f" (stopped: {result.stopped['reason']})" if result.stopped else ""))
    print(f"{'stage':<22}{'users':>7}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>9}  result")
    for s in result.stages:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        outcome = "pass" if s.passed else ("not run" if s.judged_on == "not_run" else "FAIL")
        print(f"{s.name:<22}{s.users:>7}{s.rps:>9.1f}{fmt(s.p50_ms):>9}{fmt(s.p95_ms):>9}{fmt(s.p99_ms):>9}"
              f"{s.error_rate:>9.2%}  {outcome}")
        for check in s.checks:
            if not check.passed:
                print(f"{'':<4}{check.metric} = {check.value} (must be {check.op} {check.threshold})")
    g = result.generator
    print(f"generator: max {g.cpu_max_pct:.0f}% of a core, {g.memory_max_mib:.0f} MiB" + (" — SATURATED" if g.saturated else ""))
    if g.advice:
        print(f"generator: {g.advice}")
    print(f"cleanup: created {cleanup.created}, deleted {cleanup.deleted}, left {cleanup.left}")
    print(f"results: {run_dir / 'results.json'}")
    print(f"report:  {run_dir / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
