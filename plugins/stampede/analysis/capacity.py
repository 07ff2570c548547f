"""Capacity model: fit the Universal Scalability Law to throughput against concurrency.

    X(N) = λ·N / (1 + σ·(N − 1) + κ·N·(N − 1))

λ is the throughput of one user (req/s), σ the contention (serial fraction) and
κ the coherency (crosstalk) coefficient, both ≥ 0. With κ > 0 throughput peaks
at N* = √((1 − σ) / κ) and falls beyond it; with κ = 0 it only flattens towards
λ/σ. The fit is plain numpy: for given (σ, κ) the best λ is linear least
squares, so a coarse log grid over (σ, κ) finds the basin and projected
Gauss–Newton on all three refines it. Predictions far beyond the largest
measured concurrency (more than ``EXTRAPOLATION_FACTOR`` times it) are flagged:
the USL is a model of the points it was fitted to, not of the machine at 20×.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from stampede.core.records import CapacityModel, Prediction, StageResult

PREDICT_AT = (1_000, 5_000, 10_000, 20_000)  # the seed's user counts
EXTRAPOLATION_FACTOR = 2.0
MIN_LEVELS = 3  # distinct concurrency levels needed for a fit (three coefficients)

__all__ = ["MIN_LEVELS", "capacity_from_points", "capacity_of_stages", "fit_usl", "usl_throughput"]


def usl_throughput(n: np.ndarray | float, lam: float, sigma: float, kappa: float) -> np.ndarray | float:
    n = np.asarray(n, dtype=float)
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def _best_lambda(n: np.ndarray, x: np.ndarray, sigma: float, kappa: float) -> tuple[float, float]:
    shape = n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
    lam = float(shape @ x / (shape @ shape))
    residual = x - lam * shape
    return lam, float(residual @ residual)


def fit_usl(points: Iterable[tuple[float, float]], *, iterations: int = 200) -> tuple[float, float, float, float]:
    """Least-squares (λ, σ, κ, R²) for ``(concurrency, throughput)`` points; σ, κ ≥ 0.

    :raises ValueError: fewer than ``MIN_LEVELS`` distinct concurrency levels, or no throughput.
    """
    data = np.array([(float(n), float(x)) for n, x in points if n > 0 and x >= 0 and math.isfinite(x)], dtype=float)
    if data.size == 0 or len(np.unique(data[:, 0])) < MIN_LEVELS:
        raise ValueError(f"capacity: need at least {MIN_LEVELS} distinct concurrency levels to fit the USL")
    n, x = data[:, 0], data[:, 1]
    if not np.any(x > 0):
        raise ValueError("capacity: every measured throughput is zero")

    # 1. coarse grid (σ, κ on log scales, plus exact zeros); λ solved in closed form per cell
    sigmas = np.concatenate(([0.0], np.logspace(-5, 0, 41)))
    kappas = np.concatenate(([0.0], np.logspace(-9, 0, 55)))
    best = (math.inf, 0.0, 0.0, 0.0)
    for sigma in sigmas:
        for kappa in kappas:
            lam, sse = _best_lambda(n, x, sigma, kappa)
            if sse < best[0]:
                best = (sse, lam, sigma, kappa)
    sse, lam, sigma, kappa = best

    # 2. projected Gauss–Newton (Levenberg damping) on (λ, σ, κ), clamped to σ, κ ≥ 0
    damping = 1e-3
    for _ in range(iterations):
        denom = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0)
        model = lam * n / denom
        residual = x - model
        jac = np.column_stack((
            n / denom,
            -lam * n * (n - 1.0) / denom**2,
            -lam * n * n * (n - 1.0) / denom**2,
        ))
        scale = np.maximum(np.abs(np.array([lam, sigma, kappa])), 1e-12)
        js = jac * scale  # scaled columns: σ and κ live on very different scales
        normal = js.T @ js
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), js.T @ residual) * scale
        candidate = (max(lam + step[0], 1e-12), max(sigma + step[1], 0.0), max(kappa + step[2], 0.0))
        cand_sse = float(np.sum((x - usl_throughput(n, *candidate)) ** 2))
        if cand_sse < sse:
            improvement = (sse - cand_sse) / max(sse, 1e-300)
            lam, sigma, kappa = candidate
            sse = cand_sse
            damping = max(damping / 3, 1e-9)
            if improvement < 1e-12:
                break
        else:
            damping *= 4
            if damping > 1e8:
                break
    total = float(np.sum((x - x.mean()) ** 2))
    r_squared = 1.0 - sse / total if total > 0 else (1.0 if sse < 1e-12 else 0.0)
    return float(lam), float(sigma), float(kappa), float(r_squared)


def capacity_from_points(
    points: Sequence[tuple[float, float]], *, predict_at: Sequence[int] = PREDICT_AT
) -> CapacityModel:
    """Fit the USL and derive the peak, predictions and warnings (results.json ``capacity``)."""
    lam, sigma, kappa, r_squared = fit_usl(points)
    max_n = max(float(n) for n, _ in points)
    if kappa > 0 and sigma < 1:
        peak_users: float | None = math.sqrt((1.0 - sigma) / kappa)
        peak_rps = float(usl_throughput(peak_users, lam, sigma, kappa))
    else:
        peak_users = None
        peak_rps = lam / sigma if sigma > 0 else math.inf
    predictions = [
        Prediction(users=int(u), rps=round(float(usl_throughput(u, lam, sigma, kappa)), 3),
                   extrapolated=u > EXTRAPOLATION_FACTOR * max_n)
        for u in predict_at
    ]
    warnings = []
    far = [p.users for p in predictions if p.extrapolated]
    if far:
        warnings.append(
            f"predictions at {', '.join(f'{u:,}' for u in far)} users extrapolate beyond "
            f"{EXTRAPOLATION_FACTOR:g}x the largest measured concurrency ({max_n:,.0f}); treat them as rough"
        )
    if peak_users is not None and peak_users > EXTRAPOLATION_FACTOR * max_n:
        warnings.append(f"the predicted peak at {peak_users:,.0f} users lies far beyond the measured points")
    if r_squared < 0.9:
        warnings.append(f"the USL fits the points poorly (R² = {r_squared:.2f}); the model may not describe this system")
    return CapacityModel(
        model="usl", lambda_rps=round(lam, 6), sigma=round(sigma, 8), kappa=round(kappa, 12),
        r_squared=round(r_squared, 4), points=len(points), max_measured_users=max_n,
        peak_users=round(peak_users, 1) if peak_users is not None else None,
        peak_rps=round(peak_rps, 3) if math.isfinite(peak_rps) else None,  # σ = κ = 0: no bound
        predictions=predictions, warnings=warnings,
    )


def capacity_of_stages(stages: list[StageResult]) -> CapacityModel | None:
    """The USL of a run's stages (users → steady req/s) when they span ``MIN_LEVELS`` levels, else None.

    Only stages that are valid (generator healthy) and that sent requests count: a
    saturated generator's throughput is the generator's, not the target's.
    """
    points = []
    for stage in stages:
        # rps is the judged figure: the steady part when the stage has one
        if stage.users > 0 and stage.rps > 0 and stage.valid:
            points.append((float(stage.users), float(stage.rps)))
    if len({n for n, _ in points}) < MIN_LEVELS:
        return None
    try:
        return capacity_from_points(points)
    except ValueError:
        return None
