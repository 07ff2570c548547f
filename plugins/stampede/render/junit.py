"""A run's verdict as a JUnit XML report, for CI systems (``stampede run --junit FILE``).

Every CI reads JUnit: GitHub Actions (through a test-report action), GitLab (``artifacts:
reports: junit``), Jenkins, Azure Pipelines. The report has one test suite for the run and one
per stage; each stage and each of its thresholds is a test case, whose message gives the
observed value and the limit::

    testsuites "stampede <run id>"
      testsuite "run"          verdict, the load ran to its end, test data cleaned up, generator
                               not saturated, one case per mid-run breach
      testsuite "<stage>"      "stage <stage>", then one case per threshold (and endpoint)

How outcomes map: a breached threshold is a ``<failure>``; a threshold that could not be judged
is a ``<failure>`` (it fails the run) unless it is optional, then ``<skipped>``; a stage whose
figures cannot be trusted (the generator saturated) or a run stopped for a reason of our own is
an ``<error>``; a stage that was not run, or a ramp-down that is reported and not judged, is
``<skipped>``. The structure follows the JUnit schema the Jenkins plugin documents
(``testsuites/testsuite/testcase`` with ``failure``, ``error``, ``skipped``; counts on each suite).
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from stampede.core import fmt
from stampede.core.records import Breach, Check, RunResult, StageResult
from stampede.core.thresholds import FRACTIONS, is_latency
from stampede.render.outcome import cleanup_problem, describe

__all__ = ["check_message", "junit_xml", "refused_junit_xml"]


@dataclass
class _Case:
    classname: str
    name: str
    time_s: float = 0.0
    failure: str | None = None  # message
    error: str | None = None
    skipped: str | None = None
    details: str = ""


@dataclass
class _Suite:
    name: str
    cases: list[_Case] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    time_s: float = 0.0


def value_text(check: Check | Breach, value: float | None) -> str:
    """A check's (or breach's) value in its unit: ``312 ms``, ``1.20%``, ``84.2 req/s``, ``3``."""
    if value is None:
        return fmt.MISSING
    if check.source == "server":
        return fmt.num(value, 3)
    if is_latency(check.stat) or check.metric.endswith("_ms"):
        return fmt.ms(value)
    if check.stat in FRACTIONS or check.metric == "error_rate":
        return fmt.pct(value)
    if check.stat == "rps" or check.metric.endswith("rps"):
        return fmt.rps(value)
    if check.stat in ("requests", "dropped_iterations") or check.metric == "requests":
        return fmt.count(value)
    return fmt.num(value, 3)


def check_message(check: Check) -> str:
    """``observed 312 ms, limit < 200 ms`` (or why it was not judged), for people and CI logs."""
    limit = f"limit {check.op} {value_text(check, check.threshold)}"
    if not check.judged:
        optional = " (optional)" if check.optional else ""
        return f"not judged{optional}: {check.reason or 'nothing was measured'}; {limit}"
    window = f" (worst {check.window_s} s window)" if check.window_s else ""
    return f"observed {value_text(check, check.value)}{window}, {limit}"


def junit_xml(result: RunResult, *, exit_code: int | None = None) -> str:
    """The JUnit XML document of a run."""
    suites = [_run_suite(result, exit_code)] + [_stage_suite(result, stage) for stage in result.stages]
    return _render(f"stampede {result.run_id}", suites, timestamp=result.started_at)


def refused_junit_xml(message: str, *, run_id: str, exit_code: int) -> str:
    """A report for a run refused before any load was sent: one case in error, with the refusal."""
    suite = _Suite("run", properties={"run_id": run_id, "exit_code": str(exit_code)})
    suite.cases.append(_Case("stampede.run", "preflight", error=f"refused: {message}"))
    return _render(f"stampede {run_id}", [suite], timestamp=None)


def _run_suite(result: RunResult, exit_code: int | None) -> _Suite:
    suite = _Suite("run", properties={
        "run_id": result.run_id, "scenario": result.scenario, "target": result.target,
        "environment": result.environment, "verdict": result.verdict,
        **({"exit_code": str(exit_code)} if exit_code is not None else {}),
    })
    verdict = _Case("stampede.run", "verdict")
    failed = [f"{s.name}: {c.name or c.metric}: {check_message(c)}" for s, c in result.failed_checks()]
    why = "; ".join(failed) or (result.stopped.reason if result.stopped else "")
    if result.verdict == "fail":
        verdict.failure = f"verdict fail{': ' + why if why else ''}"
    elif result.verdict == "invalid":
        verdict.error = "verdict invalid: the figures cannot be trusted" + (f" ({why})" if why else "")
    suite.cases.append(verdict)

    ran = _Case("stampede.run", "the load ran to its planned end")
    if result.stopped is not None:
        message = f"stopped ({result.stopped.kind}): {result.stopped.reason} — {describe(result.stopped.kind)}"
        if result.stopped.kind.invalidates:
            ran.error = message
        else:
            ran.failure = message
    suite.cases.append(ran)

    cleanup = _Case("stampede.run", "test data cleaned up")
    problem = cleanup_problem(result.cleanup)
    if problem:
        cleanup.failure = problem + (f" ({result.cleanup.error})" if result.cleanup.error else "")
    suite.cases.append(cleanup)

    generator = _Case("stampede.run", "load generator not saturated")
    if result.generator.saturated:
        generator.error = result.generator.advice or f"a generator sat above {result.generator.limit_pct:.0f} % of a core"
    suite.cases.append(generator)

    for breach in result.breaches:
        name = breach.name or breach.metric
        suite.cases.append(_Case(
            "stampede.run.breaches", f"{breach.stage}: {name} held mid-run",
            failure=(f"observed {value_text(breach, breach.value)} over {breach.window_s} s, "
                     f"threshold {value_text(breach, breach.threshold)}"),
        ))
    return suite


def _stage_suite(result: RunResult, stage: StageResult) -> _Suite:
    classname = f"stampede.{stage.scenario or result.scenario}.{stage.name}"
    suite = _Suite(stage.name, time_s=stage.duration_s, properties={
        "users": str(stage.users), "judged_on": stage.judged_on, "requests": str(stage.requests),
        "rps": f"{stage.rps:g}", "p95_ms": "" if stage.p95_ms is None else f"{stage.p95_ms:g}",
        "error_rate": f"{stage.error_rate:g}",
    })
    case = _Case(classname, f"stage {stage.name}", time_s=stage.duration_s,
                 details=f"{stage.outcome}: {fmt.stage_figures(stage)}")
    if stage.judged_on == "not_run":
        case.skipped = "not run: the load stopped before this stage"
    elif stage.judged_on == "ramp_down":
        case.skipped = "reported, not judged: the stage lowers the load"
    elif not stage.valid:
        case.error = "invalid: a load generator saturated during this stage, so its figures cannot be trusted"
    elif not stage.passed:
        failed = stage.failed_checks()
        case.failure = f"{len(failed)} of {len(stage.checks)} checks failed: " + "; ".join(
            f"{c.name or c.metric}: {check_message(c)}" for c in failed)
    suite.cases.append(case)
    for check in stage.checks:
        item = _Case(classname, check.name or check.metric, details=check_message(check))
        if check.fails:
            item.failure = check_message(check)
        elif not check.judged:
            item.skipped = check_message(check)
        suite.cases.append(item)
    return suite


def _render(name: str, suites: list[_Suite], *, timestamp: str | None) -> str:
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    root = ET.Element("testsuites", name=name)
    hostname = socket.gethostname()
    for number, suite in enumerate(suites):
        counts = {
            "tests": len(suite.cases),
            "failures": sum(1 for c in suite.cases if c.failure is not None),
            "errors": sum(1 for c in suite.cases if c.error is not None),
            "skipped": sum(1 for c in suite.cases if c.skipped is not None),
        }
        for key, value in counts.items():
            totals[key] += value
        element = ET.SubElement(root, "testsuite", name=suite.name, id=str(number),
                                **{k: str(v) for k, v in counts.items()}, time=f"{suite.time_s:.3f}",
                                hostname=hostname, **({"timestamp": timestamp[:19]} if timestamp else {}))
        if suite.properties:
            properties = ET.SubElement(element, "properties")
            for key, value in suite.properties.items():
                ET.SubElement(properties, "property", name=key, value=value)
        for case in suite.cases:
            item = ET.SubElement(element, "testcase", classname=case.classname, name=case.name, time=f"{case.time_s:.3f}")
            for tag, kind in (("skipped", None), ("error", "invalid"), ("failure", "threshold")):  # the schema's order
                message = getattr(case, tag)
                if message is not None:
                    child = ET.SubElement(item, tag, message=message, **({"type": kind} if kind else {}))
                    child.text = message
            if case.details:
                ET.SubElement(item, "system-out").text = case.details
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{sum(s.time_s for s in suites[1:]):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
