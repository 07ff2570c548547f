"""The soak's takeover timeline and its bound, on beats recorded the way the soak's watch samples them."""

from __future__ import annotations

from stampede.surfaces.soak import takeover_timeline, takeovers_within


def _beats(owner: str, start: float, stop: float) -> list[tuple[float, float | None, str]]:
    """The watch's samples every 0.5 s while ``owner`` beats every 0.5 s, from ``start`` to ``stop``."""
    samples, now = [], start
    while now <= stop:
        samples.append((now + 0.1, now, owner))
        now = round(now + 0.5, 1)
    return samples


def _stale(owner: str, last_beat_at: float, start: float, stop: float) -> list[tuple[float, float | None, str]]:
    """Samples of a dead owner's last beat, still in ``owner.json``."""
    return [(start + i * 0.5, last_beat_at, owner) for i in range(int((stop - start) / 0.5))]


KILLS = [{"what": "kill_master", "at": 50.0, "pid": 7},
         {"what": "kill_task_process", "at": 100.2, "pid": 100, "owner": "h:100"},
         {"what": "restart_worker", "at": 200.2, "victims": 4, "owner_among_them": True}]


def _recorded(first_gap_s: float, second_gap_s: float) -> list[tuple[float, float | None, str]]:
    return [*_beats("h:100", 0.0, 100.0), *_stale("h:100", 100.0, 100.5, 100.0 + first_gap_s),
            *_beats("h:200", 100.0 + first_gap_s, 200.0), *_stale("h:200", 200.0, 200.5, 200.0 + second_gap_s),
            *_beats("h:300", 200.0 + second_gap_s, 300.0)]


def test_each_owner_kill_has_its_takeover_and_gap():
    timeline = takeover_timeline(KILLS, _recorded(6.5, 8.0))
    assert [(t["what"], t["old_owner"], t["new_owner"], t["gap_s"]) for t in timeline] == [
        ("kill_task_process", "h:100", "h:200", 6.5), ("restart_worker", "h:200", "h:300", 8.0)]
    assert timeline[0]["last_beat_at"] == 100.0 and timeline[0]["new_beat_at"] == 106.5
    assert timeline[1]["after_death_s"] == 7.8  # from the kill, not from the last beat
    assert takeovers_within(timeline, 30.0)


def test_a_gap_over_the_grace_fails_the_bound():
    timeline = takeover_timeline(KILLS, _recorded(6.5, 31.0))
    assert timeline[1]["gap_s"] == 31.0
    assert not takeovers_within(timeline, 30.0)
    assert takeovers_within(timeline, 31.0)  # at the grace itself the master still counts the beat fresh


def test_an_owner_never_taken_over_fails_the_bound():
    beats = [*_beats("h:100", 0.0, 100.0), *_stale("h:100", 100.0, 100.5, 160.0)]
    timeline = takeover_timeline(KILLS[:2], beats)
    assert timeline[0]["new_owner"] is None and timeline[0]["gap_s"] is None
    assert not takeovers_within(timeline, 30.0)
