"""Where things are: the reports root, one run's folder, and the name of every artifact in it.

This module is the one owner of these names. Steps reach a run's files only
through :class:`stampede.core.artifacts.RunFolder`, by the names below; nothing
else builds a path into a run folder.

The reports root is ``$STAMPEDE_REPORTS_DIR`` when set (the Makefile and the
tests set it), else ``reports/`` at the top of a source checkout, else
``reports/`` in the current directory (an installed package has no checkout).
"""

from __future__ import annotations

import importlib.util
import os
from enum import StrEnum
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../stampede
_CHECKOUT = PACKAGE_DIR.parents[1]  # plugins/stampede -> the repository, when run from a checkout


class Artifact(StrEnum):
    """The files of one run folder (``reports/<run tag>/``), by role."""

    RESULTS = "results.json"  # the public contract (docs/results.md)
    REPORT = "report.html"
    LOCUST_OUTPUT = "locust_output.json"  # the master's raw per-stage histograms and series
    STAGES_SO_FAR = "stages_so_far.json"  # the master's per-stage figures as each stage ends (live replies)
    FIGURE_STREAM = "stream"  # the master's checkpoints as it goes: segments of JSON lines (stampede.figures.stream)
    MASTER_RESTARTS = "master_restarts.json"  # the masters that died mid-run and were started again (load.runner)
    RUN_PLAN = "run_plan.json"  # the run's plan, written as the load starts: a progress report needs its stages
    PROGRESS = "progress"  # a finished-so-far report of a running (or dead) run: report.html and charts/
    GENERATOR_SAMPLES = "generator_samples.json"
    SERVER_METRICS = "server_metrics.json"
    WORKERS = "workers.json"
    WORKERS_STOP = "workers.stop"  # local worker agents end when this file appears
    TEARDOWN = "teardown.json"
    CLEANUP = "cleanup.json"
    LEDGER = "ledger.jsonl"  # what the run created, appended by the Locust master while it runs
    CLEANUP_JOURNAL = "cleanup_journal.jsonl"  # what cleanup sent and deleted: a retry resumes from it
    COST_ESTIMATE = "cost_estimate.json"  # the cost check's estimate and budgets
    COST = "cost.json"  # the actual cost after teardown
    STOP = "STOP"  # the supervisor asks the master to stop the load
    SLACK_FALLBACK = "slack_messages.jsonl"
    SLACK_THREAD = "slack_thread.json"  # the run's Slack thread: its parent, what was sent, what is queued
    SLACK_LOCK = "slack_thread.lock"  # guards slack_thread.json (short reads and writes)
    SLACK_SENDER_LOCK = "slack_sender.lock"  # one sender at a time, across the tasks and threads of a run
    MASTER_LOG = "logs/master.log"
    LOGS = "logs"
    CHARTS = "charts"
    STEPS = "steps"  # breaking-point search: one sub-folder per level (or the one master's folder of a live search)
    SEARCH_CONTROL = "search_control.json"  # live search: the owner's word on the next step (stampede.load.shape)
    STANDIN = "standin"  # cloud workers' local stand-ins (tests, trying without AWS)


STREAM_SEGMENT_PREFIX = "figures-"
STREAM_SEGMENT_SUFFIX = ".jsonl"


def stream_segment(number: int) -> str:
    """The name of the figure stream's segment ``number`` inside the run folder (``stream/figures-000001.jsonl``)."""
    return f"{Artifact.FIGURE_STREAM}/{STREAM_SEGMENT_PREFIX}{number:06d}{STREAM_SEGMENT_SUFFIX}"


def reports_root() -> Path:
    """The folder that holds every run folder (and the kill-switch file by default)."""
    configured = os.environ.get("STAMPEDE_REPORTS_DIR")
    if configured:
        return Path(configured)
    if (_CHECKOUT / "dags").is_dir() and (_CHECKOUT / "plugins").is_dir():
        return _CHECKOUT / "reports"
    return Path.cwd() / "reports"


def data_dir(package: str) -> Path:
    """The folder of ``loadtests``, ``cleanup`` or ``infra``, found as installed (without importing it).

    These install as ``stampede.loadtests`` and so on (pyproject's package-dir), so their
    files are found through the import system, from a checkout or an installed wheel.
    """
    spec = importlib.util.find_spec(f"stampede.{package}")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"stampede.{package} is not installed; fix: pip install -e . (or make setup)")
    return Path(next(iter(spec.submodule_search_locations)))
