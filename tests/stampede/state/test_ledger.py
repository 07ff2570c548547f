"""The cost ledger in the shared state database, and the budget's check-and-reserve under the month's lock.

Every test runs on SQLite (one host) and on a fresh PostgreSQL database (a
deployment); the race is two separate processes, as two hosts would be.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from stampede.infra.databases import FreshDatabase, postgres_problem
from stampede.state import db
from stampede.state.ledger import CostLedger, month_of

JANUARY = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite'}"
        return
    problem = postgres_problem()
    if problem:
        pytest.skip(f"no PostgreSQL for the shared-state test: {problem}")
    with FreshDatabase("stampede_ledger") as database:
        yield database.url
        db.dispose_all()  # close the pool before the database is dropped


def test_the_ledger_keeps_month_to_date_spend(state_url):
    book = CostLedger(state_url)
    book.record_estimate(run_id="a", provider="ecs", workers=2, size="x", estimate_usd=5.0, now=JANUARY)
    book.record_estimate(run_id="b", provider="ecs", workers=2, size="x", estimate_usd=7.0, now=JANUARY)
    book.record_actual(run_id="a", actual_usd=3.0)
    book.record_estimate(run_id="b", provider="ecs", workers=2, size="x", estimate_usd=7.0, now=JANUARY)  # retry
    assert book.month_to_date(month="2026-01") == pytest.approx(10.0)  # a's actual + b's estimate (in flight)
    assert book.month_to_date(month="2026-01", exclude_run_id="b") == pytest.approx(3.0)
    assert book.month_to_date(month="2026-02") == 0
    assert book.get("a")["actual_usd"] == 3.0 and book.get("missing") is None


def test_a_refused_reservation_records_nothing(state_url):
    book = CostLedger(state_url)

    def refuse(spent: float) -> None:
        raise RuntimeError(f"over budget on top of {spent}")

    with pytest.raises(RuntimeError, match="on top of 0.0"):
        book.reserve(run_id="r", provider="ecs", workers=1, size="x", estimate_usd=4.0, check=refuse, now=JANUARY)
    assert book.get("r") is None and book.month_to_date(month="2026-01") == 0


def _reserve_in_another_process(url: str, run_id: str, start_at: float, outcome) -> None:
    """One "host": waits for the common start, then reserves 6 USD of a 10 USD month, checking slowly."""

    def check(spent: float) -> None:
        time.sleep(1.0)  # a slow check: without the lock, both hosts read 0 spent before either writes
        if spent + 6.0 > 10.0:
            raise RuntimeError(f"refused: {spent} spent")

    time.sleep(max(0.0, start_at - time.time()))
    try:
        spent = CostLedger(url).reserve(run_id=run_id, provider="ecs", workers=1, size="x", estimate_usd=6.0,
                                        check=check, now=JANUARY)
        outcome.put((run_id, "reserved", spent))
    except RuntimeError as exc:
        outcome.put((run_id, "refused", str(exc)))


@pytest.mark.integration
def test_two_hosts_never_both_fit_one_months_budget(state_url):
    CostLedger(state_url).month_to_date(month=month_of(JANUARY))  # tables exist before the race
    context = multiprocessing.get_context("spawn")
    outcome = context.Queue()
    start_at = time.time() + 3.0  # both processes are up and imported by then
    hosts = [context.Process(target=_reserve_in_another_process, args=(state_url, run_id, start_at, outcome))
             for run_id in ("host-a", "host-b")]
    for host in hosts:
        host.start()
    results = sorted(outcome.get(timeout=60) for _ in hosts)
    for host in hosts:
        host.join(timeout=10)
    assert sorted(r[1] for r in results) == ["refused", "reserved"], results
    reserved = next(r for r in results if r[1] == "reserved")
    assert reserved[2] == 0.0  # the first decided on an empty month
    refused = next(r for r in results if r[1] == "refused")
    assert "6.0 spent" in refused[2]  # the second saw the first's reservation
    assert CostLedger(state_url).month_to_date(month="2026-01") == pytest.approx(6.0)


def test_exclusive_keys_of_postgresql_do_not_block_each_other(state_url):
    if not state_url.startswith("postgresql"):
        pytest.skip("SQLite has one write lock for the whole file")
    with db.exclusive("key-one", url=state_url), db.exclusive("key-two", url=state_url):
        pass  # a second key taken while the first is held: no wait, no deadlock
    assert db.lock_id("key-one") != db.lock_id("key-two")
    assert -(2**63) <= db.lock_id("key-one") < 2**63
