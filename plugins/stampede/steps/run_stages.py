"""Step 4, run stages: one Locust master plays the plan's stages on the run's workers.

The load step of every DAG: a staged run plays all its stages on one master;
the breaking-point search plays each of its levels through :func:`run_level`,
the same load step with the same guards. While the load runs the supervisor
polls the stop probe (the kill switch, the allowed hours), health-checks the
target as each stage starts, samples the load generators' CPU and the target's
own metrics, and enforces a hard wall-clock limit.

Writes ``locust_output.json`` (the master's), ``generator_samples.json`` and
``server_metrics.json`` into the run folder (a level's into its own sub-folder).
While the load runs the master appends its figure stream to ``stream/`` and the
ledger to ``ledger.jsonl``; with an object store they are published every few
seconds. A master that dies mid-plan is started again by its owner (at most
``MAX_MASTER_RESTARTS`` times, ``stampede.load.runner``): the run goes on, and its
output is every master's figures merged, with ``restarts`` saying when and how long.
When the last master dies without its output, the output is rebuilt from the
stream (``figures_source: stream``, stop kind ``master_died``) and the run goes on
to be judged, reported, cleaned up and torn down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact
from stampede.core.records import StageResult, Stop, from_dict
from stampede.core.stops import StopProbe, StopRequest, never, stop_kind
from stampede.figures.stages import stage_results
from stampede.load import owner
from stampede.figures.stream import (clock, interval_of, mark_master_died, master_outputs, merge_outputs, segments,
                                     stream_of)
from stampede.load.runner import LocustRun, read_restarts, run_master, wall_limit_for
from stampede.load.stage_events import StageEvents
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Stage
from stampede.safety.health import probe
from stampede.safety.hours import with_allowed_hours
from stampede.state import owners
from stampede.steps.folder import folder_of
from stampede.steps.provision import is_cloud, provision_workers
from stampede.workers import load_worker_set, provider_for
from stampede.workers.base import WorkerSet

log = logging.getLogger(__name__)

LARGE_PUT_BYTES = 8 << 20  # the ledger and the master's log grow all day; each put sends the whole file
LARGE_PUT_EVERY_S = 60.0


@dataclass
class LoadRan:
    """What the load step reports to its caller (the task's return value)."""

    exit_code: int
    stopped: dict[str, Any] | None
    killed_by_timeout: bool


def run_stages(plan: RunPlan, *, stop_probe: StopProbe = never,
               on_stage_end: Callable[[StageResult], None] | None = None,
               on_stop: Callable[[Stop], None] | None = None, handover: bool = False,
               heartbeat: owner.Heartbeat | None = None) -> LoadRan:
    """Play the plan's stages; a second call for the same run (a retried task) continues the first's load.

    :param on_stage_end: called (from the log relay's thread; it must return at once) with each stage's
        figures, not yet judged, as the master finishes them: all but usually the last, which ends with
        the run.
    :param on_stop: called once with the stop when the master stops the load early.
    :param handover: a new try may take the load over within the plan's ``owner_grace_s`` when this
        process dies (the Airflow task, which has retries); without it the master dies with this process.
    :param heartbeat: a takeover try's, beating since the try began (:func:`stampede.steps.takeover.beat_first`).
    """
    folder = folder_of(plan)
    _refuse_a_second_start(plan, folder)
    workers = _workers_for(plan, folder)
    log.info(
        "Running %d stages of %s against %s with %s (the load outlives its owner by %g s at most)",
        len(plan.stages), plan.scenario_name, plan.target,
        f"{plan.workers} {plan.worker_provider} workers" if plan.workers else "one local process", plan.owner_grace_s,
    )
    run, output = _play(plan, folder, folder, workers, stop_probe, on_line=_follow(plan, folder, on_stage_end, on_stop),
                        handover=handover, shared=True, heartbeat=heartbeat)
    return LoadRan(exit_code=run.exit_code, stopped=output.get("stopped"), killed_by_timeout=run.killed_by_timeout)


def _refuse_a_second_start(plan: RunPlan, folder: RunFolder) -> None:
    """A run whose load started on another host (the shared state says so) is never started again here."""
    if _started_here(plan, folder):
        return  # this host's own checkpoint: run_master takes the master over, or its output
    try:
        row = owners.get(plan.run_tag)
    except Exception as exc:  # noqa: BLE001 - no shared state (SQLite on one host): the folder is the record
        log.warning("Could not read the run's owner from the state database (%s)", type(exc).__name__)
        return
    master = (row or {}).get("master")
    if master and master.get("host") != owner.host_name():
        raise LoadAlreadyStarted(
            f"load: run {plan.run_id} already started its load on {master.get('host')} (master pid "
            f"{master.get('pid')}); a new try on {owner.host_name()} cannot take it over and does not send "
            "the load again: the run is invalid (its master stopped itself when its owner's beat went stale)")


def _started_here(plan: RunPlan, folder: RunFolder) -> bool:
    checkpoint = owner.read_checkpoint(folder.path / owner.CHECKPOINT_FILE)
    return checkpoint is not None and checkpoint.run_tag == plan.run_tag


class LoadAlreadyStarted(RuntimeError):
    """The run's load was started by an owner on another host; sending it again would double it."""


def _mirror(plan: RunPlan) -> Callable[[owner.Beat], None]:
    def mirror(beat: owner.Beat) -> None:
        owners.beat(plan.run_tag, owner=beat.owner, beat_at=beat.beat_at, grace_s=beat.grace_s, ended=beat.ended,
                    master_ended=beat.master_ended)

    return mirror


def run_level(plan: RunPlan, stage: Stage | tuple[Stage, ...], level_folder: RunFolder, *,
              stop_probe: StopProbe = never, on_line: Callable[[str], None] | None = None,
              samples: list | None = None) -> tuple[RunPlan, dict, list]:
    """Levels of the breaking-point search: ``stage`` (or the steps of a live search, on one master),
    on the run's workers, into ``level_folder``.

    :param on_line: each line the master relays (a live search hears each step end on it).
    :param samples: the list the generator samples go into as the master runs.
    :returns: the level's plan, the master's output and the generator samples.
    """
    scenario = plan.scenarios[0]
    stages = stage if isinstance(stage, tuple) else (stage,)
    level_plan = replace(plan, scenarios=(replace(scenario, stages=stages, search=None),),
                         out_dir=str(level_folder.path))
    run_folder = folder_of(plan)
    run_folder.fetch(Artifact.WORKERS)
    workers = load_worker_set(run_folder.path) if plan.workers else None
    run, output = _play(level_plan, level_folder, run_folder, workers, stop_probe, on_line=on_line, samples=samples)
    return level_plan, output, run.samples


def _workers_for(plan: RunPlan, folder: RunFolder) -> WorkerSet | None:
    folder.fetch(Artifact.WORKERS)  # provisioned by another task, maybe on another host
    workers = load_worker_set(folder.path)
    if _started_here(plan, folder):
        return workers  # the load already started: a takeover uses the master's workers as they are
    if plan.workers and (workers is None or len(provider_for(plan.worker_provider).alive(workers)) < workers.count):
        provision_workers(plan)  # a retry after the workers went away: bring them back
        workers = load_worker_set(folder.path)
    return workers


def _follow(plan: RunPlan, folder: RunFolder, on_stage_end: Callable[[StageResult], None] | None,
            on_stop: Callable[[Stop], None] | None) -> Callable[[str], None] | None:
    """The master's lines, logged, and turned into the live callbacks."""
    if on_stage_end is None and on_stop is None:
        return None
    planned = [s.__dict__ for s in plan.stages]

    def stage_ended(index: int) -> None:
        figures = folder.read_json(Artifact.STAGES_SO_FAR)
        if figures is not None and index < len(planned):
            on_stage_end(stage_results(figures, planned)[index])  # type: ignore[misc]

    events = StageEvents(on_stage_end=stage_ended if on_stage_end else None,
                         on_stop=(lambda stop: on_stop(from_dict(Stop, stop))) if on_stop else None)

    def on_line(line: str) -> None:
        log.info(line)
        events.on_line(line)

    return on_line


def _play(plan: RunPlan, out: RunFolder, run_folder: RunFolder, workers: WorkerSet | None,
          stop_probe: StopProbe, *, on_line: Callable[[str], None] | None = None, handover: bool = False,
          shared: bool = False, samples: list | None = None,
          heartbeat: owner.Heartbeat | None = None) -> tuple[LocustRun, dict]:
    """One master's load into ``out``; ``shared``: its beat and checkpoint also go to the state database."""
    from stampede.figures.server import LIVE_FILE_NAME, sampling

    max_s = wall_limit_for(plan, with_workers=True)
    out.write_json(Artifact.RUN_PLAN, plan.to_dict())  # a progress report of this run reads its stages here
    # the target's own metrics; the newest beside the master's output, for its mid-run server thresholds
    with sampling(environment=plan.environment, target=plan.target, max_s=max_s,
                  live_path=out.path / LIVE_FILE_NAME) as server, \
            publishing_stream(out, interval_of(plan.locust_plan())):
        run = run_master(
            plan, out.path,
            master_port=workers.master_port if workers else None,
            expect_workers=plan.workers,
            worker_processes=_worker_sampler(plan, run_folder, workers),
            stop_probe=with_allowed_hours(plan, stop_probe),
            master_bind_host=_master_bind_host(plan),
            stage_health=lambda: probe(plan.target, timeout_s=2.0, attempts=2, pause_s=0.5),
            on_line=on_line,
            owner_file=run_folder.path / owner.OWNER_FILE, handover=handover,
            mirror=_mirror(plan) if shared else None,
            on_checkpoint=(lambda c: owners.record_master(plan.run_tag, c.to_dict())) if shared else None,
            samples=samples, heartbeat=heartbeat,
        )
    out.publish(Artifact.LOCUST_OUTPUT)  # written by the master itself
    out.publish(Artifact.MASTER_RESTARTS)  # by the supervisor, when a master died and was started again
    out.publish(Artifact.LOGS)
    out.write_json(Artifact.SERVER_METRICS, server.document, indent=None)
    out.write_json(Artifact.GENERATOR_SAMPLES, [asdict(s) for s in run.samples], indent=None)
    return run, output_of(run, out)


def output_of(run: LocustRun, out: RunFolder) -> dict:
    """The master's output; when it died without writing one, rebuilt from its figure stream and marked so.

    A run whose master was started again (``master_restarts.json``) has the figures of every master:
    the dead ones' from the stream, merged exactly with the last one's output, and says so.
    """
    restarts = read_restarts(out.path)
    if run.output_path.exists():
        output = run.output()
        if restarts and not output.get("restarts"):  # not merged yet (a retry may read it again)
            earlier = [p for p in master_outputs(stream_of(out.path / Artifact.FIGURE_STREAM))
                       if not p.get("final_checkpoint")]
            output = with_restarts(merge_outputs([*earlier, output]) if earlier else output, restarts,
                                   [*earlier, output])
            out.write_json(Artifact.LOCUST_OUTPUT, output, indent=None)
        return output
    output = recover_output(out, run.exit_code)
    return output if output is not None else run.output()  # nothing streamed either: run.output() says why


def with_restarts(output: dict, restarts: list[dict], masters: list[dict]) -> dict:
    """The output, with when each restarted master died and how long the load had no figures (for people too).

    ``lost_s``: from the dead master's last checkpoint to its death (the figures it had not
    streamed yet: at most one checkpoint interval, and the workers' report due); ``gap_s``:
    from that checkpoint to the next master's first stage start, the seconds no figure covers.

    :param masters: each master's own output, in order (their first stage starts say when the load resumed).
    """
    resumes = sorted(min(starts) for m in masters
                     if (starts := [s["start"] for s in m.get("stages", []) if s.get("start") is not None]))
    records = []
    for record in restarts:
        resumed = next((t for t in resumes if t > record["died_at"]), None)
        records.append({**record, "load_resumed_at": resumed,
                        "gap_s": round(resumed - record["figures_until"], 1) if resumed else None})
    output["restarts"] = records
    said = "; ".join(
        f"died at {clock(r['died_at'])} ({r['plan_elapsed_s']:.0f} s into the plan) and was restarted, "
        f"{r['lost_s']:.1f} s of figures lost before it died"
        + (f", {r['gap_s']:.1f} s without figures" if r["gap_s"] is not None else "") for r in records)
    note = f"merged from {len(records) + 1} Locust masters: the master {said}"  # the report: "Figures merged from …"
    output["figures_note"] = f"{output['figures_note']}; {note}" if output.get("figures_note") else note
    return output


def recover_output(out: RunFolder, exit_code: int | None) -> dict | None:
    """The output of a master that died, rebuilt from its figure stream and written as ``locust_output.json``.

    Also for validation when the load step's own process died with the master (no output, no stream: None).
    """
    stream = out.path / Artifact.FIGURE_STREAM
    if not segments(stream):  # the master ran on another host: the store's copy (here, the local one is newer)
        out.fetch(Artifact.FIGURE_STREAM)
        out.fetch(Artifact.MASTER_RESTARTS)
    reader = stream_of(stream)
    masters = master_outputs(reader)
    if not masters:
        return None
    output = masters[0] if len(masters) == 1 else merge_outputs(masters)
    mark_master_died(output, exit_code)
    if restarts := read_restarts(out.path):
        with_restarts(output, restarts, masters)
    log.error("The Locust master died (exit code %s): the figures are %s (%d checkpoints, %d torn lines skipped)",
              "unknown" if exit_code is None else exit_code, output["figures_note"], output["checkpoints"], reader.torn)
    out.write_json(Artifact.LOCUST_OUTPUT, output, indent=None)
    return output


@contextmanager
def publishing_stream(out: RunFolder, interval_s: float) -> Iterator[None]:
    """With an object store: what the master appends as it goes (the figure stream, the ledger, its log)
    is put there every ``interval_s``, so a lost host loses at most that much. No store: nothing to do."""
    if out.store is None:
        yield
        return
    stop = threading.Event()
    published: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime, when put)

    def publish_changed(*, last: bool = False) -> None:
        names = [f"{Artifact.FIGURE_STREAM}/{path.name}" for _, path in segments(out.path / Artifact.FIGURE_STREAM)]
        for name in [*names, str(Artifact.LEDGER), str(Artifact.MASTER_LOG)]:
            try:
                stat = (out.path / name).stat()
            except OSError:
                continue
            before = published.get(name)
            if before is not None and before[:2] == (stat.st_size, stat.st_mtime_ns):
                continue
            # an object is put whole: a large ledger or log (the segments stay small) at most once a minute
            if (not last and before is not None and stat.st_size > LARGE_PUT_BYTES
                    and time.time() - before[2] < LARGE_PUT_EVERY_S):
                continue
            try:
                out.publish(name)
                published[name] = (stat.st_size, stat.st_mtime_ns, time.time())
            except Exception as exc:  # noqa: BLE001 - a store outage must not stop the load's supervision
                log.warning("Could not publish %s to the artifact store (%s); retrying", name, exc)

    def loop() -> None:
        while not stop.wait(interval_s):
            publish_changed()
        publish_changed(last=True)

    thread = threading.Thread(target=loop, name="stampede-stream-publisher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)


def _worker_sampler(plan: RunPlan, folder: RunFolder, workers: WorkerSet | None) -> Callable[[], list[psutil.Process]]:
    """What the supervisor samples for generator health: the local processes of the workers, if any."""
    if workers is None:
        return list
    provider = provider_for(plan.worker_provider)
    if is_cloud(plan):
        return lambda: provider.processes(workers, folder.path)
    return lambda: provider.processes(workers)


def _master_bind_host(plan: RunPlan) -> str:
    """Loopback for local workers and stand-ins; the configured interface when cloud workers connect."""
    if not is_cloud(plan):
        return "127.0.0.1"
    from stampede.workers.cloud import CloudConfig

    config = CloudConfig.from_env()
    return "127.0.0.1" if config.standin == "local" else config.master_bind_host


def stop_of(output: dict) -> StopRequest | None:
    """The master's ``stopped`` as a request again, when its kind invalidates the run (else ``None``)."""
    stopped = output.get("stopped")
    if not stopped:
        return None
    kind = stop_kind(stopped.get("kind"))
    return StopRequest(stopped.get("reason") or str(kind), kind) if kind.invalidates else None


class LoadStillRunning(RuntimeError):
    """Cleanup or teardown would run while load of the run may still flow."""


def load_still_running(plan: RunPlan, *, now: float | None = None) -> str | None:
    """Why load of the run may still flow, or None when it is proved stopped (see ``stampede.load.owner``).

    On this host: no master of the run's checkpoints is alive and its owner's beat has ended
    or is older than its grace. A master on another host (the shared state's record) counts as
    stopped once the beat is older than the grace plus the time a master takes to end.
    """
    now = time.time() if now is None else now
    folder = folder_of(plan)
    why = owner.load_stopped(folder.path / owner.OWNER_FILE, sorted(folder.path.rglob(owner.CHECKPOINT_FILE)), now=now)
    if why is not None:
        return why
    try:
        row = owners.get(plan.run_tag)
    except Exception as exc:  # noqa: BLE001 - no shared state to ask: this host's proof is all there is
        log.warning("Could not read the run's owner from the state database (%s)", type(exc).__name__)
        return None
    master = (row or {}).get("master")
    if row and master and master.get("host") != owner.host_name() and not row.get("master_ended"):
        over_after = (0.0 if row.get("ended") else float(row["grace_s"])) + owner.STOP_BOUND_S
        if now - float(row["beat_at"]) < over_after:
            return (f"the run's master on {master.get('host')} may still be sending load (its owner beat "
                    f"{now - float(row['beat_at']):.0f} s ago)")
    return None


def wait_until_load_stopped(plan: RunPlan, *, timeout_s: float | None = None) -> None:
    """Return once no load of the run flows; raise :class:`LoadStillRunning` when that cannot be proved in time."""
    limit = plan.owner_grace_s + owner.STOP_BOUND_S + 10.0 if timeout_s is None else timeout_s
    deadline = time.time() + limit
    logged = False
    while (why := load_still_running(plan)) is not None:
        if time.time() > deadline:
            raise LoadStillRunning(f"load of run {plan.run_id} may still be running after {limit:.0f} s: {why}; "
                                   "fix: set the kill switch, wait, and retry this task")
        if not logged:
            log.warning("Waiting for the run's load to stop before touching its data or workers: %s", why)
            logged = True
        time.sleep(0.5)
