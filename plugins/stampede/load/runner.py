"""Run the Locust master as a subprocess and supervise it until the stages end.

Locust must live in its own process (its gevent monkey-patching crashes a
process that imported Airflow). This module starts the master, relays its
progress lines to the log, samples the load generators' CPU and memory from
outside Locust, turns the kill switch into a stop file the master polls, and
enforces a hard wall-clock limit so a run always ends by itself.

The supervising process is the load's *owner* (``stampede.load.owner``): it
beats while it supervises, and the master stops itself when the beat goes
stale. The master writes ``logs/master.log`` itself (unbuffered, so a kill of
anything loses none of it); the supervisor tails it. A second supervisor for
the same folder (a retried task) takes a running master over from its
checkpoint instead of starting the load again. Stopped by an exception (a
signal, a timeout, Ctrl-C), the supervisor tells the master to stop at once.

A master that dies before the plan's end while its owner still supervises (a
SIGKILL, an out-of-memory kill) is started again, at most
:data:`MAX_MASTER_RESTARTS` times: the new master resumes the plan where the
clock is (the shape plays from the first stage's start, not from zero), the
local workers rejoin it, and each restart is recorded in ``master_restarts.json``
(when it died, up to when its stream holds figures). The run's figures are the
masters' streams merged (``stampede.figures.stream.merge_outputs``). A master
that died before its stream held a stage's start plays the plan from zero again
(it measured nothing yet). A master that stopped the load itself (an abort, the
kill switch, a lost owner), ended it, or streamed nothing is not restarted: the
run ends as today.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stampede.core.netutil import raise_open_file_limit
from stampede.core.stops import StopKind, StopProbe, never
from stampede.plan.run_plan import RunPlan
from stampede.core.records import GeneratorSample
from stampede.figures.stream import master_outputs, stream_of
from stampede.load import owner
from stampede.load.process_env import plan_process_env
from stampede.load.stage_events import LIVE_PAUSE_MAX_S
from stampede.load.stage_health import StageHealthWatch
from stampede.core.paths import Artifact, data_dir

log = logging.getLogger(__name__)

PLUGIN_FILE = Path(__file__).resolve().parent / "entry.py"
STOCK_LOCUSTFILE = data_dir("loadtests") / "locustfile.py"
STOCK_JOURNEYS = {"agent": "AgentUser", "broker": "BrokerUser", "admin": "AdminUser", "readonly": "ReadonlyUser"}
EXPECT_WORKERS_WAIT_S = 60
GRACE_S = 90  # beyond the planned load time: spawn, worker wait, shutdown
STOPPED_WAIT_S = 20.0  # a stopped owner waits this long for its master's graceful end (users stop within a second)
MAX_MASTER_RESTARTS = 3  # a master that keeps dying is not a crash to ride out: the run ends as master_died
RESTARTS_ENV = "STAMPEDE_MASTER_RESTARTS"  # 0-10, default MAX_MASTER_RESTARTS; 0: a dead master ends the run
MIN_RESUME_S = 5.0  # less of the plan left than this: a restart would measure nothing but its own spawn


class WorkersDidNotRegister(RuntimeError):
    """The master gave up waiting for the provisioned workers; teardown still runs."""


@dataclass
class LocustRun:
    """What a master run left behind: its output file, exit code and generator samples."""

    output_path: Path
    exit_code: int
    samples: list[GeneratorSample] = field(default_factory=list)
    killed_by_timeout: bool = False
    log_path: Path | None = None
    adopted: bool = False  # a master an earlier owner started (a takeover, or one that had already ended)
    stop_requested: bool = False  # the supervisor asked the master to stop (the stop probe, an unhealthy target)
    owned: bool = True  # this process beat for the master (False: a takeover that came too late)
    restarts: list[dict] = field(default_factory=list)  # the masters that died and were started again (whole run)
    ended: str = "the load ended"  # why the last supervision ended, for the owner's final beat

    def output(self) -> dict:
        if not self.output_path.exists():
            log_text = self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
            if "Gave up waiting for workers to connect" in log_text:
                raise WorkersDidNotRegister(
                    f"workers: not all workers registered with the master within {EXPECT_WORKERS_WAIT_S} s; "
                    "fix: check that the workers can reach the master's address and port (see the worker logs)"
                )
            if self.adopted:
                raise RuntimeError(
                    "load: the Locust master of this run ended without results (its owner died and it stopped "
                    "itself, or it ran on another host); the load is not sent again: the run is invalid"
                )
            raise RuntimeError(
                f"Locust wrote no results (exit code {self.exit_code}); see {self.log_path} for why"
            )
        return json.loads(self.output_path.read_text())


def locustfiles_for(plan: RunPlan) -> str:
    return f"{PLUGIN_FILE},{plan.locustfile or STOCK_LOCUSTFILE}"


def user_classes_for(plan: RunPlan) -> list[str]:
    """The User class names to run: the scenario's journeys with a positive weight."""
    names = []
    for key, weight in plan.journeys().items():
        if weight <= 0:
            continue
        names.append(STOCK_JOURNEYS.get(key, key) if plan.locustfile is None else key)
    return names


def run_master(
    plan: RunPlan,
    run_dir: Path,
    *,
    master_port: int | None,
    expect_workers: int,
    worker_processes: Callable[[], list[psutil.Process]] = list,
    stop_probe: StopProbe = never,
    on_line: Callable[[str], None] | None = None,
    stage_health: Callable[[], str | None] | None = None,
    master_bind_host: str = "127.0.0.1",
    owner_file: Path | None = None,
    handover: bool = False,
    mirror: Callable[[owner.Beat], None] | None = None,
    on_checkpoint: Callable[[owner.Checkpoint], None] | None = None,
    samples: list[GeneratorSample] | None = None,
    heartbeat: owner.Heartbeat | None = None,
) -> LocustRun:
    """Start the master (or a standalone process when ``expect_workers`` is 0) and own it until it ends.

    A master whose checkpoint (``master.json`` in ``run_dir``) says it already runs here
    is taken over instead of started again: this process beats for it and supervises it
    (a retried task within the plan's ``owner_grace_s``). A master that ran and ended is
    never started again: its output is the result.

    :param stop_probe: polled twice a second; a :class:`stampede.core.stops.StopRequest` stops the load
        (the kill switch, the allowed hours: the request carries its kind).
    :param stage_health: probes the target as each stage after the first starts; a reason
        stops the run with kind ``target_unhealthy``.
    :param owner_file: the run's heartbeat (``stampede.load.owner``); default ``run_dir/owner.json``.
    :param handover: the master may outlive this process for the grace (a retry may take it over);
        else it dies with this thread at once (``PR_SET_PDEATHSIG``) as well.
    :param samples: the list the generator samples go into as they are taken (a live search judges
        each step's generator health while the master runs on); default a new one.
    :param mirror: also records each beat elsewhere (the shared state database);
        ``on_checkpoint`` the master's checkpoint.
    :param heartbeat: the one a takeover try started first (:func:`stampede.load.owner.beat_first`).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    output_path = run_dir / "locust_output.json"
    stop_file = run_dir / "STOP"
    log_path = run_dir / "logs" / "master.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    owner_file = owner_file or run_dir / owner.OWNER_FILE
    checkpoint_path = run_dir / owner.CHECKPOINT_FILE
    run = LocustRun(output_path=output_path, exit_code=-1, log_path=log_path,
                    samples=samples if samples is not None else [])
    if heartbeat is None:
        heartbeat = owner.Heartbeat(owner_file, plan.owner_grace_s, mirror=mirror)
    else:
        heartbeat.grace_s, heartbeat.mirror = plan.owner_grace_s, mirror

    previous = owner.read_checkpoint(checkpoint_path)
    if previous is not None and previous.run_tag != plan.run_tag:
        previous = None  # a folder another run used before (the bench reuses one): not this run's master

    def start(resume_from: float | None) -> LocustRun:
        return _start(plan, run, master_port=master_port, expect_workers=expect_workers,
                      master_bind_host=master_bind_host, handover=handover, on_checkpoint=on_checkpoint,
                      owner_file=owner_file, checkpoint_path=checkpoint_path, resume_from=resume_from,
                      supervise=supervise)

    def supervise(process, started: float, tail_from: int) -> LocustRun:
        return _supervise(plan, run, process, heartbeat, started=started, stop_file=stop_file,
                          stop_probe=stop_probe, on_line=on_line, stage_health=stage_health,
                          worker_processes=worker_processes, expect_workers=expect_workers, tail_from=tail_from)

    try:
        return _own(plan, run, heartbeat, previous, start=start, supervise=supervise, stop_probe=stop_probe,
                    worker_processes=worker_processes)
    finally:  # every master this process supervised has exited (a supervisor stopped by an exception ended it)
        heartbeat.end(run.ended, master_ended=True)


def _own(plan: RunPlan, run: LocustRun, heartbeat: owner.Heartbeat, previous: owner.Checkpoint | None, *,
         start, supervise, stop_probe: StopProbe, worker_processes) -> LocustRun:
    """Take the running master over, or start one; then start it again each time it dies mid-plan."""
    run_dir, log_path, owner_file = run.output_path.parent, run.log_path, heartbeat.path
    assert log_path is not None
    if previous is not None:
        master = owner.master_process(previous)
        if master is None:  # it ran and ended (or runs on another host): the load is never sent again
            log.warning("The Locust master of this run (pid %s on %s) has ended; taking its output, not starting "
                        "the load again", previous.pid, previous.host)
            run.adopted = True
            return run
        lost = owner.owner_gone(owner_file, plan.owner_grace_s, since=previous.started_at)
        if lost:  # too late: the master is stopping itself
            log.error("Too late to take over the load of pid %s: %s; waiting for it to end", previous.pid, lost)
            run.owned = False
        else:
            heartbeat.start()
            log.warning("Took over the running Locust master (pid %s, started %.0f s ago): same run, same figures",
                        previous.pid, time.time() - previous.started_at)
        run.adopted = True
        run.restarts = read_restarts(run_dir)
        supervise(_Adopted(master), previous.started_at, log_path.stat().st_size if log_path.exists() else 0)
    else:
        run.output_path.unlink(missing_ok=True)
        (run_dir / Artifact.MASTER_RESTARTS).unlink(missing_ok=True)
        heartbeat.start()  # before the master: it reads the beat from its first second
        start(None)
    while (restart := _restart_point(plan, run, run_dir, stop_probe)) is not None:
        resume_from = restart[0]
        _record_restart(run, run_dir, resume_from, worker_processes)
        start(resume_from)
    return run


def _start(plan: RunPlan, run: LocustRun, *, master_port: int | None,
           expect_workers: int, master_bind_host: str, handover: bool, on_checkpoint, owner_file: Path,
           checkpoint_path: Path, resume_from: float | None, supervise) -> LocustRun:
    """Start a master (``resume_from``: the epoch the plan's first stage started, for a restart) and supervise it."""
    run_dir, output_path, log_path = run.output_path.parent, run.output_path, run.log_path
    assert log_path is not None
    stop_file = run_dir / "STOP"
    stop_file.unlink(missing_ok=True)
    locust_plan = plan.locust_plan(resume_from=resume_from)
    command = [
        sys.executable, "-m", "locust", "-f", locustfiles_for(plan), "--headless",
        "--host", plan.target,
        "--stampede-plan", json.dumps(locust_plan),
        "--stampede-out", str(output_path),
        "--stampede-stop-file", str(stop_file),
        "--stampede-owner-file", str(owner_file),
        "--stampede-ledger", str(run_dir / Artifact.LEDGER),  # what the run creates, on disk as it goes
        "--only-summary", "--exit-code-on-error", "0",  # the plugin sets a graceful --stop-timeout
    ]
    if expect_workers > 0:
        command += [
            "--master", "--master-bind-host", master_bind_host, "--master-bind-port", str(master_port),
            "--expect-workers", str(expect_workers), "--expect-workers-max-wait", str(EXPECT_WORKERS_WAIT_S),
        ]
    command += user_classes_for(plan)

    # allow-listed: team locustfiles run in this process, so never the task's cloud, Airflow or Slack
    # credentials; the run tag, the password variable the plan names and the egress policy are in it
    env = plan_process_env(plan)
    started = time.time()
    tail_from = log_path.stat().st_size if log_path.exists() else 0
    raise_open_file_limit()  # inherited: a standalone process holds one socket per user (Locust asks for 10,000 only)
    with open(log_path, "ab", buffering=0) as log_file:  # the master writes it itself: nothing lost with us
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # its own group: stopped as one; its own session: a takeover can outlive us
            preexec_fn=None if handover and not owner.children_die_with_owner() else owner.die_with_parent(),
        )
    checkpoint = owner.Checkpoint.of(process.pid, port=master_port, started_at=started, run_tag=plan.run_tag,
                                     log_path=log_path)
    checkpoint.save(checkpoint_path)
    if on_checkpoint is not None:
        try:
            on_checkpoint(checkpoint)
        except Exception as exc:  # noqa: BLE001 - the folder's checkpoint is what this host needs
            log.warning("Could not record the master's checkpoint in the state database (%s)", type(exc).__name__)
    return supervise(process, started, tail_from)


def max_master_restarts() -> int:
    """How often a run's master may die and be started again (``$STAMPEDE_MASTER_RESTARTS``, 0-10, default 3)."""
    try:
        return min(10, max(0, int(os.environ.get(RESTARTS_ENV, MAX_MASTER_RESTARTS))))
    except ValueError:
        return MAX_MASTER_RESTARTS


def read_restarts(run_dir: Path) -> list[dict]:
    """The run's master restarts so far (``master_restarts.json``); none when there were none."""
    try:
        return list(json.loads((run_dir / Artifact.MASTER_RESTARTS).read_text()))
    except (OSError, ValueError, TypeError):
        return []


def _restart_point(plan: RunPlan, run: LocustRun, run_dir: Path, stop_probe: StopProbe
                   ) -> tuple[float | None] | None:
    """When the master that just ended died mid-plan and may be started again: the epoch the plan's
    first stage started (``(None,)``: no stage start was streamed yet, so the plan starts again from
    zero); else None, and the run ends as it did (its output, or the stream's ``master_died``)."""
    if run.output_path.exists() or run.stop_requested or run.killed_by_timeout or not run.owned:
        return None
    parts = master_outputs(stream_of(run_dir / Artifact.FIGURE_STREAM))
    starts = [s["start"] for p in parts for s in p["stages"] if s.get("start") is not None]
    last = parts[-1] if parts else {}
    why = None
    if not parts:
        why = "it wrote no figures at all (it never ran: see its log)"
    elif last.get("stopped") or last.get("load_ended"):
        why = "it had stopped or ended the load already"
    elif len(run.restarts) >= (most := max_master_restarts()):
        why = f"it was restarted {len(run.restarts)} times already (at most {most}, ${RESTARTS_ENV})"
    elif starts and min(starts) + plan.load_duration_s - time.time() < MIN_RESUME_S:
        why = "the plan's time is all but over"
    elif (request := stop_probe()) is not None:
        why = f"a stop is requested ({request.reason})"
    if why is not None:
        log.error("The Locust master died (exit code %s) and is not started again: %s", run.exit_code, why)
        return None
    return (min(starts) if starts else None,)


def _record_restart(run: LocustRun, run_dir: Path, resume_from: float | None,
                    worker_processes: Callable[[], list[psutil.Process]]) -> None:
    """Record the dead master, and make its local workers start again (their agents restart them)."""
    parts = master_outputs(stream_of(run_dir / Artifact.FIGURE_STREAM))
    died_at = time.time()
    until = float(parts[-1]["figures_until"]) if parts else died_at
    record = {"restart": len(run.restarts) + 1, "died_at": died_at, "exit_code": run.exit_code,
              "figures_until": until, "lost_s": round(max(0.0, died_at - until), 1),
              "plan_elapsed_s": round(died_at - resume_from, 1) if resume_from is not None else 0.0}
    run.restarts.append(record)
    tmp = run_dir / f".{Artifact.MASTER_RESTARTS}.tmp"
    tmp.write_text(json.dumps(run.restarts))
    os.replace(tmp, run_dir / Artifact.MASTER_RESTARTS)
    log.error("The Locust master died (exit code %s) %.0f s into the plan; starting it again (restart %d of at "
              "most %d): its figures end at its last checkpoint, %.1f s before it died",
              run.exit_code, record["plan_elapsed_s"], record["restart"], max_master_restarts(), record["lost_s"])
    for process in worker_processes():  # a worker of a dead master waits for it; a fresh one joins the new master
        try:
            process.terminate()
        except psutil.Error:
            pass
    run.exit_code = -1


_supervised: list[tuple[object, Path, owner.Heartbeat]] = []  # the masters this process supervises now


def stop_now(reason: str, *, wait_s: float = 4.0) -> int:
    """Stop every load this process supervises, at once, and wait up to ``wait_s`` for its master to end.

    For a caller that cannot unwind the supervisor (Airflow's ``on_kill``, called from its SIGTERM
    handler, with ~5 s before SIGKILL): the master reads the stop file and the ended beat within a
    second and stops every user. :returns: how many masters it stopped.
    """
    stopped = 0
    for process, stop_file, heartbeat in list(_supervised):
        if process.poll() is not None:
            continue
        stopped += 1
        log.error("Stopping the load at once: %s", reason)
        try:
            stop_file.write_text(json.dumps({"reason": reason, "kind": StopKind.STOPPED}))
        except OSError as exc:
            log.error("Could not write the stop file %s (%s); the ended heartbeat stops the master", stop_file, exc)
        heartbeat.end(reason)
    deadline = time.time() + wait_s
    for process, _, _ in list(_supervised):
        try:
            process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            log.warning("The Locust master (pid %s) is still ending its users", process.pid)
    return stopped


class _Adopted:
    """A master this process did not start (a takeover): ``poll`` and ``wait`` through psutil."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                if self.process.status() == psutil.STATUS_ZOMBIE or not self.process.is_running():
                    self.returncode = 0
            except psutil.NoSuchProcess:
                self.returncode = 0  # not our child: its exit code is not ours to read; its output says how it went
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        try:
            self.process.wait(timeout=timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired as exc:
            raise subprocess.TimeoutExpired("locust", timeout or 0) from exc
        self.returncode = 0
        return 0


def wall_limit_for(plan: RunPlan, *, with_workers: bool) -> float:
    """How long a master of ``plan`` may run: its load, the grace, the workers' wait, a live search's pauses."""
    pauses = LIVE_PAUSE_MAX_S * sum(1 for stage in plan.stages if stage.live)
    return plan.load_duration_s + GRACE_S + (EXPECT_WORKERS_WAIT_S if with_workers else 0) + pauses


def _supervise(plan: RunPlan, run: LocustRun, process, heartbeat: owner.Heartbeat, *, started: float,
               stop_file: Path, stop_probe: StopProbe, on_line, stage_health, worker_processes,
               expect_workers: int, tail_from: int) -> LocustRun:
    wall_limit_s = wall_limit_for(plan, with_workers=expect_workers > 0)
    watch = StageHealthWatch(stage_health) if stage_health else None

    def relay_line(line: str) -> None:
        if watch is not None:
            watch.on_line(line)
        (on_line or log.info)(line)

    done = threading.Event()
    relay = threading.Thread(target=_tail, args=(run.log_path, tail_from, done, relay_line), daemon=True)
    relay.start()
    sampler = _Sampler(process.pid, worker_processes)
    stop_written = False
    ended = "the load ended"
    entry = (process, stop_file, heartbeat)
    _supervised.append(entry)
    try:
        while process.poll() is None:
            _wait(process, 0.5)  # returns as the master exits: no half-second lost at the end
            run.samples.extend(sampler.sample())
            if not stop_written:
                request = stop_probe()
                if request is not None:
                    stop_file.write_text(json.dumps(request.to_dict()))
                    stop_written = run.stop_requested = True
                    log.warning("Stop requested: %s (the master stops the load within seconds)", request.reason)
                elif watch is not None and watch.problem:
                    stop_file.write_text(json.dumps({"reason": watch.problem, "kind": StopKind.TARGET_UNHEALTHY}))
                    stop_written = run.stop_requested = True
                    log.error("Stopping the run: %s", watch.problem)
            if time.time() - started > wall_limit_s:
                log.error("Locust master exceeded its wall-clock limit of %.0f s; terminating it", wall_limit_s)
                run.killed_by_timeout = True
                ended = f"the master exceeded its wall-clock limit of {wall_limit_s:.0f} s"
                _terminate(process)
                break
    except BaseException as exc:  # a signal, Airflow's on_kill or timeout, Ctrl-C: the load stops at once
        ended = f"the owner was stopped ({type(exc).__name__}: {exc})"[:300]
        if process.poll() is None:
            log.error("Stopping the load at once: %s", ended)
            stop_file.write_text(json.dumps({"reason": ended, "kind": StopKind.STOPPED}))
            heartbeat.end(ended)
            _wait_then_terminate(process, STOPPED_WAIT_S)
        if process.poll() is None:
            _terminate(process)
        heartbeat.end(ended, master_ended=process.poll() is not None)
        raise
    finally:
        if process.poll() is None:
            _terminate(process)
        _supervised.remove(entry)
        done.set()
        relay.join(timeout=5)
    run.ended = ended  # the beat goes on: the owner may start the master again (run_master ends it)
    run.exit_code = process.returncode if process.returncode is not None else -1
    return run


def _tail(log_path: Path, offset: int, done: threading.Event, on_line: Callable[[str], None]) -> None:
    """Relay the master's progress, warnings and errors from its log as it writes them."""
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        partial = b""
        while True:
            chunk = handle.readline()
            if not chunk:
                if done.is_set():
                    break
                time.sleep(0.2)
                continue
            partial += chunk
            if not partial.endswith(b"\n") and not done.is_set():
                continue
            line = partial.decode(errors="replace").rstrip()
            partial = b""
            if line.startswith("[stampede]") or "WARNING" in line or "ERROR" in line:
                on_line(line)


def _wait(process, timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def _wait_then_terminate(process, wait_s: float) -> None:
    """Give the master ``wait_s`` to end gracefully (its users stopped, its output written), then end it."""
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        _terminate(process)


def _terminate(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("The Locust master (pid %s) survived SIGKILL for 5 s", process.pid)


class _Sampler:
    """Samples CPU (% of one core) and memory of the master and worker processes, once a second."""

    def __init__(self, master_pid: int, worker_processes: Callable[[], list[psutil.Process]]) -> None:
        self.master_pid = master_pid
        self.worker_processes = worker_processes
        self.known: dict[int, psutil.Process] = {}
        self.waited: dict[int, tuple[float, float]] = {}  # pid -> (time, run-queue wait in s) at the last sample
        self.last = 0.0

    def sample(self) -> list[GeneratorSample]:
        now = time.time()
        if now - self.last < 1.0:
            return []
        self.last = now
        processes = []
        try:
            processes.append(("master", psutil.Process(self.master_pid)))
        except psutil.NoSuchProcess:
            pass
        processes += [("worker", p) for p in self.worker_processes()]
        samples = []
        for role, process in processes:
            tracked = self.known.get(process.pid)
            if tracked is None:
                self.known[process.pid] = process
                process.cpu_percent(None)  # first call primes the counter
                self.waited[process.pid] = (now, run_queue_wait_s(process.pid))
                continue
            try:
                waited, previous = run_queue_wait_s(process.pid), self.waited.get(process.pid, (now, 0.0))
                self.waited[process.pid] = (now, waited)
                samples.append(GeneratorSample(
                    t=now, role=role, pid=process.pid, cpu_pct=tracked.cpu_percent(None),
                    rss_mib=tracked.memory_info().rss / 2**20,
                    wait_pct=round(100.0 * max(0.0, waited - previous[1]) / max(now - previous[0], 1e-3), 1),
                ))
            except psutil.NoSuchProcess:
                self.known.pop(process.pid, None)
        return samples


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a core (Linux schedstat; 0 elsewhere).

    CPU use alone misses a starved generator: a process that shares its core with
    another gets about half of it and shows ~50 % CPU while it is late all the time.
    Running plus waiting to run is what it *wanted*; that is what saturation means.
    """
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    total_ns += int(handle.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total_ns / 1e9
