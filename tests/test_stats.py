"""mean_interval: the Student-t interval over seeds, checked against hand arithmetic."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from seg_tune.stats import MeanInterval, mean_interval

# Student-t quantiles from tables (not from the code under test): t_{0.975, 2} and t_{0.95, 2}
T_975_2 = 4.302652729911275
T_95_2 = 2.919985580355516


def test_three_seeds_by_hand() -> None:
    # mean (0.70 + 0.74 + 0.72) / 3 = 0.72; deviations -0.02, +0.02, 0: sum of squares 0.0008,
    # / (n - 1) = 0.0004, sd 0.02; half-width t_{0.975,2} * 0.02 / sqrt(3) ≈ 0.0496828
    ci = mean_interval([0.70, 0.74, 0.72])
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert ci.n == 3
    assert ci.mean == pytest.approx(0.72, abs=1e-12)
    assert ci.sd == pytest.approx(0.02, abs=1e-12)
    assert ci.half_width == pytest.approx(half, rel=1e-9)
    assert half == pytest.approx(0.0496828, abs=1e-7)
    assert ci.low == pytest.approx(0.72 - half, rel=1e-9)
    assert ci.high == pytest.approx(0.72 + half, rel=1e-9)
    assert ci.level == 0.95


def test_other_level_and_any_iterable() -> None:
    ci = mean_interval(iter((0.70, 0.74, 0.72)), level=0.90)
    assert ci.half_width == pytest.approx(T_95_2 * 0.02 / math.sqrt(3), rel=1e-9)
    assert ci.level == 0.90


def test_equal_values_have_zero_width() -> None:
    ci = mean_interval([0.5, 0.5])
    assert (ci.sd, ci.half_width, ci.low, ci.high) == (0.0, 0.0, 0.5, 0.5)


def test_one_value_has_no_sd_nor_interval() -> None:
    ci = mean_interval([0.61])
    assert ci == MeanInterval(n=1, mean=0.61, sd=None, low=None, high=None, half_width=None)
    # None, not NaN: strict JSON takes it
    assert json.loads(json.dumps(dataclasses.asdict(ci), allow_nan=False))["sd"] is None


def test_frozen() -> None:
    ci = mean_interval([1.0, 2.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.mean = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.7, bad, 0.72])


@pytest.mark.parametrize(
    ("values", "level", "needle"),
    [([], 0.95, "at least one"), ([0.1, 0.2], 1.0, "level"), ([0.1, 0.2], 0.0, "level")],
)
def test_no_values_or_a_bad_level_are_refused(
    values: list[float], level: float, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        mean_interval(values, level=level)
