"""The validate step: judge every stage against its thresholds with Great Expectations.

GX judges a table with a row per stage and per subject (an endpoint, a group of endpoints, a
pattern's match, a server series) and a column per figure a threshold needs (``p95_ms``,
``p99_9_ms``, ``error_rate``, ``p95_ms_worst_30s`` for a windowed one, ``server_cpu_pct_max``...).
A GX 1.x suite, built in code, holds one expectation per threshold and subject, restricted to
its row by a row condition, plus ``requests > 0`` for every stage (a stage that sent nothing
proves nothing). GX is the judge: every ``Check`` (its observed value and verdict) is read back
from GX's own result objects, never recomputed here.

The values come from the figures (``stampede.figures.stages.observe``, ``stampede.figures.server.observe``),
measured by the same threshold rules (``stampede.core.thresholds``) that the mid-run abort and
the breaking-point search judge by: one rule, strict as the seed words it ("p95 < 200 ms",
"errors < 1 %", "> 100 req/s"): a value equal to its threshold fails.

A threshold that could not be judged (no requests to its endpoint, no server samples) has no
value: GX still judges its empty cell, which fails, so nothing passes that was not measured.
Only an ``optional`` one is left out of the suite and reported as not judged.

Great Expectations is imported inside :func:`validate_stages`, never at module scope: the import
alone takes seconds (about 16 s on a 2-core machine) and DAG files must stay cheap to parse.
It runs in an ephemeral context: nothing is written to disk, no Data Docs, no network.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stampede.core import thresholds as threshold_rules
from stampede.core.records import Check, StageResult
from stampede.core.thresholds import Observation

logger = logging.getLogger(__name__)

# Checked on every stage, whatever its thresholds: reported as metric "requests", "> 0".
REQUESTS_METRIC = "requests"


@dataclass
class ValidationOutcome:
    """The verdict of one validation.

    :param success: GX's overall verdict: every expectation of every stage held.
    :param checks: per stage name, one ``Check`` per judged metric (``requests`` first, then
        the stage's thresholds in their table's order), each with the value GX observed and GX's verdict.
    :param gx_result: GX's ``ExpectationSuiteValidationResult.to_json_dict()`` (JSON-serialisable;
        empty when there was nothing to validate).
    :param duration_s: wall time of the whole validation, including the GX import on a first call.
    """

    success: bool
    checks: dict[str, list[Check]]
    gx_result: dict[str, Any]
    duration_s: float


@dataclass
class _Planned:
    """One check to make: the cell GX judges (row, column) and how to read its result back."""

    stage: str
    row: int
    column: str
    metric: str
    op: str
    limit: float
    value: float | None
    observation: Observation | None  # None: the stage's "requests > 0"


def validate_stages(stages: list[StageResult],
                    observations: Mapping[str, Sequence[Observation]] | None = None) -> ValidationOutcome:
    """Judge every stage against its own thresholds in one Great Expectations suite.

    :param stages: the stages to judge; names must be unique (they key ``ValidationOutcome.checks``).
        No stages (the run stopped before its first) is not a pass: the outcome is unsuccessful,
        with no checks and an empty ``gx_result``.
    :param observations: per stage name, what each of its thresholds measured (the figures'
        ``observe``). ``None``: each stage's legacy ``thresholds`` mapping, judged on its own figures.
    :raises ValueError: a duplicate stage name or an unknown threshold key.
    """
    started = time.perf_counter()
    _check_input(stages)
    if not stages:
        return ValidationOutcome(success=False, checks={}, gx_result={}, duration_s=time.perf_counter() - started)
    if observations is None:
        observations = {stage.name: observations_of_figures(stage) for stage in stages}

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # its import logs ~150 INFO lines about its own API docs ("Skipping registering function ..."):
    # noise in every validate task's log
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    planned, order, rows = _plan_checks(stages, observations)
    frame = _metrics_frame(rows, planned, pd)
    suffix = uuid.uuid4().hex[:12]
    context = gx.get_context(
        mode="ephemeral",
        # In-memory stores and no Data Docs site (GX's ephemeral default reserves a temporary
        # docs directory); no tqdm "Calculating Metrics" bars on stderr.
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        ),
    )
    batch = (
        context.data_sources.add_pandas(f"stampede-stages-{suffix}")
        .add_dataframe_asset(f"stages-{suffix}")
        .add_batch_definition_whole_dataframe(f"whole-{suffix}")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    expectations = _expectations(planned)
    suite = gx.ExpectationSuite(name=f"stampede-thresholds-{suffix}", expectations=expectations)
    result = batch.validate(suite)

    # GX groups its results by domain, not in suite order: match them back through their meta.
    by_check = {r.expectation_config.meta["check"]: r for r in result.results}
    checks: dict[str, list[Check]] = {stage.name: [] for stage in stages}
    for stage_name, entry in order:  # the suite's order: requests first, then each stage's table
        if isinstance(entry, Observation):  # optional, and nothing was measured: not judged, not failed
            checks[stage_name].append(_check_of(entry, None, False))
            continue
        item = planned[entry]
        expectation_result = by_check.get(entry)
        if expectation_result is None:
            raise RuntimeError(f"validate: GX returned no result for {item.metric} of stage {item.stage!r}")
        info = expectation_result.exception_info or {}
        if info.get("raised_exception"):
            # a broken expectation is a bug here, not a breached threshold: do not report it as one
            raise RuntimeError(
                f"validate: GX could not evaluate {item.metric} of stage {item.stage!r}: "
                f"{info.get('exception_message')}"
            )
        checks[item.stage].append(_check(item, _plain(expectation_result.result.get("observed_value")),
                                         bool(expectation_result.success)))

    gx_result = result.to_json_dict()
    outcome = ValidationOutcome(
        success=bool(result.success),
        checks=checks,
        gx_result=gx_result,
        duration_s=time.perf_counter() - started,
    )
    failed = [f"{name}: {c.name or c.metric}" for name, cs in checks.items() for c in cs if c.fails]
    logger.info(
        "validate: %d stages, %d checks, %s in %.2f s%s",
        len(stages), len(result.results), "pass" if outcome.success else "fail", outcome.duration_s,
        f" (failed: {', '.join(failed)})" if failed else "",
    )
    return outcome


def observations_of_figures(stage: StageResult) -> list[Observation]:
    """A stage's legacy ``thresholds`` mapping, measured on the stage's own figures (its attributes)."""
    return [
        Observation(stage=stage.name, index=position, threshold=rule, subject=None, value=rule.value_of(stage),
                    reason="" if rule.value_of(stage) is not None else f"no {rule.metric} (no requests were measured)")
        for position, rule in enumerate(threshold_rules.table(stage.thresholds))
    ]


def apply_outcome(stages: list[StageResult], outcome: ValidationOutcome) -> None:
    """Set each stage's ``checks`` and ``passed`` from a validation of those same stages.

    :raises ValueError: a stage the outcome did not judge.
    """
    missing = [stage.name for stage in stages if stage.name not in outcome.checks]
    if missing:
        raise ValueError(f"validate: stages {missing} were not validated; fix: validate these stages first")
    for stage in stages:
        stage.checks = list(outcome.checks[stage.name])
        stage.passed = not any(check.fails for check in stage.checks)  # an optional one not judged does not fail


def _check_input(stages: list[StageResult]) -> None:
    names = [stage.name for stage in stages]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ValueError(f"validate: stage name {duplicate!r} is used twice; fix: give every stage a unique name")
    for stage in stages:
        unknown = sorted(set(stage.thresholds) - set(threshold_rules.KEYS))
        if unknown:
            raise ValueError(
                f"validate: stage {stage.name!r}: unknown threshold {unknown[0]!r}; "
                f"fix: use one of {', '.join(threshold_rules.KEYS)}"
            )


def _plan_checks(stages: list[StageResult], observations: Mapping[str, Sequence[Observation]]
                 ) -> tuple[list[_Planned], list[tuple[str, int | Observation]], list[tuple[str, str | None]]]:
    """The checks GX makes; every stage's checks in order (a GX check's number, or an optional
    threshold nothing could be measured for); and the table's rows.

    Rows are ``(stage, subject)``; a cell two checks would fill with different values (never, as
    both measure the same requests, but not assumed) gets a row of its own.
    """
    rows: list[tuple[str, str | None]] = []
    cells: dict[tuple[int, str], float | None] = {}
    planned: list[_Planned] = []
    order: list[tuple[str, int | Observation]] = []

    def row_for(stage: str, subject: str | None, column: str, value: float | None) -> int:
        for index, key in enumerate(rows):
            if key == (stage, subject) and cells.get((index, column), value) == value:
                cells[(index, column)] = value
                return index
        rows.append((stage, subject))
        cells[(len(rows) - 1, column)] = value
        return len(rows) - 1

    for stage in stages:
        requests_row = row_for(stage.name, None, REQUESTS_METRIC, float(stage.requests))
        order.append((stage.name, len(planned)))
        planned.append(_Planned(stage.name, requests_row, REQUESTS_METRIC, REQUESTS_METRIC, ">", 0.0,
                                float(stage.requests), None))
        for observation in observations.get(stage.name, ()):
            rule = observation.threshold
            if not observation.judged and rule.optional:
                order.append((stage.name, observation))
                continue
            subject = observation.subject if (rule.endpoints is not None or rule.server) else None
            row = row_for(stage.name, subject, rule.column, observation.value)
            order.append((stage.name, len(planned)))
            planned.append(_Planned(stage.name, row, rule.column, rule.metric, rule.op, rule.limit,
                                    observation.value, observation))
    return planned, order, rows


def _metrics_frame(rows: list[tuple[str, str | None]], planned: list[_Planned], pd: Any) -> Any:
    """One row per stage and subject, one float column per figure; no value is NaN (GX's max of it fails)."""
    columns: dict[str, list[float]] = {}
    for item in planned:
        column = columns.setdefault(item.column, [math.nan] * len(rows))
        column[item.row] = math.nan if item.value is None else float(item.value)
    data = {
        "row": pd.Series(range(len(rows)), dtype="int64"),
        "stage": pd.Series([stage for stage, _ in rows], dtype="str"),
        "subject": pd.Series([subject or "" for _, subject in rows], dtype="str"),
    }
    data.update({name: pd.Series(values, dtype="float64") for name, values in columns.items()})
    return pd.DataFrame(data)


def _expectations(planned: list[_Planned]) -> list[Any]:
    """One expectation per check, restricted to its row.

    Column max/min rather than ``ExpectColumnValuesToBeBetween``: the per-value expectations
    skip nulls, so a subject without a value would pass; the max/min of a null-only row is
    ``None`` and fails, with ``observed_value`` ready to report.
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    expectations = []
    for number, item in enumerate(planned):
        common = {
            "column": item.column,
            # a Condition object: string row conditions are deprecated since GX 1.9
            "row_condition": Column("row") == item.row,
            "meta": {"check": number, "stage": item.stage, "metric": item.metric, "op": item.op,
                     "threshold": item.limit,
                     "subject": item.observation.subject if item.observation else None},
        }
        if item.op == "<":
            expectations.append(gxe.ExpectColumnMaxToBeBetween(max_value=item.limit, strict_max=True, **common))
        else:
            expectations.append(gxe.ExpectColumnMinToBeBetween(min_value=item.limit, strict_min=True, **common))
    return expectations


def _check(item: _Planned, value: float | int | None, passed: bool) -> Check:
    if item.observation is None:
        return Check(metric=REQUESTS_METRIC, op=">", threshold=0.0, value=value, passed=passed,
                     name="requests > 0", stat="requests")
    return _check_of(item.observation, value, passed)


def _check_of(observation: Observation, value: float | int | None, passed: bool) -> Check:
    rule = observation.threshold
    subject = observation.subject if rule.endpoints is not None else None
    return Check(
        metric=rule.metric, op=rule.op, threshold=rule.limit, value=value, passed=passed and observation.judged,
        name=rule.label(subject), endpoint=subject, stat=rule.stat, window_s=rule.window_s, source=rule.source,
        judged=observation.judged, optional=rule.optional, reason=observation.reason, abort=rule.aborts,
        at=observation.at,
    )


def _plain(value: Any) -> float | int | None:
    """GX's observed value as a plain Python number; NaN and missing become None."""
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
