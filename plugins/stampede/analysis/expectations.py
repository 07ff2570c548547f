"""The validate step: judge every stage against its scenario's thresholds with Great Expectations.

Each stage becomes one row of a pandas DataFrame. A GX 1.x suite, built in code, holds one
expectation per threshold per stage, restricted to that stage's row by a row condition, plus
``requests > 0`` for every stage (a stage that sent nothing proves nothing). GX is the judge:
every ``Check`` (its observed value and verdict) is read back from GX's own result objects,
never recomputed here.

The suite is built from the same threshold table (``stampede.core.thresholds``) that the
mid-run abort and the breaking-point search judge by: one rule, strict as the seed words it
("p95 < 200 ms", "errors < 1 %", "> 100 req/s"): a value equal to its threshold fails.

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
from dataclasses import dataclass
from typing import Any

from stampede.core import thresholds as threshold_rules
from stampede.core.records import Check, StageResult

logger = logging.getLogger(__name__)

COLUMNS = ("stage", "scenario", "users", "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "error_rate")

# Checked on every stage, whatever its thresholds: reported as metric "requests", "> 0".
REQUESTS_METRIC = "requests"


@dataclass
class ValidationOutcome:
    """The verdict of one validation.

    :param success: GX's overall verdict: every expectation of every stage held.
    :param checks: per stage name, one ``Check`` per judged metric (``requests`` first, then
        the stage's thresholds), each with the value GX observed and GX's verdict.
    :param gx_result: GX's ``ExpectationSuiteValidationResult.to_json_dict()`` (JSON-serialisable;
        empty when there was nothing to validate).
    :param duration_s: wall time of the whole validation, including the GX import on a first call.
    """

    success: bool
    checks: dict[str, list[Check]]
    gx_result: dict[str, Any]
    duration_s: float


def validate_stages(stages: list[StageResult]) -> ValidationOutcome:
    """Judge every stage against its own thresholds in one Great Expectations suite.

    :param stages: the stages that ran; names must be unique (they key the row conditions and
        ``ValidationOutcome.checks``). No stages (the run stopped before its first) is not a
        pass: the outcome is unsuccessful, with no checks and an empty ``gx_result``.
    :raises ValueError: a duplicate stage name or an unknown threshold key.
    """
    started = time.perf_counter()
    _check_input(stages)
    if not stages:
        return ValidationOutcome(success=False, checks={}, gx_result={}, duration_s=time.perf_counter() - started)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    frame = _metrics_frame(stages, pd)
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
    expectations = _expectations(stages)
    suite = gx.ExpectationSuite(name=f"stampede-thresholds-{suffix}", expectations=expectations)
    result = batch.validate(suite)

    # GX groups its results by domain, not in suite order: match them back through their meta.
    by_key = {_key(r.expectation_config.meta): r for r in result.results}
    checks: dict[str, list[Check]] = {stage.name: [] for stage in stages}
    for expectation in expectations:
        meta = expectation.meta
        expectation_result = by_key.get(_key(meta))
        if expectation_result is None:
            raise RuntimeError(f"validate: GX returned no result for {meta['metric']} of stage {meta['stage']!r}")
        info = expectation_result.exception_info or {}
        if info.get("raised_exception"):
            # a broken expectation is a bug here, not a breached threshold: do not report it as one
            raise RuntimeError(
                f"validate: GX could not evaluate {meta['metric']} of stage {meta['stage']!r}: "
                f"{info.get('exception_message')}"
            )
        checks[meta["stage"]].append(Check(
            metric=meta["metric"],
            op=meta["op"],
            threshold=meta["threshold"],
            value=_plain(expectation_result.result.get("observed_value")),
            passed=bool(expectation_result.success),
        ))

    gx_result = result.to_json_dict()
    outcome = ValidationOutcome(
        success=bool(result.success),
        checks=checks,
        gx_result=gx_result,
        duration_s=time.perf_counter() - started,
    )
    failed = [f"{name}: {c.metric}" for name, cs in checks.items() for c in cs if not c.passed]
    logger.info(
        "validate: %d stages, %d checks, %s in %.2f s%s",
        len(stages), len(result.results), "pass" if outcome.success else "fail", outcome.duration_s,
        f" (failed: {', '.join(failed)})" if failed else "",
    )
    return outcome


def apply_outcome(stages: list[StageResult], outcome: ValidationOutcome) -> None:
    """Set each stage's ``checks`` and ``passed`` from a validation of those same stages.

    :raises ValueError: a stage the outcome did not judge.
    """
    missing = [stage.name for stage in stages if stage.name not in outcome.checks]
    if missing:
        raise ValueError(f"validate: stages {missing} were not validated; fix: validate these stages first")
    for stage in stages:
        stage.checks = list(outcome.checks[stage.name])
        stage.passed = all(check.passed for check in stage.checks)


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


def _metrics_frame(stages: list[StageResult], pd: Any) -> Any:
    """One row per stage; None percentiles become NaN so the metric columns stay float."""
    rows = {
        "stage": pd.Series([s.name for s in stages], dtype="str"),
        "scenario": pd.Series([s.scenario for s in stages], dtype="str"),
        "users": pd.Series([s.users for s in stages], dtype="int64"),
        "requests": pd.Series([s.requests for s in stages], dtype="int64"),
        "rps": pd.Series([s.rps for s in stages], dtype="float64"),
        "p50_ms": pd.Series([s.p50_ms for s in stages], dtype="float64"),
        "p95_ms": pd.Series([s.p95_ms for s in stages], dtype="float64"),
        "p99_ms": pd.Series([s.p99_ms for s in stages], dtype="float64"),
        "error_rate": pd.Series([s.error_rate for s in stages], dtype="float64"),
    }
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _expectations(stages: list[StageResult]) -> list[Any]:
    """One expectation per (stage, metric), restricted to the stage's row.

    Column max/min rather than ``ExpectColumnValuesToBeBetween``: the per-value expectations
    skip nulls, so a stage without percentiles would pass; the max/min of a null-only row is
    ``None`` and fails, with ``observed_value`` ready to report.
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    expectations = []
    for stage in stages:
        rules = [(REQUESTS_METRIC, REQUESTS_METRIC, ">", 0.0)]
        rules += [(t.metric, t.figure, t.op, t.limit) for t in threshold_rules.table(stage.thresholds)]
        for metric, column, op, threshold in rules:
            common = {
                "column": column,
                # a Condition object: string row conditions are deprecated since GX 1.9
                "row_condition": Column("stage") == stage.name,
                "meta": {"stage": stage.name, "metric": metric, "op": op, "threshold": threshold},
            }
            if op == "<":
                expectations.append(gxe.ExpectColumnMaxToBeBetween(max_value=threshold, strict_max=True, **common))
            else:
                expectations.append(gxe.ExpectColumnMinToBeBetween(min_value=threshold, strict_min=True, **common))
    return expectations


def _key(meta: dict[str, Any]) -> tuple[str, str]:
    return meta["stage"], meta["metric"]


def _plain(value: Any) -> float | int | None:
    """GX's observed value as a plain Python number; NaN and missing become None."""
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
