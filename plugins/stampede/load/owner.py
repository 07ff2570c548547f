"""Load owned by a heartbeat, not by one process.

Whoever runs the load (the CLI, or the Airflow task running ``run_stages``) is
its *owner*: it beats (:class:`Heartbeat`) every half second into the run
folder's ``owner.json`` (and the shared state database, ``stampede.state.owners``,
for other hosts). Every load process checks the beat itself and stops when it is
older than the plan's ``owner_grace_s``:

- the Locust master (``stampede.load.plugin``) stops the load with kind
  ``owner_lost`` and tells its workers to stop and not come back;
- a worker whose master has gone silent for the grace (or 10 s, if shorter) stops
  its users and quits (it cannot reach any owner but through its master: that holds
  across hosts too); its agent starts a fresh, idle worker for a master the owner
  starts again (``stampede.load.runner``);
- a local worker agent (``stampede.workers.agent``) reads the same file.

So a SIGKILLed owner (no ``finally`` runs) leaves load for at most the grace and
a few seconds. Within the grace a new owner (a retried task) may take the run
over from its checkpoint (``master.json``: which master, where, since when) and
go on beating: the same master, the same figures. When the owner stops on
purpose it says so (``ended``) and the master stops at once.

On top of the beat, children on this host can die with their parent at once
(Linux ``PR_SET_PDEATHSIG``): the CLI's master and agents, and every agent's
Locust worker. A run that may be handed over does not do that for its master.

This module never imports Airflow; the master and workers import it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from stampede.core.stops import StopKind, StopRequest

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"  # the owner's beat, in the run folder (the top one, for every level of a search)
CHECKPOINT_FILE = "master.json"  # which master plays the load of this folder, for a takeover
BEAT_INTERVAL_S = 0.5
OWNER_LOST_EXIT = 75  # a worker's exit code when its run is over for good: its agent does not start another
# Once the owner's beat is stale, how long a master may still take to end (graceful stop and final reports,
# stampede.load.final_reports) before "no load flows" holds by the rule alone (another host's master).
STOP_BOUND_S = 30.0

_PR_SET_PDEATHSIG = 1
try:  # loaded here, not in the forked child: dlopen there could wait on a lock another thread held
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def host_name() -> str:
    """This host's name as the deployment knows it (``$STAMPEDE_HOSTNAME`` where hosts share a machine)."""
    return os.environ.get("STAMPEDE_HOSTNAME") or socket.gethostname()


def this_owner() -> str:
    return f"{host_name()}:{os.getpid()}"


@dataclass
class Beat:
    """What ``owner.json`` holds."""

    owner: str
    beat_at: float
    grace_s: float
    ended: str | None = None  # why the owner ended the load on purpose (the master stops at once)
    master_ended: bool = False  # the owner saw its master exit: no load flows, on any host


def read_beat(path: Path) -> Beat | None:
    """The beat in ``path``; None when there is none (or it cannot be read: that counts as no owner)."""
    try:
        data = json.loads(path.read_text())
        return Beat(owner=str(data["owner"]), beat_at=float(data["beat_at"]), grace_s=float(data["grace_s"]),
                    ended=data.get("ended"), master_ended=bool(data.get("master_ended")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_beat(path: Path, beat: Beat) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(beat)))
    os.replace(tmp, path)  # a reader sees the old beat or the new, never half of one


def owner_gone(path: Path, grace_s: float, *, since: float, now: float | None = None) -> StopRequest | None:
    """Why the load of ``path``'s owner must stop now, or None while the owner beats.

    Kind ``stopped`` when the owner ended the load on purpose, ``owner_lost`` when its beat went stale.

    :param since: when the caller started watching; a beat missing from then on counts as stale
        (a master is started only after its owner's first beat).
    """
    now = time.time() if now is None else now
    beat = read_beat(path)
    if beat is None:
        if now - since > grace_s:
            return StopRequest(f"owner lost: no owner heartbeat in {path} for {now - since:.0f} s "
                               f"(grace {grace_s:g} s)", StopKind.OWNER_LOST)
        return None
    if beat.ended:
        return StopRequest(f"stopped: {beat.ended}", StopKind.STOPPED)
    age = now - beat.beat_at
    if age > grace_s:
        return StopRequest(f"owner lost: the owner ({beat.owner}) stopped beating {age:.1f} s ago and nobody "
                           f"took the run over within its grace of {grace_s:g} s", StopKind.OWNER_LOST)
    return None


class Heartbeat:
    """The owner's beat: a thread that writes ``owner.json`` every half second until stopped.

    :param mirror: called about once a second with the beat (the shared state database's row);
        its failures are logged, never fatal: the file is what local load processes read.
    """

    def __init__(self, path: Path, grace_s: float, *, mirror: Callable[[Beat], None] | None = None) -> None:
        self.path = path
        self.grace_s = grace_s
        self.mirror = mirror
        self.owner = this_owner()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mirrored = 0.0

    def beat(self, ended: str | None = None, *, master_ended: bool = False) -> None:
        beat = Beat(owner=self.owner, beat_at=time.time(), grace_s=self.grace_s, ended=ended,
                    master_ended=master_ended)
        try:
            write_beat(self.path, beat)
        except OSError as exc:
            log.warning("owner heartbeat: cannot write %s (%s)", self.path, exc)
        if self.mirror is not None and (ended or beat.beat_at - self._mirrored >= 1.0):
            self._mirrored = beat.beat_at
            try:
                self.mirror(beat)
            except Exception as exc:  # noqa: BLE001 - the file is the rule here; the row serves other hosts
                log.warning("owner heartbeat: cannot record it in the state database (%s)", type(exc).__name__)

    def start(self) -> Heartbeat:
        """Beat now and every half second; a heartbeat already beating (:func:`beat_first`) just beats."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.beat()
        if self._thread is not None and self._thread.is_alive():
            return self
        self._thread = threading.Thread(target=self._run, name="stampede-owner-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(BEAT_INTERVAL_S):
            self.beat()

    def pause(self) -> None:
        """Stop beating without ending the load: a try that fails before it supervised the master leaves the
        run to the next try, within the grace."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def end(self, reason: str, *, master_ended: bool = False) -> None:
        """Stop beating and say the load ended on purpose (the master, if still running, stops at once).

        :param master_ended: the master has exited (other hosts need not wait for it).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.beat(ended=reason, master_ended=master_ended)


def beat_first(run_dir: Path, run_tag: str) -> Heartbeat | None:
    """On a takeover try, this process's heartbeat, already beating; None when there is nothing to take over.

    A new try warms up for seconds before it reaches the master (imports, the plan, the state database,
    the workers' files; the load step's and notifier's imports alone took 3.9-4.0 s); beating only then spent that much of the
    grace, and a short grace lost the load as ownerless. So the try beats first, with the checkpoint's
    own rule: this run's master alive on this host, and its owner's beat neither ended nor stale (a
    master that is stopping itself is never revived). ``run_master`` takes the heartbeat over.
    """
    checkpoint = read_checkpoint(run_dir / CHECKPOINT_FILE)
    if checkpoint is None or checkpoint.run_tag != run_tag or master_process(checkpoint) is None:
        return None
    path = run_dir / OWNER_FILE
    beat = read_beat(path)
    if beat is None or owner_gone(path, beat.grace_s, since=checkpoint.started_at) is not None:
        return None
    return Heartbeat(path, beat.grace_s).start()


# -- the checkpoint: which master plays this folder's load ------------------------------------------
@dataclass
class Checkpoint:
    host: str
    pid: int
    create_time: float  # with the pid: the same process, not a reused pid
    port: int | None
    started_at: float
    run_tag: str = ""
    log_path: str = ""

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def of(cls, pid: int, *, port: int | None, started_at: float, run_tag: str, log_path: Path) -> Checkpoint:
        return cls(host=host_name(), pid=pid, create_time=psutil.Process(pid).create_time(), port=port,
                   started_at=started_at, run_tag=run_tag, log_path=str(log_path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_checkpoint(path: Path) -> Checkpoint | None:
    try:
        return Checkpoint(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def master_process(checkpoint: Checkpoint) -> psutil.Process | None:
    """The checkpoint's master when it runs on this host and is still that process (pids are reused)."""
    if checkpoint.host != host_name():
        return None
    try:
        process = psutil.Process(checkpoint.pid)
        if abs(process.create_time() - checkpoint.create_time) > 0.05 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def load_stopped(owner_file: Path, checkpoint_files: list[Path], *, now: float | None = None) -> str | None:
    """Why load of this run may still flow on this host, or None when it is proved stopped.

    Proved stopped: no master of a checkpoint is alive here, and the owner has
    ended the load or its beat is older than its grace (so every load process,
    on any host, has stopped itself or is stopping).
    """
    now = time.time() if now is None else now
    for path in checkpoint_files:
        checkpoint = read_checkpoint(path)
        if checkpoint is not None and master_process(checkpoint) is not None:
            return f"the run's Locust master (pid {checkpoint.pid}) is still running"
    beat = read_beat(owner_file)
    if beat is not None and not beat.ended and now - beat.beat_at <= beat.grace_s and not _dead_here(beat.owner):
        return f"the run's owner ({beat.owner}) is still beating: its load may be running"
    return None


def _dead_here(who: str) -> bool:
    """The owner ``host:pid`` ran on this host and is gone (its beat cannot be fresh again but by a takeover)."""
    host, _, pid = who.rpartition(":")
    if host != host_name() or not pid.isdigit():
        return False
    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


# -- children that die with their parent -------------------------------------------------------------
def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``signum`` when the thread that started it dies.

    Linux only (elsewhere it does nothing: the heartbeat still holds). A parent that
    died between fork and prctl is caught too: the child then signals itself.
    """
    parent = os.getpid()

    def preexec() -> None:
        if _LIBC is None:
            return
        _LIBC.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


_children_die_with_owner = False


def children_die_with_this_process(value: bool = True) -> None:
    """This process owns its load alone (the CLI): its master and local agents die with it at once."""
    global _children_die_with_owner
    _children_die_with_owner = value


def children_die_with_owner() -> bool:
    return _children_die_with_owner
