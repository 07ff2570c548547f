"""The allowed-hours stop probe, without a run (the run itself: test_safety)."""

from __future__ import annotations

from datetime import datetime, timezone

from stampede.core.stops import StopKind, StopRequest
from stampede.safety import hours as load_window
from stampede.safety.hours import with_allowed_hours
from stampede.plan.run_plan import RunPlan

NIGHT = ((22 * 60, 6 * 60),)  # 22:00-06:00 UTC


def _plan(allowed_hours=NIGHT) -> RunPlan:
    return RunPlan(run_id="r", target="http://127.0.0.1:1/v1", environment="staging", scenarios=(), workers=0,
                   allowed_hours=allowed_hours)


def _at(monkeypatch, hour: int, minute: int = 0) -> None:
    monkeypatch.setattr(load_window, "utcnow", lambda: datetime(2026, 11, 28, hour, minute, tzinfo=timezone.utc))


def test_inside_the_window_nothing_stops(monkeypatch):
    _at(monkeypatch, 5, 59)
    assert with_allowed_hours(_plan(), lambda: None)() is None


def test_past_the_window_the_probe_names_it(monkeypatch):
    _at(monkeypatch, 6, 0)
    request = with_allowed_hours(_plan(), lambda: None)()
    assert request == StopRequest("allowed hours: 06:00 UTC is past staging's window (22:00-06:00 UTC)",
                                  StopKind.ALLOWED_HOURS)
    assert request.kind.invalidates


def test_the_kill_switch_is_asked_first(monkeypatch):
    _at(monkeypatch, 12, 0)
    switch = StopRequest("kill switch: incident 42", StopKind.KILL_SWITCH)
    assert with_allowed_hours(_plan(), lambda: switch)() is switch


def test_no_window_means_the_probe_is_unchanged():
    def probe() -> None:
        return None

    assert with_allowed_hours(_plan(allowed_hours=()), probe) is probe
