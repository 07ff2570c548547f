"""The run tags Stampede issued: issued at preflight, ended at the run's end, expired when a run died."""

from __future__ import annotations

import time

import pytest

from stampede.state import db, tags


@pytest.fixture(autouse=True)
def own_state(tmp_path, monkeypatch):
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("STAMPEDE_STATE_URL", raising=False)
    db.dispose_all()
    yield
    db.dispose_all()


def test_a_tag_is_running_until_its_run_ends():
    tags.issue("LT-run1xaaa", run_id="run-1", dag_id="loadtest_nightly", expires_at=time.time() + 600)
    assert tags.issued(ended=False) == {"LT-run1xaaa"} and tags.issued(ended=True) == set()
    tags.end("LT-run1xaaa")
    assert tags.issued(ended=True) == {"LT-run1xaaa"} and tags.issued(ended=False) == set()


def test_a_run_that_died_without_ending_counts_as_ended_once_it_expired():
    tags.issue("LT-crashedxbbb", run_id="crashed", expires_at=time.time() + 600)
    tags.issue("LT-noexpiryxccc", run_id="no-expiry")
    assert tags.issued(ended=True, now=time.time() + 601) == {"LT-crashedxbbb"}
    assert tags.issued(ended=False, now=time.time() + 601) == {"LT-noexpiryxccc"}


def test_a_tag_belongs_to_one_run_and_a_retry_reopens_it():
    tags.issue("LT-xddd", run_id="run-1", dag_id="a")
    tags.issue("LT-xddd", run_id="run-1", dag_id="a")  # a retried preflight
    with pytest.raises(tags.TagClash, match="was issued to run a/run-1, not b/run-1"):
        tags.issue("LT-xddd", run_id="run-1", dag_id="b")
    tags.end("LT-xddd")
    tags.issue("LT-xddd", run_id="run-1", dag_id="a")
    assert tags.issued(ended=False) == {"LT-xddd"}


def test_what_was_never_issued_is_never_listed():
    tags.issue("LT-realxeee", run_id="real")
    tags.end("LT-realxeee")
    tags.end("LT-01103")  # a Lithuanian postcode: ending it does not issue it
    assert tags.issued(ended=True) == {"LT-realxeee"} and tags.issued() == {"LT-realxeee"}
