"""Real Locust runs that must stop early: kill switch mid-stage, an abort threshold, a target that goes down.

A loopback canary stands in for the target where what matters is *when the last
request arrived*; the demo target where test data must be created and cleaned up.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from stampede.cleanup.api import Credentials
from stampede.cleanup.reaper import reap_target
from stampede.plan.cleanup_declaration import stock_declaration
from stampede.infra.canary import Canary
from stampede.infra.demo_target.server import DemoTarget
from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.infra.slack_standin import SlackStandin
from stampede.safety import killswitch
from stampede.safety import hours as load_window
from stampede.plan.run_plan import RunPlan
from stampede.steps.cleanup import cleanup_test_data
from stampede.steps.notify import notify_summary
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.report import report
from stampede.steps.run_stages import run_stages
from stampede.steps.teardown import teardown_workers
from stampede.steps.validate import validate
from stampede.surfaces.sequence import run_load
from stampede.safety import lease as target_lock
from stampede.core.errors import Refusal
from stampede.core.netutil import free_port
from stampede.plan.run_plan import DEFAULT_ACCOUNTS

pytestmark = pytest.mark.integration

POLLING_LOCUSTFILE = Path(__file__).with_name("polling_locustfile.py")  # PollingUser


@pytest.fixture
def kill_file(tmp_path, monkeypatch):
    path = tmp_path / "KILL_SWITCH"
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH_FILE", str(path))
    return path


def _polling_scenario(tmp_path: Path, stages: list[dict], **extra) -> str:
    path = tmp_path / "polling.yaml"
    path.write_text(yaml.safe_dump({
        "name": "polling", "journeys": {"PollingUser": 1}, "think_time_s": [0.05, 0.15],
        "locustfile": str(POLLING_LOCUSTFILE), "stages": stages, **extra,
    }))
    return str(path)


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_kill_switch_mid_stage_stops_the_load_within_5_seconds(tmp_path, kill_file, record_property):
    with Canary() as canary:
        scenario = _polling_scenario(tmp_path, [{"name": "hold", "users": 5, "spawn_rate": 5, "duration_s": 60}])
        plan = preflight(RunRequest(scenarios=[scenario], target=canary.base_url, run_id="kill-mid-stage", workers=0, out_dir=str(tmp_path / "run")))
        flipped: dict[str, float] = {}

        def flip() -> None:
            _wait_for(lambda: canary.hits(exclude_health=True) >= 20, 60)
            time.sleep(2)
            kill_file.write_text("operator: stop the load")
            flipped["at"] = time.time()

        flipper = threading.Thread(target=flip, daemon=True)
        flipper.start()
        started = time.time()
        try:
            run_stages(plan, stop_probe=killswitch.as_probe())
            result = validate(plan)
        finally:
            teardown_workers(plan)
        flipper.join(5)
        took = time.time() - started
        time.sleep(1)  # anything still in flight would land now
        latency = canary.last_hit_at() - flipped["at"]
    record_property("kill_switch_stop_latency_s", round(latency, 2))
    print(f"kill switch: last request {latency:.2f} s after the flip; run took {took:.1f} s of 60")
    assert latency < 5.0
    assert took < 40
    assert result.verdict == "invalid" and result.aborted
    assert result.stopped.kind == "kill_switch" and "operator: stop the load" in result.stopped.reason


def test_a_run_stops_when_its_environments_allowed_hours_close(tmp_path, monkeypatch):
    """Started inside the window (preflight passes), stopped when the clock leaves it mid-stage."""
    now = datetime.now(timezone.utc)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    environments = tmp_path / "environments.yaml"
    environments.write_text(yaml.safe_dump({"environments": {"local": {
        "allow_load": True, "max_users": 100, "allowed_hours": window, "metrics": {"source": "none"},
    }}}))
    monkeypatch.setenv("STAMPEDE_ENVIRONMENTS_FILE", str(environments))
    closed = threading.Event()
    real_utcnow = load_window.utcnow
    monkeypatch.setattr(load_window, "utcnow", lambda: real_utcnow() + timedelta(hours=3 if closed.is_set() else 0))
    with Canary() as canary:
        scenario = _polling_scenario(tmp_path, [{"name": "night", "users": 3, "spawn_rate": 3, "duration_s": 60}])
        plan = preflight(RunRequest(scenarios=[scenario], target=canary.base_url, run_id="window-closes", workers=0, out_dir=str(tmp_path / "run")))
        assert plan.allowed_hours and RunPlan.from_dict(plan.to_dict()).allowed_hours == plan.allowed_hours

        def close_the_window() -> None:
            _wait_for(lambda: canary.hits(exclude_health=True) >= 10, 60)
            closed.set()

        threading.Thread(target=close_the_window, daemon=True).start()
        started = time.time()
        result = run_load(plan)
        took = time.time() - started
    assert took < 30, took  # long before the planned 60 s
    assert result.verdict == "invalid" and result.aborted
    assert result.stopped.kind == "allowed_hours"
    assert f"past local's window ({window} UTC)" in result.stopped.reason


def test_abort_threshold_breach_stops_the_run_early_and_records_it(tmp_path):
    (tmp_path / "target").mkdir()
    with FixedLatencyTarget(30.0, tmp_path / "target") as target:
        scenario = _polling_scenario(
            tmp_path, [{"name": "hold", "users": 5, "spawn_rate": 5, "duration_s": 60}],
            thresholds={"p95_ms": 10, "min_rps": 1}, abort_on_breach=True, abort={"delay_s": 3, "window_s": 3},
        )
        plan = preflight(RunRequest(scenarios=[scenario], target=target.base_url, run_id="abort-breach", workers=0, out_dir=str(tmp_path / "run")))
        started = time.time()
        result = run_load(plan)
        took = time.time() - started
    assert took < 30, took  # stopped long before the planned 60 s
    assert result.verdict == "fail" and result.aborted and result.stopped.kind == "abort"
    (breach,) = result.breaches
    assert breach.metric == "p95_ms" and breach.value >= 30 and breach.threshold == 10
    assert breach.window_s == 3 and result.stopped.breach.at == breach.at
    assert "p95_ms" in result.stopped.reason


def test_stress_records_a_breach_without_aborting(tmp_path):
    (tmp_path / "target").mkdir()
    with FixedLatencyTarget(30.0, tmp_path / "target") as target:
        scenario = _polling_scenario(
            tmp_path, [{"name": "hold", "users": 5, "spawn_rate": 5, "duration_s": 9}],
            thresholds={"p95_ms": 10}, abort_on_breach=False, abort={"delay_s": 3, "window_s": 2},
        )
        plan = preflight(RunRequest(scenarios=[scenario], target=target.base_url, run_id="stress-breach", workers=0, out_dir=str(tmp_path / "run")))
        result = run_load(plan)
    assert not result.aborted and result.stopped is None
    assert [b.metric for b in result.breaches] == ["p95_ms"]
    assert result.verdict == "fail"


def test_a_value_exactly_at_the_threshold_is_a_breach():
    """Strict, like validation: error_rate < 0.05 fails at exactly 0.05 (checked in a subprocess: Locust patches gevent)."""
    code = """
import types
from stampede.core.histogram import LatencyHistogram
from stampede.load.plugin import RunAggregator
env = types.SimpleNamespace(runner=None, parsed_options=None)
stage = {"name": "s", "users": 1, "spawn_rate": 1, "duration_s": 60, "thresholds": {"error_rate": 0.05},
         "abort": True, "abort_delay_s": 0, "abort_window_s": 2}
agg = RunAggregator(env, {"stages": [stage]})
agg.current_stage, agg.stages[0]["steady_from"] = 0, 1000
for sec in (1003, 1004):
    h = LatencyHistogram(); [h.record_ms(5.0) for _ in range(10)]
    agg.add_report({"seconds": {sec: {"GET /x": [h.to_dict(), 1 if sec == 1003 else 0, {}]}}})
agg.fold(upto=1004)
agg.check_abort(1008)  # judges the complete seconds 1003 and 1004: 1 failure in 20
print(agg.stop_reason["kind"], agg.breaches[0]["value"])
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    *said, last = completed.stdout.splitlines()
    assert last.split() == ["abort", "0.05"]
    assert [line.split(" {")[0] for line in said] == ["[stampede] stop"]  # the live stop line, once


def test_a_target_that_goes_down_between_stages_stops_the_run(tmp_path):
    with Canary() as canary:
        scenario = _polling_scenario(tmp_path, [
            {"name": "first", "users": 3, "spawn_rate": 3, "duration_s": 5},
            {"name": "second", "users": 3, "spawn_rate": 3, "duration_s": 30},
        ])
        plan = preflight(RunRequest(scenarios=[scenario], target=canary.base_url, run_id="down-between", workers=0, out_dir=str(tmp_path / "run")))

        def break_health() -> None:
            _wait_for(lambda: canary.hits(exclude_health=True) > 0, 60)
            canary.health_status = 503

        threading.Thread(target=break_health, daemon=True).start()
        started = time.time()
        result = run_load(plan)
        took = time.time() - started
    assert took < 25, took
    assert result.verdict == "fail" and result.aborted
    assert result.stopped.kind == "target_unhealthy"
    assert "target unhealthy before stage second" in result.stopped.reason and "HTTP 503" in result.stopped.reason


def test_a_run_killed_between_stages_and_retried_leaves_nothing_behind(tmp_path, kill_file, monkeypatch, caplog):
    password, token = "Pw-Secret-4711!", "xoxb-1234-safety-secret-token"
    monkeypatch.setenv("STAMPEDE_TARGET_PASSWORD", password)
    caplog.set_level(logging.DEBUG)
    scenario = tmp_path / "twostage.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "twostage", "journeys": {"agent": 3, "broker": 1}, "think_time_s": [0.2, 0.8],
        "stages": [{"name": "one", "users": 4, "spawn_rate": 4, "duration_s": 6},
                   {"name": "two", "users": 4, "spawn_rate": 4, "duration_s": 30}],
        "thresholds": {"p95_ms": 2000, "error_rate": 0.05},
    }))
    with DemoTarget(workdir=tmp_path / "target", password=password) as target, SlackStandin(token=token) as slack:
        monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", token)
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", slack.base_url)
        monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", "#loadtests")

        # run 1: killed as stage two starts
        first = preflight(RunRequest(scenarios=[str(scenario)], target=target.base_url, run_id="killed-1", workers=0, out_dir=str(tmp_path / "run1")))
        stage_two = threading.Event()

        class StageTwoStarts(logging.Handler):  # the supervisor relays the master's stage-start lines
            def emit(self, record: logging.LogRecord) -> None:
                if "stage-start index=1" in record.getMessage():
                    stage_two.set()

        def kill_at_stage_two() -> None:
            if stage_two.wait(90):
                kill_file.write_text("stop between stages")

        watcher = StageTwoStarts()
        logging.getLogger("stampede.load.runner").addHandler(watcher)
        threading.Thread(target=kill_at_stage_two, daemon=True).start()
        try:
            run_stages(first, stop_probe=killswitch.as_probe())
            killed = validate(first)
        finally:
            cleanup1 = cleanup_test_data(first)
            teardown_workers(first)
            report(first)
            notify_summary(first)
            logging.getLogger("stampede.load.runner").removeHandler(watcher)
        kill_file.unlink()
        assert killed.stages[1].requests > 0 and killed.stages[1].duration_s < 15  # killed early in stage two
        assert killed.verdict == "invalid" and killed.stopped.kind == "kill_switch"
        assert cleanup1.created > 0 and cleanup1.left == 0 and cleanup1.ok
        texts = [m["text"] for m in slack.messages()]
        assert any("Stage one" in t for t in texts) and any("aborted" in t and "stop between stages" in t for t in texts)

        # run 2: a fresh run id on the same target, with Slack down: it must still finish and clean up
        slack.stop()
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", f"http://127.0.0.1:{free_port()}/api/")
        retry_scenario = tmp_path / "retry.yaml"
        retry_scenario.write_text(scenario.read_text().replace("duration_s: 30", "duration_s: 3"))
        second = preflight(RunRequest(scenarios=[str(retry_scenario)], target=target.base_url, run_id="retry-2", workers=0, out_dir=str(tmp_path / "run2")))
        started = time.time()
        try:
            run_stages(second, stop_probe=killswitch.as_probe())
            retried = validate(second)
        finally:
            cleanup2 = cleanup_test_data(second)
            teardown_workers(second)
            report(second)
            summary = notify_summary(second)
        assert time.time() - started < 60
        assert summary["ok"] is False  # Slack was down: reported, not raised
        assert retried.verdict == "pass" and not retried.aborted
        assert cleanup2.created > 0 and cleanup2.left == 0

        # nothing of either run is left, and no lease holds the target
        leftovers = reap_target(base_url=target.base_url, declaration=stock_declaration(),
                                tags={first.run_tag, second.run_tag},
                                credentials=Credentials(password=password, accounts=dict(DEFAULT_ACCOUNTS)))
        assert (leftovers.found, leftovers.left) == (0, 0)
        assert target_lock.holder(target.base_url) is None

    # secrets never in logs, results, reports, Slack fallbacks or Locust logs
    files = [p for run in ("run1", "run2") for p in (tmp_path / run).rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in files) and any(p.name == "report.html" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        assert password not in text and token not in text, path
    assert password not in caplog.text and token not in caplog.text
    results = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert results["cleanup"]["left"] == 0 and results["aborted"] is True


# -- production stays production (issue 12, item 1) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "allow_load", "expected"),
    [
        pytest.param("file", "false", "environments.production.allow_load: must be true or false, unquoted",
                     id="quoted-false-in-the-file"),
        pytest.param("variable", "false", "stampede_environments.production.allow_load: must be true or false",
                     id="quoted-false-in-the-variable"),
        pytest.param("file", False, "belongs to production, where load is never allowed", id="false-in-the-file"),
        pytest.param("variable", True, "an override may not allow load where the reviewed environments file forbids it",
                     id="variable-makes-it-loadable"),
    ],
)
def test_a_canary_listed_as_production_counts_zero_requests(tmp_path, monkeypatch, where, allow_load, expected):
    """The canary on 127.0.0.2 (a loopback address, otherwise "local") is production: no smoke run reaches it."""
    with Canary(host="127.0.0.2") as canary:
        production = {"production": {"base_urls": [canary.base_url], "allow_load": allow_load}}
        reviewed = {"environments": {"local": {"allow_load": True, "max_users": 100}}}
        if where == "file":
            reviewed["environments"].update(production)
            variable = None
        else:
            reviewed["environments"]["production"] = {"base_urls": [canary.base_url], "allow_load": False}
            variable = json.dumps({"environments": production})
        environments = tmp_path / "environments.yaml"
        environments.write_text(json.dumps(reviewed))
        monkeypatch.setenv("STAMPEDE_ENVIRONMENTS_FILE", str(environments))
        with pytest.raises(Refusal) as refused:
            preflight(RunRequest(scenarios=["smoke"], target=canary.base_url, run_id=f"prod-{where}", workers=0),
                      environments_text=variable)
        assert expected in str(refused.value) and "\n" not in str(refused.value)
        assert canary.hits() == 0 and canary.connections == 0
