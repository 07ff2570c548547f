"""The JUnit report and the summary JSON: read back by a JUnit parser, valid against the JUnit schema, stable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from lxml import etree

from stampede.core.records import Breach, Check, CleanupResult, GeneratorHealth, RunResult, StageResult, Stop
from stampede.core.stops import StopKind
from stampede.render.junit import check_message, junit_xml, refused_junit_xml
from stampede.render.summary import SCHEMA, refused_summary, summary

SCHEMA_FILE = Path(__file__).with_name("junit_schema.xsd")


def stage(name: str, checks: list[Check], **extra) -> StageResult:
    values = {"scenario": "slo", "users": 6, "duration_s": 30.0, "requests": 600, "failures": 0, "rps": 20.0,
              "p50_ms": 6.0, "p95_ms": 107.0, "p99_ms": 129.0, "max_ms": 150.0, "error_rate": 0.0}
    values.update(extra)
    result = StageResult(name=name, checks=checks, **values)
    result.passed = not any(c.fails for c in checks)
    return result


LISTINGS = Check("p95_ms", "<", 80.0, 144.064, False, name="GET /listings p95 < 80 ms over 3 s windows",
                 endpoint="GET /listings", stat="p95", window_s=3, abort=True)
ESCROWS = Check("p95_ms", "<", 80.0, 10.86, True, name="GET /escrows p95 < 80 ms", endpoint="GET /escrows", stat="p95")
TYPO = Check("p95_ms", "<", 50.0, None, False, name="GET /typo p95 < 50 ms", endpoint="GET /typo", stat="p95",
             judged=False, reason="no requests to GET /typo in the steady part")
OPTIONAL = Check("p95_ms", "<", 50.0, None, False, name="DELETE /never p95 < 50 ms", endpoint="DELETE /never",
                 stat="p95", judged=False, optional=True, reason="no requests to DELETE /never in the steady part")
POOL = Check("db_pool_waiting.max", "<", 1.0, 3.0, False, name="server db_pool_waiting max < 1", stat="max",
             source="server")
ERRORS = Check("error_rate", "<", 0.01, 0.0123, False, name="error_rate < 0.01", stat="error_rate")
REQUESTS = Check("requests", ">", 0.0, 600, True, name="requests > 0", stat="requests")
BREACH = Breach(stage="hold", metric="p95_ms", threshold=80.0, value=113.5, at=1796156638.0, window_s=3,
                name="GET /listings p95 < 80 ms over 3 s windows", endpoint="GET /listings", stat="p95")


def run_result() -> RunResult:
    return RunResult(
        run_id="ci-1", scenario="slo", target="http://127.0.0.1:8000/v1", verdict="fail",
        started_at="2026-12-01T20:23:45+00:00", finished_at="2026-12-01T20:24:15+00:00",
        stages=[
            stage("hold", [REQUESTS, LISTINGS, ESCROWS, TYPO, OPTIONAL, POOL]),
            stage("calm", [REQUESTS, ESCROWS, OPTIONAL]),
            stage("hot", [REQUESTS, ERRORS], valid=False),
            stage("down", [], judged_on="ramp_down", users=0),
            stage("later", [], judged_on="not_run", requests=0),
        ],
        generator=GeneratorHealth(saturated=True, advice="use 2 workers"),
        cleanup=CleanupResult(created=10, deleted=10, left=0, ok=True),
        aborted=True, stopped=Stop(reason="threshold p95_ms (GET /listings ...) breached", kind=StopKind.ABORT, breach=BREACH),
        breaches=[BREACH],
    )


def read(text: str, tmp_path: Path) -> JUnitXml:
    """As a CI reads it: from the file."""
    path = tmp_path / "junit.xml"
    path.write_text(text)
    return JUnitXml.fromfile(str(path))


def cases(xml: JUnitXml) -> dict[tuple[str, str], object]:
    return {(suite.name, case.name): case for suite in xml for case in suite}


def kind(case) -> str:
    results = case.result
    if not results:
        return "passed"
    return {Failure: "failure", Error: "error", Skipped: "skipped"}[type(results[0])]


def test_a_junit_parser_reads_every_stage_and_threshold_with_the_right_failures(tmp_path):
    xml = read(junit_xml(run_result(), exit_code=1), tmp_path)
    found = {key: kind(case) for key, case in cases(xml).items()}
    assert found == {
        ("run", "verdict"): "failure",
        ("run", "the load ran to its planned end"): "failure",
        ("run", "test data cleaned up"): "passed",
        ("run", "load generator not saturated"): "error",
        ("run", "hold: GET /listings p95 < 80 ms over 3 s windows held mid-run"): "failure",
        ("hold", "stage hold"): "failure",
        ("hold", "requests > 0"): "passed",
        ("hold", "GET /listings p95 < 80 ms over 3 s windows"): "failure",
        ("hold", "GET /escrows p95 < 80 ms"): "passed",
        ("hold", "GET /typo p95 < 50 ms"): "failure",  # not judged: fails, never a silent pass
        ("hold", "DELETE /never p95 < 50 ms"): "skipped",  # not judged, optional
        ("hold", "server db_pool_waiting max < 1"): "failure",
        ("calm", "stage calm"): "passed",
        ("calm", "requests > 0"): "passed",
        ("calm", "GET /escrows p95 < 80 ms"): "passed",
        ("calm", "DELETE /never p95 < 50 ms"): "skipped",
        ("hot", "stage hot"): "error",  # the generator saturated: the figures cannot be trusted
        ("hot", "requests > 0"): "passed",
        ("hot", "error_rate < 0.01"): "failure",
        ("down", "stage down"): "skipped",
        ("later", "stage later"): "skipped",
    }
    by_key = cases(xml)
    assert by_key[("hold", "GET /listings p95 < 80 ms over 3 s windows")].result[0].message == (
        "observed 144 ms (worst 3 s window), limit < 80 ms")
    assert by_key[("hold", "GET /typo p95 < 50 ms")].result[0].message == (
        "not judged: no requests to GET /typo in the steady part; limit < 50 ms")
    assert by_key[("hot", "error_rate < 0.01")].result[0].message == "observed 1.23%, limit < 1.00%"
    assert by_key[("hold", "server db_pool_waiting max < 1")].result[0].message == "observed 3.000, limit < 1.000"
    assert by_key[("hold", "GET /escrows p95 < 80 ms")].system_out == "observed 11 ms, limit < 80 ms"
    hold = next(s for s in xml if s.name == "hold")
    assert (hold.tests, hold.failures, hold.errors, hold.skipped) == (7, 4, 0, 1)
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (21, 8, 2, 4)


def test_the_report_is_valid_against_the_junit_schema():
    schema = etree.XMLSchema(etree.parse(str(SCHEMA_FILE)))
    for text in (junit_xml(run_result(), exit_code=1), refused_junit_xml("target: production; fix: x", run_id="r",
                                                                       exit_code=2)):
        document = etree.fromstring(text.encode())
        assert schema.validate(document), schema.error_log


def test_a_refused_run_is_one_case_in_error(tmp_path):
    xml = read(refused_junit_xml("target: host is production; fix: use staging", run_id="r", exit_code=2), tmp_path)
    ((_, case),) = cases(xml).items()
    assert kind(case) == "error" and case.result[0].message == "refused: target: host is production; fix: use staging"


@pytest.mark.parametrize(("check", "message"), [
    pytest.param(Check("rps", ">", 100.0, 84.2, False, stat="rps"), "observed 84.2 req/s, limit > 100.0 req/s", id="rps"),
    pytest.param(Check("requests", ">", 0.0, 0, False, stat="requests"), "observed 0, limit > 0", id="count"),
    pytest.param(Check("dropped_rate", "<", 0.01, 0.5, False, stat="dropped_rate"), "observed 50.00%, limit < 1.00%", id="dropped"),
    pytest.param(Check("p99.9_ms", "<", 900.0, 1234.5, False, stat="p99.9"), "observed 1,234 ms, limit < 900 ms", id="p99.9"),
])
def test_each_statistic_reads_in_its_unit(check, message):
    assert check_message(check) == message


def test_the_summary_is_small_stable_json_with_every_threshold():
    document = summary(run_result(), exit_code=1, results_path="reports/x/results.json")
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert list(document) == ["schema", "run_id", "scenario", "target", "environment", "verdict", "exit_code", "passed",
                              "started_at", "finished_at", "stopped", "failures", "stages", "thresholds", "breaches",
                              "cleanup", "generator_saturated", "results", "report"]
    assert (document["schema"], document["verdict"], document["exit_code"], document["passed"]) == (SCHEMA, "fail", 1, False)
    assert document["stopped"] == {"kind": "abort", "reason": "threshold p95_ms (GET /listings ...) breached"}
    assert document["failures"] == [
        "hold: GET /listings p95 < 80 ms over 3 s windows: observed 144 ms (worst 3 s window), limit < 80 ms",
        "hold: GET /typo p95 < 50 ms: not judged: no requests to GET /typo in the steady part; limit < 50 ms",
        "hold: server db_pool_waiting max < 1: observed 3.000, limit < 1.000",
        "hot: error_rate < 0.01: observed 1.23%, limit < 1.00%",
        "stopped (abort): threshold p95_ms (GET /listings ...) breached",
    ]
    typo = next(t for t in document["thresholds"] if t["name"] == "GET /typo p95 < 50 ms")
    assert typo == {"stage": "hold", "name": "GET /typo p95 < 50 ms", "metric": "p95_ms", "stat": "p95",
                    "endpoint": "GET /typo", "source": "client", "op": "<", "limit": 50.0, "value": None,
                    "window_s": None, "outcome": "not judged", "optional": False,
                    "reason": "no requests to GET /typo in the steady part"}
    assert [s["outcome"] for s in document["stages"]] == ["fail", "pass", "invalid", "reported", "not run"]


def test_a_refused_summary_has_the_same_keys():
    refused = refused_summary("target: production; fix: x", run_id="r", exit_code=2)
    assert list(refused) == list(summary(run_result(), exit_code=1))
    assert (refused["verdict"], refused["exit_code"], refused["passed"], refused["failures"]) == (
        "refused", 2, False, ["target: production; fix: x"])
