"""The allowed-hours stop probe, without a run (the run itself: test_safety)."""

from __future__ import annotations

from datetime import datetime, timezone

from stampede.safety import hours as load_window
from stampede.safety.hours import WindowClosed, kind_of, with_allowed_hours
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
    reason = with_allowed_hours(_plan(), lambda: None)()
    assert isinstance(reason, WindowClosed) and kind_of(reason) == "allowed_hours"
    assert reason == "allowed hours: 06:00 UTC is past staging's window (22:00-06:00 UTC)"


def test_the_kill_switch_is_asked_first(monkeypatch):
    _at(monkeypatch, 12, 0)
    reason = with_allowed_hours(_plan(), lambda: "kill switch: incident 42")()
    assert reason == "kill switch: incident 42" and kind_of(reason) == "kill_switch"


def test_no_window_means_the_probe_is_unchanged():
    def probe() -> None:
        return None

    assert with_allowed_hours(_plan(allowed_hours=()), probe) is probe
