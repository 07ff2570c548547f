"""The words for how a run ended: every stop kind described, cleanup problems named, clean runs silent."""

from __future__ import annotations

import pytest

from stampede.core.records import CleanupResult
from stampede.core.stops import StopKind
from stampede.render.outcome import cleanup_problem, describe


def test_every_stop_kind_has_its_own_description():
    descriptions = [describe(kind) for kind in StopKind]
    assert all(descriptions) and len(set(descriptions)) == len(StopKind)


@pytest.mark.parametrize("kind", sorted(StopKind))
def test_a_stop_that_invalidates_says_the_figures_end_for_a_reason_of_our_own(kind):
    assert ("a reason of our own" in describe(kind)) == kind.invalidates


@pytest.mark.parametrize(
    ("cleanup", "problem"),
    [
        pytest.param(CleanupResult(created=3, deleted=3, left=0, ok=True), None, id="clean"),
        pytest.param(CleanupResult(created=3, left=2, ok=True), "CLEANUP INCOMPLETE: 2 test entities left", id="left"),
        pytest.param(CleanupResult(created=3, left=1_200, ok=False), "CLEANUP INCOMPLETE: 1,200 test entities left",
                     id="left-and-errors"),
        pytest.param(CleanupResult(), "CLEANUP INCOMPLETE: unknown how many test entities are left", id="never-ran"),
        pytest.param(CleanupResult(left=-1, ok=False), "CLEANUP INCOMPLETE: unknown how many test entities are left",
                     id="failed-before-counting"),
        pytest.param(CleanupResult(left=0, ok=False), "CLEANUP INCOMPLETE: cleanup reported errors, though it counted "
                     "none left", id="errors"),
    ],
)
def test_cleanup_problem(cleanup, problem):
    assert cleanup_problem(cleanup) == problem
