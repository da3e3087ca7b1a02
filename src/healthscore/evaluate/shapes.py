"""Learned shapes: a monotone piecewise-linear normalisation (``points:``) from outcomes.

Place in the flow: inside :func:`healthscore.evaluate.calibrate.learn`. Given one
metric's raw values and the outcome, scikit-learn's ``IsotonicRegression`` finds the
outcome rate as a monotone step function of the raw value (the direction is the
metric's current one); on the risk-logit scale that curve is turned into a health
curve 0-100 and reduced, greedily, to a few points (``[raw, score]`` pairs, flat beyond
the ends), so the model file stays readable. Whether a shape replaces the two-anchor
clamp is decided in :mod:`~healthscore.evaluate.calibrate` on held-out folds, with a
penalty per point, so a straight line wins a tie.

>>> import numpy as np
>>> x = np.repeat(np.arange(0.0, 360.0, 10.0), 20)
>>> risk = np.where(x < 60, 0.5, 0.05)  # risk concentrated in the last 60 days
>>> y = (np.arange(len(x)) % 20 < 20 * risk).astype(float)
>>> pts = shape_points(x, y, higher_is_better=True)[2]
>>> pts
[(50.0, 0.0), (60.0, 100.0)]
>>> describe(pts)
'100% of its effect between 50 and 60 (higher is healthier)'
"""

from __future__ import annotations

import math

import numpy as np

#: the most points a learned shape may have (a clamp has 2)
MAX_POINTS = 5
#: candidate positions of the inner points: these quantiles of the raw values
KNOT_QUANTILES = np.linspace(0.0, 1.0, 41)
#: pseudo-observations at the base rate added to each isotonic block, so a small block
#: of all-churned or none-churned does not stretch the logit scale to infinity
BLOCK_PRIOR = 5.0
#: the L2 penalty on a shape's steps (on the summed log-loss: scikit-learn's C = 1), so
#: a segment with few observations cannot take an unbounded step
RIDGE = 0.1
#: the health scale spans the risk of all rows but this share at either end
TAIL = 0.02
#: at most this many (weighted) raw values are used to place the points
GRID = 400


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not np.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def health_curve(x: np.ndarray, y: np.ndarray, higher_is_better: bool):
    """The monotone health (0-100) of each distinct raw value, with its count.

    Returns (xs ascending, health at xs, counts); None when the outcome does not vary
    with the raw value in the given direction (a flat fit).
    """
    from sklearn.isotonic import IsotonicRegression

    xs, inverse, n = np.unique(x, return_inverse=True, return_counts=True)
    rate = np.bincount(inverse, weights=y, minlength=len(xs)) / n
    iso = IsotonicRegression(increasing=not higher_is_better, out_of_bounds="clip")
    p = iso.fit_transform(xs, rate, sample_weight=n)
    base = float(y.mean())
    # shrink each block (a run of equal fitted rates) toward the base rate
    starts = np.flatnonzero(np.r_[True, np.diff(p) != 0])
    counts = np.add.reduceat(n, starts)
    block_p = p[starts]
    shrunk = (block_p * counts + BLOCK_PRIOR * base) / (counts + BLOCK_PRIOR)
    shrunk = (np.maximum if not higher_is_better else np.minimum).accumulate(shrunk)
    risk = np.repeat(np.log(shrunk / (1.0 - shrunk)), np.diff(np.r_[starts, len(p)]))
    # the scale from the bulk of the rows: a small block at either end does not set it
    cum = np.cumsum(n) / n.sum()
    ends = risk[np.minimum(np.searchsorted(cum, (TAIL, 1.0 - TAIL)), len(xs) - 1)]
    r = np.clip(risk, ends.min(), ends.max())
    lo, hi = r.min(), r.max()
    if hi - lo < 1e-9:
        return None
    # weighted by the information each value carries on the logit scale, n p (1 - p):
    # matching the curve where the outcome rate is near 0 or 1 matters less to the fit
    rate_of = np.repeat(shrunk, np.diff(np.r_[starts, len(p)]))
    return xs, 100.0 * (hi - r) / (hi - lo), n * rate_of * (1.0 - rate_of)


def reduce_points(
    xs: np.ndarray, health: np.ndarray, counts: np.ndarray, most: int
) -> dict[int, list[tuple[float, float]]]:
    """For each number of points from 2 to ``most``, the [raw, score] pairs (flat beyond
    the ends) closest to ``health`` at ``xs`` (count-weighted squared error), the raw
    values chosen among quantiles of the data, found by dynamic programming; scores are
    rescaled so the ends read 0 and 100."""
    cum = np.cumsum(counts) / counts.sum()
    if len(xs) > GRID:  # many distinct values: judge the fit at GRID quantiles of them
        idx = np.minimum(np.searchsorted(cum, (np.arange(GRID) + 0.5) / GRID), len(xs) - 1)
        gx, gh, gw = xs[idx], health[idx], np.ones(GRID)
    else:
        gx, gh, gw = xs, health, counts.astype(float)
    at = np.minimum(np.searchsorted(cum, KNOT_QUANTILES), len(xs) - 1)
    c = np.unique([_round_sig(v) for v in xs[at]])
    if len(c) < 2:
        return {}
    hc = np.interp(c, xs, health)
    k = len(c)
    # squared errors from prefix sums (x scaled to 0-1 for precision): for the line
    # from candidate i to j over the grid values in [c_i, c_j), and flat beyond the ends
    lo, span = gx[0], (gx[-1] - gx[0]) or 1.0
    u, cu = (gx - lo) / span, (c - lo) / span
    sums = [np.r_[0.0, np.cumsum(gw * t)] for t in (1.0, u, u * u, gh, gh * u, gh * gh)]
    pos = np.searchsorted(gx, c, side="left")  # grid values below candidate i: [0, pos[i])

    def between(a, b):
        return [s_[b] - s_[a] for s_ in sums]

    def flat(a, b, level):
        w, _, _, h, _, hh = between(a, b)
        return hh - 2 * level * h + level * level * w

    left = flat(np.zeros(k, int), pos, hc)
    right = flat(pos, np.full(k, len(gx)), hc)
    i, j = np.triu_indices(k, 1)
    w, x1, x2, h, hx, hh = between(pos[i], pos[j])
    slope = (hc[j] - hc[i]) / (cu[j] - cu[i])
    alpha = hc[i] - slope * cu[i]
    sse = hh - 2 * alpha * h - 2 * slope * hx + alpha**2 * w + 2 * alpha * slope * x1
    sse = sse + slope**2 * x2
    seg = np.full((k, k), np.inf)  # seg[i, j]: the line from point i to point j
    seg[i, j] = np.maximum(sse, 0.0)
    # cost[m][j]: the best m points ending at candidate j (without the part after it)
    cost = {1: left.copy()}
    back: dict[int, np.ndarray] = {}
    out = {}
    for m in range(2, most + 1):
        total = cost[m - 1][:, None] + seg
        back[m] = np.argmin(total, axis=0)
        cost[m] = total[back[m], np.arange(k)]
        j = int(np.argmin(cost[m] + right))
        if not np.isfinite(cost[m][j]):
            break
        chain = [j]
        for step in range(m, 1, -1):
            chain.append(int(back[step][chain[-1]]))
        chain = chain[::-1]
        v = hc[chain]
        if v[-1] - v[0] < 1e-9:
            continue
        scaled = np.round(100.0 * (v - v[0]) / (v[-1] - v[0]), 1)
        pts = _simplest([(float(c[i]), float(h)) for i, h in zip(chain, scaled, strict=True)])
        if len(pts) == m:  # fewer: the same shape as a smaller number of points
            out[m] = pts
    return out


def _simplest(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The same curve without points that change nothing: flat ends, collinear middles."""
    while len(pts) > 2 and pts[1][1] == pts[0][1]:
        pts = pts[1:]
    while len(pts) > 2 and pts[-2][1] == pts[-1][1]:
        pts = pts[:-1]
    keep = [pts[0]]
    for b, c in zip(pts[1:], pts[2:], strict=False):
        a = keep[-1]
        if abs((b[1] - a[1]) * (c[0] - a[0]) - (c[1] - a[1]) * (b[0] - a[0])) > 1e-9 * (
            abs(c[0] - a[0]) * 100.0
        ):
            keep.append(b)
    return [*keep, pts[-1]]


def logistic_newton(
    x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, ridge: float = 1e-6
) -> np.ndarray:
    """Coefficients θ of a logistic model risk ~ offset + x·θ by Newton steps; ``ridge``
    penalises all but the first (the intercept) and keeps them finite when the outcome
    separates."""
    off = np.zeros(len(y)) if offset is None else offset
    theta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], ridge)
    penalty[0] = min(ridge, 1e-6)
    if offset is None:  # start at the base rate
        theta[0] = math.log((y.mean() + 1e-9) / (1 - y.mean() + 1e-9))

    def loss(t: np.ndarray) -> float:
        z = off + x @ t
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * penalty @ (t * t))

    current = None  # the loss at theta, computed only when a step must be judged
    for _ in range(25):
        z = off + x @ theta
        exact = np.abs(z).max() <= 30.0  # else the clip below makes g and h approximate
        z = np.clip(z, -30.0, 30.0)
        p = 1.0 / (1.0 + np.exp(-z))
        g = x.T @ (p - y) + penalty * theta
        h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(h, g)
        # Along a Newton step s the loss's third derivative is at most max|x·s| times its
        # second (the logistic's is bounded so), so a step that moves no logit by more
        # than 1 lowers the loss by at least 0.28 g·s: it would be accepted, and the loss
        # (np.logaddexp over every row, the costliest part) need not be computed.
        if not (exact and np.abs(x @ step).max() <= 1.0):
            if current is None:
                current = loss(theta)
            for _ in range(30):  # halve a step that overshoots (Newton can, far from the optimum)
                trial = loss(theta - step)
                if trial <= current + 1e-12 * abs(current) or np.abs(step).max() < 1e-12:
                    break
                step = step / 2.0
            current = trial
        else:
            current = None
        theta = theta - step
        if np.abs(step).max() < 1e-9:
            break
    return theta


def logistic_line(
    n: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, ridge: float = 1e-6
) -> tuple[float, float]:
    """:func:`logistic_newton` of the design ``[1, n]`` (risk ~ offset + a + b·n): the
    same Newton steps, start, step checks and stopping rule, with the 2 x 2 system
    written out (the calibration's one-metric fits, thousands per calibration, spend
    most of their time in the generic version's matrix products). Returns (a, b)."""
    pen0, pen1 = min(ridge, 1e-6), ridge
    a, b = 0.0, 0.0
    if offset is None:  # start at the base rate
        a = math.log((y.mean() + 1e-9) / (1 - y.mean() + 1e-9))
    # |a + b·n| is largest at an end of n's range: the step check needs no pass over n
    lo, hi = (float(n.min()), float(n.max())) if len(n) else (0.0, 0.0)
    nn = n * n

    def logit(a: float, b: float) -> np.ndarray:
        z = n * b
        z += a
        if offset is not None:
            z += offset
        return z

    def loss(a: float, b: float) -> float:
        z = logit(a, b)
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * (pen0 * a * a + pen1 * b * b))

    current = None  # the loss at (a, b), computed only when a step must be judged
    for _ in range(25):
        z = logit(a, b)
        exact = max(z.max(), -z.min()) <= 30.0 if len(z) else True
        if not exact:  # the clip makes g and h approximate
            np.clip(z, -30.0, 30.0, out=z)
        p = np.exp(-z, out=z)
        p += 1.0
        np.reciprocal(p, out=p)
        r = p - y
        g0 = float(r.sum()) + pen0 * a
        g1 = float(r @ n) + pen1 * b
        w = p * (1.0 - p)
        h00 = float(w.sum()) + pen0
        h01 = float(w @ n)
        h11 = float(w @ nn) + pen1
        det = h00 * h11 - h01 * h01
        s0 = (h11 * g0 - h01 * g1) / det
        s1 = (h00 * g1 - h01 * g0) / det
        # as in logistic_newton: a step that moves no logit by more than 1 is accepted
        # without computing the loss
        if not (exact and max(abs(s0 + s1 * lo), abs(s0 + s1 * hi)) <= 1.0):
            if current is None:
                current = loss(a, b)
            for _ in range(30):  # halve a step that overshoots
                trial = loss(a - s0, b - s1)
                if trial <= current + 1e-12 * abs(current) or max(abs(s0), abs(s1)) < 1e-12:
                    break
                s0, s1 = s0 / 2.0, s1 / 2.0
            current = trial
        else:
            current = None
        a, b = a - s0, b - s1
        if max(abs(s0), abs(s1)) < 1e-9:
            break
    return a, b


def fit_values(
    x: np.ndarray,
    y: np.ndarray,
    knots: list[float],
    higher_is_better: bool,
    offset: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """The monotone scores (0-100) at ``knots`` that explain outcome ``y`` best.

    A monotone piecewise-linear curve is a non-negative sum of ramps, one per segment
    between two knots, so the scores come from a logistic fit of the risk on the ramps
    (beside ``offset``, the rest of the model) with non-negative coefficients. [] when
    no ramp carries any weight.
    """
    t = np.asarray(knots, float)
    ramps = np.clip((x[:, None] - t[None, :-1]) / (t[1:] - t[:-1])[None, :], 0.0, 1.0)
    sign = -1.0 if higher_is_better else 1.0  # a healthier value lowers the risk
    free = list(range(len(t) - 1))
    steps = np.zeros(len(t) - 1)
    while free:  # an active set: a ramp fitted the wrong way is dropped, the rest refitted
        design = np.column_stack([np.ones(len(x)), sign * ramps[:, free]])
        theta = logistic_newton(design, y, offset, RIDGE)
        if (theta[1:] >= 0).all():
            steps[free] = theta[1:]
            break
        free.pop(int(np.argmin(theta[1:])))
    if not np.isfinite(steps).all() or steps.sum() <= 1e-9:
        return []
    up = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    values = np.round(100.0 * (up if higher_is_better else 1.0 - up), 1)
    pts = _simplest([(float(k), float(v)) for k, v in zip(t, values, strict=True)])
    return pts if len(pts) >= 2 and pts[0][1] != pts[-1][1] else []


def shape_points(
    x: np.ndarray,
    y: np.ndarray,
    *,
    higher_is_better: bool,
    most: int = MAX_POINTS,
    offset: np.ndarray | None = None,
) -> dict[int, list[tuple[float, float]]]:
    """Monotone health curves of raw ``x`` for outcome ``y`` (beside ``offset``, the
    rest of the model): number of points -> the points. Where the points go comes from
    the isotonic curve (:func:`reduce_points`), their scores from :func:`fit_values`."""
    curve = health_curve(x, y, higher_is_better)
    if curve is None:
        return {}
    out = {}
    for pts in reduce_points(*curve, most).values():
        fitted = fit_values(x, y, [k for k, _ in pts], higher_is_better, offset)
        if fitted and len(fitted) not in out:
            out[len(fitted)] = fitted
    return out


def normalized(raw: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """0-1 per value through ``pts`` (flat beyond the ends; NaN stays NaN), as scoring
    computes it."""
    xs = np.array([p[0] for p in pts], float)
    ys = np.array([p[1] for p in pts], float) / 100.0
    return np.where(np.isnan(raw), np.nan, np.interp(np.nan_to_num(raw), xs, ys))


def describe(pts: list[tuple[float, float]]) -> str:
    """Where the shape does its work, in words: the segment that carries most of it.

    >>> describe([(0, 0.0), (60, 85.0), (365, 100.0)])
    '85% of its effect between 0 and 60 (higher is healthier)'
    """
    ys = [v for _, v in pts]
    total = abs(ys[-1] - ys[0]) or 1.0
    steps = [abs(b - a) / total for a, b in zip(ys, ys[1:], strict=False)]
    i = int(np.argmax(steps))
    way = "higher" if ys[-1] > ys[0] else "lower"
    return (
        f"{steps[i]:.0%} of its effect between {pts[i][0]:g} and {pts[i + 1][0]:g} "
        f"({way} is healthier)"
    )


__all__ = ["MAX_POINTS", "describe", "normalized", "reduce_points", "shape_points"]
