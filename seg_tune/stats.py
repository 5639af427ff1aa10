"""Summaries over repeated runs (seeds): the mean with a Student-t confidence interval.

A score reported over k seeds is given as mean ± half-width, the half-width being
t_{(1+level)/2, k-1} * sd / sqrt(k), sd the sample standard deviation (ddof=1). The interval is
over the seeds' randomness (initialisation, data order), not over which utterances were scored
(`seg_tune.score.Scorer.interval` bootstraps that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t


@dataclass(frozen=True)
class MeanInterval:
    """Mean of n values with its Student-t interval [low, high] = mean ∓ half_width.

    With n == 1 there is no spread to estimate: sd, low, high and half_width are None (never NaN,
    so that the value survives strict JSON and cannot be mistaken for a number)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    half_width: float | None
    level: float = 0.95


def mean_interval(values: Iterable[float], level: float = 0.95) -> MeanInterval:
    """The mean of `values` and its two-sided Student-t confidence interval at `level`.

    sd is the sample standard deviation (ddof=1); half_width = t.ppf((1 + level) / 2, n - 1) *
    sd / sqrt(n). With a single value sd and the interval are None (not NaN). Raises ValueError
    for no values, a non-finite value (NaN, ±inf) or a level outside (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level!r} must lie strictly between 0 and 1")
    array = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("mean_interval needs at least one value")
    if not np.isfinite(array).all():
        bad = float(array[~np.isfinite(array)][0])
        raise ValueError(f"mean_interval needs finite values; got {bad!r} among {array.size}")
    n = int(array.size)
    mean = float(array.mean())
    if n == 1:
        return MeanInterval(n, mean, None, None, None, None, level)
    sd = float(array.std(ddof=1))
    half = float(student_t.ppf((1.0 + level) / 2.0, n - 1)) * sd / math.sqrt(n)
    return MeanInterval(n, mean, sd, mean - half, mean + half, half, level)
