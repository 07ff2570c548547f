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
seconds. When the master dies without its output, the output is rebuilt from
the stream (``figures_source: stream``, stop kind ``master_died``) and the run
goes on to be judged, reported, cleaned up and torn down.
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
from stampede.core.stops import StopProbe, StopRequest, never, stop_kind
from stampede.figures.stream import interval_of, mark_master_died, rebuild_output, segments, stream_of
from stampede.load.runner import EXPECT_WORKERS_WAIT_S, GRACE_S, LocustRun, run_master
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Stage
from stampede.safety.health import probe
from stampede.safety.hours import with_allowed_hours
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


def run_stages(plan: RunPlan, *, stop_probe: StopProbe = never) -> LoadRan:
    folder = folder_of(plan)
    workers = _workers_for(plan, folder)
    log.info(
        "Running %d stages of %s against %s with %s", len(plan.stages), plan.scenario_name, plan.target,
        f"{plan.workers} {plan.worker_provider} workers" if plan.workers else "one local process",
    )
    run, output = _play(plan, folder, folder, workers, stop_probe)
    return LoadRan(exit_code=run.exit_code, stopped=output.get("stopped"), killed_by_timeout=run.killed_by_timeout)


def run_level(plan: RunPlan, stage: Stage, level_folder: RunFolder, *, stop_probe: StopProbe = never
              ) -> tuple[RunPlan, dict, list]:
    """One level of the breaking-point search: ``stage`` alone, on the run's workers, into ``level_folder``.

    :returns: the level's plan (one stage), the master's output and the generator samples.
    """
    scenario = plan.scenarios[0]
    level_plan = replace(plan, scenarios=(replace(scenario, stages=(stage,), search=None),),
                         out_dir=str(level_folder.path))
    run_folder = folder_of(plan)
    run_folder.fetch(Artifact.WORKERS)
    workers = load_worker_set(run_folder.path) if plan.workers else None
    run, output = _play(level_plan, level_folder, run_folder, workers, stop_probe)
    return level_plan, output, run.samples


def _workers_for(plan: RunPlan, folder: RunFolder) -> WorkerSet | None:
    folder.fetch(Artifact.WORKERS)  # provisioned by another task, maybe on another host
    workers = load_worker_set(folder.path)
    if plan.workers and (workers is None or len(provider_for(plan.worker_provider).alive(workers)) < workers.count):
        provision_workers(plan)  # a retry after the workers went away: bring them back
        workers = load_worker_set(folder.path)
    return workers


def _play(plan: RunPlan, out: RunFolder, run_folder: RunFolder, workers: WorkerSet | None,
          stop_probe: StopProbe) -> tuple[LocustRun, dict]:
    from stampede.figures.server import LIVE_FILE_NAME, sampling

    max_s = plan.load_duration_s + GRACE_S + EXPECT_WORKERS_WAIT_S
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
        )
    out.publish(Artifact.LOCUST_OUTPUT)  # written by the master itself
    out.publish(Artifact.LOGS)
    out.write_json(Artifact.SERVER_METRICS, server.document, indent=None)
    out.write_json(Artifact.GENERATOR_SAMPLES, [asdict(s) for s in run.samples], indent=None)
    return run, output_of(run, out)


def output_of(run: LocustRun, out: RunFolder) -> dict:
    """The master's output; when it died without writing one, rebuilt from its figure stream and marked so."""
    if run.output_path.exists():
        return run.output()
    output = recover_output(out, run.exit_code)
    return output if output is not None else run.output()  # nothing streamed either: run.output() says why


def recover_output(out: RunFolder, exit_code: int | None) -> dict | None:
    """The output of a master that died, rebuilt from its figure stream and written as ``locust_output.json``.

    Also for validation when the load step's own process died with the master (no output, no stream: None).
    """
    stream = out.path / Artifact.FIGURE_STREAM
    if not segments(stream):  # the master ran on another host: the store's copy (here, the local one is newer)
        out.fetch(Artifact.FIGURE_STREAM)
    reader = stream_of(stream)
    output = rebuild_output(reader)
    if output is None:
        return None
    mark_master_died(output, exit_code)
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
