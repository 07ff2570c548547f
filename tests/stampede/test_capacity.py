"""The USL fit recovers known coefficients from synthetic data and flags far extrapolations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stampede.analysis.capacity import capacity_from_points, capacity_of_stages, fit_usl, usl_throughput
from stampede.core.records import StageResult, to_dict


@pytest.mark.parametrize(
    ("lam", "sigma", "kappa"),
    [
        pytest.param(10.0, 0.02, 0.0005, id="retrograde"),
        pytest.param(8.3, 0.05, 0.0, id="contention-only"),
        pytest.param(1.5, 0.0, 0.00002, id="coherency-only"),
    ],
)
def test_noise_free_points_recover_the_coefficients(lam, sigma, kappa):
    users = [1, 2, 4, 8, 16, 32, 64, 128]
    points = [(n, float(usl_throughput(n, lam, sigma, kappa))) for n in users]
    got_lam, got_sigma, got_kappa, r2 = fit_usl(points)
    assert got_lam == pytest.approx(lam, rel=1e-3)
    assert got_sigma == pytest.approx(sigma, rel=1e-2, abs=1e-5)
    assert got_kappa == pytest.approx(kappa, rel=1e-2, abs=1e-8)
    assert r2 > 0.9999


def test_noisy_points_give_the_peak_and_a_good_fit():
    rng = np.random.default_rng(7)
    lam, sigma, kappa = 50.0, 0.03, 0.0002
    users = [5, 10, 20, 40, 60, 80, 120, 160]
    points = [(n, float(usl_throughput(n, lam, sigma, kappa)) * (1 + rng.normal(0, 0.02))) for n in users]
    model = capacity_from_points(points)
    true_peak = math.sqrt((1 - sigma) / kappa)
    assert model.peak_users == pytest.approx(true_peak, rel=0.15)
    assert model.peak_rps == pytest.approx(float(usl_throughput(true_peak, lam, sigma, kappa)), rel=0.05)
    assert model.r_squared > 0.95
    assert [p.users for p in model.predictions] == [1000, 5000, 10000, 20000]


def test_predictions_beyond_twice_the_measured_users_are_flagged():
    points = [(n, float(usl_throughput(n, 2.0, 0.01, 1e-6))) for n in (100, 200, 400, 1000)]
    model = capacity_from_points(points)
    flags = {p.users: p.extrapolated for p in model.predictions}
    assert flags == {1000: False, 5000: True, 10000: True, 20000: True}
    assert any("extrapolate" in w for w in model.warnings)
    assert to_dict(model)["predictions"][0] == {"users": 1000, "rps": pytest.approx(points[-1][1], rel=1e-3), "extrapolated": False}


def test_without_contention_or_coherency_there_is_no_peak_and_no_infinite_rate():
    points = [(n, 2.0 * n) for n in (10, 20, 40, 80)]  # perfectly linear: σ = κ = 0
    model = capacity_from_points(points)
    assert model.peak_users is None and model.peak_rps is None  # results.json cannot hold inf


def test_too_few_levels_is_an_error_and_stages_need_three():
    with pytest.raises(ValueError, match="at least 3 distinct"):
        fit_usl([(10, 5.0), (10, 5.1), (20, 9.0)])

    def stage(users, rps, valid=True):
        s = StageResult(name=f"s{users}", scenario="x", users=users, duration_s=10, requests=1, failures=0, rps=rps,
                        p50_ms=1, p95_ms=1, p99_ms=1, max_ms=1, error_rate=0)
        s.valid = valid
        return s

    assert capacity_of_stages([stage(10, 9), stage(20, 17)]) is None
    assert capacity_of_stages([stage(10, 9), stage(20, 17), stage(40, 30, valid=False)]) is None  # invalid stages don't count
    model = capacity_of_stages([stage(10, 9), stage(20, 17), stage(40, 30)])
    assert model is not None and model.points == 3
