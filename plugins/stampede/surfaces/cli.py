"""``stampede``: run the pipeline's steps in order without Airflow.

    stampede run --target URL --scenario NAME|PATH [--workers N] [--out DIR] [--junit FILE] [--summary-json FILE]
    stampede breaking-point --target URL --scenario NAME|PATH [--out DIR] [--workers N]
    stampede baseline pin|unpin|show RUN_ID [--by NAME]
    stampede lease show | release RUN_ID
    stampede report --run-folder PATH    (a running or dead run's figures so far, from its last checkpoint)

The exit codes are ``stampede.core.verdict.Exit`` (listed in docs/ci.md#exit-codes).
``--junit`` and ``--summary-json`` are written whatever the outcome, a refusal included, so
a CI job can always read them.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

from stampede.core.errors import Refusal
from stampede.core.verdict import Exit
from stampede.load import owner
from stampede.plan.run_plan import RunPlan
from stampede.render.junit import junit_xml, refused_junit_xml
from stampede.render.summary import refused_summary, summary
from stampede.render.table import summary_lines
from stampede.safety import killswitch
from stampede.steps.folder import folder_of
from stampede.steps.preflight import RunRequest, preflight
from stampede.surfaces.sequence import run_pipeline

log = logging.getLogger("stampede")


def main(argv: list[str] | None = None) -> int:
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _main(argv)
    finally:  # called in-process (tests, the bench): leave the process as it was
        owner.children_die_with_this_process(False)
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="stampede", description="Stampede load tests without Airflow.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one or more scenarios against a target")
    run.add_argument("--target", required=True, help="base URL including /v1, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--scenario", required=True, action="append",
                     help="scenario name (loadtests/scenarios/NAME.yaml) or path; repeat to chain scenarios")
    run.add_argument("--workers", type=int, default=None, help="local worker processes (0: one process; default: by cores and users)")
    run.add_argument("--local-ips", default=None, metavar="ADDRESSES",
                     help="source addresses of the load's connections, in turn (127.0.0.1-127.0.0.2,10.0.0.5): each "
                          "adds the kernel's ephemeral ports; default: as many 127.0.0.x as a loopback target needs")
    run.add_argument("--out", default=None, help="folder for results.json and the report (default reports/<run tag>)")
    run.add_argument("--users", type=int, default=None, help="scale the stages to this peak user count")
    run.add_argument("--duration", type=int, default=None, help="scale the stages to this total duration (s)")
    run.add_argument("--run-id", default=None, help="run id (default: cli-<timestamp>-<random>)")
    run.add_argument("--junit", default=None, metavar="FILE",
                     help="write a JUnit XML report: each stage and threshold a test case (docs/ci.md)")
    run.add_argument("--summary-json", default=None, metavar="FILE",
                     help="write a small, stable JSON summary for scripts (schema in docs/ci.md)")
    search = commands.add_parser("breaking-point", help="step the load up until the target breaks (scenario's search block)")
    search.add_argument("--target", required=True, help="base URL including /v1")
    search.add_argument("--scenario", required=True, help="scenario name or path; it must have a search block")
    search.add_argument("--workers", type=int, default=None, help="local worker processes (0: one process)")
    search.add_argument("--local-ips", default=None, metavar="ADDRESSES", help="source addresses, as for run")
    search.add_argument("--out", default=None, help="folder for results.json and the report")
    search.add_argument("--run-id", default=None, help="run id (default: cli-<timestamp>-<random>)")
    baseline = commands.add_parser("baseline", help="pin or unpin the baseline run of a scenario and target")
    baseline.add_argument("action", choices=["pin", "unpin", "show"])
    baseline.add_argument("run_id", help="pin/show: the run id; unpin: any run of that scenario and target")
    baseline.add_argument("--by", default=None, help="who pins it (shown in the report)")
    leases = commands.add_parser("lease", help="the target leases: show them, or release a gone run's")
    leases.add_argument("action", choices=["show", "release"])
    leases.add_argument("run_id", nargs="?", default=None, help="release: the run whose lease to give back")
    progress = commands.add_parser("report", help="the figures so far of a running (or dead) run, from its last checkpoint")
    progress.add_argument("--run-folder", required=True, help="the run's folder (reports/<run tag>)")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report_main(args)
    if args.command == "baseline":
        return baseline_main(args)
    if args.command == "lease":
        return lease_main(args)

    # force: importing Airflow's provider hooks has already pointed the root logger at stdout,
    # and stdout is for the run's outcome alone (scripts read its first line)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    owner.children_die_with_this_process()  # nobody takes a command line's run over: its load dies with it
    _stop_on_signals()
    run_id = args.run_id or f"cli-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    reports = CiReports(junit=getattr(args, "junit", None), summary_json=getattr(args, "summary_json", None),
                        run_id=run_id)
    try:
        if args.command == "breaking-point":
            return breaking_point_main(args, run_id)
        plan = preflight(RunRequest(
            scenarios=tuple(args.scenario), target=args.target, run_id=run_id, workers=args.workers,
            users=args.users, duration_s=args.duration, out_dir=args.out, local_ips=args.local_ips,
        ))  # the kill switch is checked before the health check: a refusal sends nothing
        return execute(plan, reports)
    except Refusal as exc:
        print(f"stampede: refused: {exc}", file=sys.stderr)
        reports.write_without_results(str(exc), Exit.REFUSED, verdict="refused")
        return Exit.REFUSED
    except Terminated as exc:  # the load stopped at once; cleanup and teardown ran (run_pipeline's finally)
        message = f"stopped by {exc}: the load was stopped, the test data cleaned up and the workers torn down"
        print(f"stampede: {message}", file=sys.stderr)
        reports.write_without_results(message, Exit.INVALID, verdict="invalid")
        return Exit.INVALID
    except Exception as exc:  # noqa: BLE001 - a crash is not a breached threshold: its own exit code
        traceback.print_exc()
        print("stampede: internal error (see the traceback above)", file=sys.stderr)
        reports.write_without_results(f"internal error: {type(exc).__name__}: {exc}", Exit.ERROR, verdict="error")
        return Exit.ERROR


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the command line: like Ctrl-C, it unwinds through the load's supervisor."""


def _stop_on_signals() -> None:
    """The first SIGTERM/SIGHUP stops the load at once (the supervisor's ``finally``); later ones wait for
    cleanup and teardown to finish (a SIGKILL still ends everything: the load then dies with this process)."""
    received: list[str] = []

    def handler(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if received:
            log.warning("%s again: still cleaning up and tearing down (SIGKILL ends the load with this process)", name)
            return
        received.append(name)
        raise Terminated(name)

    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (a caller that runs the CLI in a thread handles them)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


class CiReports:
    """Where ``--junit`` and ``--summary-json`` go (either may be unset), written once the outcome is known."""

    def __init__(self, *, junit: str | None, summary_json: str | None, run_id: str) -> None:
        self.junit = Path(junit) if junit else None
        self.summary_json = Path(summary_json) if summary_json else None
        self.run_id = run_id

    def write(self, plan: RunPlan, exit_code: int, problems: list[str]) -> None:
        folder = folder_of(plan)
        if not folder.exists("results.json"):
            self.write_without_results("; ".join(problems) or "no results", exit_code, verdict="error")
            return
        result = folder.results()
        self._write(self.junit, junit_xml(result, exit_code=exit_code))
        document = summary(result, exit_code=exit_code, results_path=str(folder.path / "results.json"))
        self._write(self.summary_json, json.dumps(document, indent=2) + "\n")

    def write_without_results(self, message: str, exit_code: int, *, verdict: str) -> None:
        self._write(self.junit, refused_junit_xml(message, run_id=self.run_id, exit_code=exit_code))
        document = refused_summary(message, run_id=self.run_id, exit_code=exit_code, verdict=verdict)
        self._write(self.summary_json, json.dumps(document, indent=2) + "\n")

    @staticmethod
    def _write(path: Path | None, text: str) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def execute(plan: RunPlan, reports: CiReports | None = None) -> int:
    """Every step in order; cleanup and teardown run whatever happened before them."""
    from stampede.steps.run_stages import run_stages
    from stampede.steps.validate import validate

    def load() -> None:
        run_stages(plan, stop_probe=killswitch.as_probe())
        validate(plan)

    return _pipeline(plan, load, reports)


def _pipeline(plan: RunPlan, load, reports: CiReports | None = None) -> int:
    """:func:`run_pipeline`, and its exit code; a crash after the workers started is "left behind" when the
    teardown could not prove them gone (that outranks the crash), else an internal error."""
    from stampede.steps.verdict import finish_run

    try:
        outcome = run_pipeline(plan, load)
    except Refusal:
        raise
    except Exception:  # noqa: BLE001 - a crash is not a breached threshold: its own exit code
        traceback.print_exc()
        outcome = finish_run(plan)
        if outcome.exit == Exit.LEFT_BEHIND:
            for problem in outcome.problems:
                print(f"stampede: {problem}", file=sys.stderr)
            if reports is not None:
                reports.write(plan, int(Exit.LEFT_BEHIND), outcome.problems)
            return Exit.LEFT_BEHIND
        print("stampede: internal error (see the traceback above)", file=sys.stderr)
        if reports is not None:
            reports.write_without_results("internal error (see the traceback on stderr)", Exit.ERROR, verdict="error")
        return Exit.ERROR
    return _finish(plan, outcome, reports)


def _finish(plan: RunPlan, outcome, reports: CiReports | None = None) -> int:
    folder = folder_of(plan)
    if folder.exists("results.json"):
        print("\n".join(summary_lines(folder.results(), folder.path)))
    for problem in outcome.problems:
        print(f"stampede: {problem}", file=sys.stderr)
    if reports is not None:
        reports.write(plan, int(outcome.exit), outcome.problems)
    return int(outcome.exit)


def breaking_point_main(args, run_id: str) -> int:
    """Preflight once, provision once, search; cleanup and teardown whatever happened."""
    from stampede.plan.scenario import load_scenario
    from stampede.steps.breaking_point import search_breaking_point, user_cap_for
    from stampede.workers.local import default_worker_count

    scenario = load_scenario(args.scenario)
    if scenario.search is None:
        raise Refusal(f"scenario {scenario.name}: search", "missing", "add a search block (see docs/scenarios.md)")
    workers = args.workers
    if workers is None:  # sized for the search's top, not the scenario's own stages
        workers = 1 if scenario.model == "open" else default_worker_count(int(scenario.search.maximum))
    plan = preflight(RunRequest(scenarios=(args.scenario,), target=args.target, run_id=run_id, workers=workers,
                                out_dir=args.out, local_ips=args.local_ips))
    code = _pipeline(plan, lambda: search_breaking_point(plan, stop_probe=killswitch.as_probe(),
                                                         user_cap=user_cap_for(plan)))
    folder = folder_of(plan)
    point = folder.results().breaking_point if folder.exists("results.json") else None
    if point is not None:
        print(f"breaking point: {point.users} users, {point.rps} req/s, p95 {point.p95_ms} ms — {point.reason}")
    return code


def report_main(args) -> int:
    """Print the run's figures so far and write ``progress/report.html`` (a finished run: its own results)."""
    from stampede.steps.progress import progress_report

    try:
        found = progress_report(Path(args.run_folder))
    except FileNotFoundError as exc:
        print(f"stampede: {exc}", file=sys.stderr)
        return Exit.ERROR
    state = "FINISHED" if found.finished else "IN PROGRESS"
    print(f"{state}: {found.result.scenario} against {found.result.target}, run {found.result.run_id}: {found.note}")
    for line in summary_lines(found.result, Path(args.run_folder)):
        print(line)
    if found.report_path is not None:
        print(f"report: {found.report_path}")
    return Exit.PASS  # the report was written; the run's own verdict is its pipeline's


def lease_main(args) -> int:
    """``stampede lease show`` lists the active leases; ``release RUN_ID`` gives back a gone run's lease."""
    from stampede.safety import lease

    if args.action == "release":
        if not args.run_id:
            print("stampede: refused: run_id: missing; fix: stampede lease release RUN_ID", file=sys.stderr)
            return Exit.REFUSED
        released = lease.release(run_id=args.run_id)
        print(f"lease of run {args.run_id}: " + ("released" if released else "none held"))
        return Exit.PASS
    for run_id in sorted(lease.active_run_ids()):
        print(run_id)
    return Exit.PASS


def baseline_main(args) -> int:
    """``stampede baseline pin|unpin|show RUN_ID``: the run later runs of its scenario and target compare with."""
    from stampede.state.history import RunStore

    store = RunStore()
    try:
        run = store.get(args.run_id)
        if run is None:
            print(f"stampede: no run {args.run_id!r} in the history ({store.url_redacted})", file=sys.stderr)
            return Exit.REFUSED
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


if __name__ == "__main__":
    sys.exit(main())
