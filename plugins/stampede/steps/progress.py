"""The finished-so-far report of a running (or dead) run, from its last checkpoint.

A long run's figures are readable while it goes: the master's figure stream
(:mod:`stampede.figures.stream`) is rebuilt into its output, judged as
validation would judge it (the stages that started; the running one on what it
has so far) and rendered into ``progress/report.html``, marked "in progress".
Nothing the pipeline writes is touched: ``results.json`` and ``report.html``
stay the final step's. A run that has finished is summarised from its results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact
from stampede.core.records import GeneratorSample, RunResult
from stampede.figures.stream import clock, interval_of, mark_in_progress, rebuild_output, segments, stream_of
from stampede.plan.run_plan import RunPlan
from stampede.render.report import render_report
from stampede.steps.validate import judge

STALE_AFTER_INTERVALS = 3  # no checkpoint for this many intervals (and 10 s): the master is not writing


@dataclass
class Progress:
    """What the progress report found: the results so far, the report written, and how fresh they are."""

    result: RunResult
    report_path: Path | None
    finished: bool  # the run has its final results.json: the summary is the pipeline's
    note: str


def progress_report(path: Path, *, now: float | None = None) -> Progress:
    """The report of the run in ``path`` so far (``progress/report.html``); a finished run's own results."""
    folder = RunFolder(Path(path))
    if folder.exists(Artifact.RESULTS):
        result = folder.results()
        report = folder.path / Artifact.REPORT
        return Progress(result, report if report.exists() else None, True, result.figures_note or "final results")
    plan_data = folder.read_json(Artifact.RUN_PLAN)
    if plan_data is None:
        raise FileNotFoundError(f"progress: no {Artifact.RUN_PLAN} in {folder.path}; the load has not started there")
    plan = RunPlan.from_dict(plan_data)
    output = folder.read_json(Artifact.LOCUST_OUTPUT)  # the master finished, the pipeline has not judged it yet
    if output is None:
        if not segments(folder.path / Artifact.FIGURE_STREAM):
            raise FileNotFoundError(f"progress: no checkpoint in {folder.path / Artifact.FIGURE_STREAM} yet")
        output = rebuild_output(stream_of(folder.path / Artifact.FIGURE_STREAM))
        if output is None:
            raise FileNotFoundError(f"progress: no readable checkpoint in {folder.path / Artifact.FIGURE_STREAM} yet")
        mark_in_progress(output)
        age = (now if now is not None else time.time()) - float(output["figures_until"])
        stale = max(10.0, STALE_AFTER_INTERVALS * interval_of(plan.locust_plan()))
        if age > stale:
            output["figures_note"] += (f"; no checkpoint for {age:.0f} s: the master is not writing "
                                       "(it died, or it is stalled)")
    samples = [GeneratorSample(**s) for s in folder.read_json(Artifact.GENERATOR_SAMPLES, default=[])]
    result = judge(plan, output, samples, folder.read_json(Artifact.SERVER_METRICS))
    result.stages = [s for s in result.stages if s.judged_on != "not_run"]  # the stages still to come
    report = render_report(result, folder.path / Artifact.PROGRESS,
                           server_document=folder.read_json(Artifact.SERVER_METRICS))
    return Progress(result, report, False, result.figures_note or f"built up to {clock(output['finished_at'])}")
