"""The distributions of a search space: one `space` value each.

The file syntax of distributions is documented in `seg_tune.sweep.load`'s docstring;
`parse_distribution` reads one, and each distribution says which values a trial can get (for the
corner checks, the grid searcher and smoke runs). They know nothing of Ray or Optuna: the
conversion into Ray Tune's sampling objects is `seg_tune.sweep.tuner.tune_domain`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from seg_tune.config import Strict
from seg_tune.errors import FieldError
from seg_tune.sweep.values import is_integer, is_number, number, plain, show

# --------------------------------------------------------------------------- distributions


class _Distribution(Strict):
    """One searched (or fixed) value. Subclasses say which values a trial can get."""

    def corners(self) -> list[Any]:
        """Values checked against RunConfig before Ray starts: ends, neighbours of ends, and an
        interior point that is not round (so an int field given a float range fails here)."""
        raise NotImplementedError

    def grid_values(self) -> list[Any] | None:
        """Every value, for the grid searcher; None for continuous distributions."""
        return None

    def coerce(self, value: Any) -> Any:
        """A sampled value as the trial uses it (quantized, int where the space is integral)."""
        return plain(value)

    def searchable(self) -> bool:
        return True

    def clamp(self, cap: float) -> _Distribution:
        """The distribution limited to values <= cap (smoke runs); when no value is left, the
        cap itself."""
        return self


class Choice(_Distribution):
    """One of `values` (numbers, strings, booleans or null)."""

    type: Literal["choice"] = "choice"
    values: tuple[Any, ...]

    @model_validator(mode="after")
    def _check(self) -> Choice:
        if not self.values:
            raise ValueError("values must not be empty for choice")
        values = tuple(number(v) for v in self.values)
        for value in values:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(
                    f"choice values must be numbers, strings, booleans or null, not {show(value)}"
                )
        object.__setattr__(self, "values", values)
        return self

    def corners(self) -> list[Any]:
        return list(self.values)

    def grid_values(self) -> list[Any]:
        return list(self.values)

    def clamp(self, cap: float) -> Choice:
        numeric = [v for v in self.values if is_number(v)]
        if not numeric:
            return self
        kept = [v for v in self.values if not is_number(v) or v <= cap]
        if not any(is_number(v) for v in kept):
            kept.append(type(min(numeric))(cap))
        return Choice(values=tuple(kept))


class Fixed(_Distribution):
    """A constant: every trial gets `value`."""

    type: Literal["fixed"] = "fixed"
    value: Any

    @model_validator(mode="after")
    def _check(self) -> Fixed:
        object.__setattr__(self, "value", number(self.value))
        return self

    def corners(self) -> list[Any]:
        return [self.value]

    def grid_values(self) -> list[Any]:
        return [self.value]

    def coerce(self, value: Any) -> Any:
        return self.value

    def searchable(self) -> bool:
        return False

    def clamp(self, cap: float) -> Fixed:
        if is_number(self.value) and self.value > cap:
            return Fixed(value=type(self.value)(cap))
        return self


def _finite(*values: float) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError("min, max and q must be finite numbers")


def _interior(lo: float, hi: float, log: bool = False) -> float:
    """A point inside (lo, hi) that is not round (0.3719 of the way)."""
    if log:
        return math.exp(math.log(lo) + 0.3719 * (math.log(hi) - math.log(lo)))
    return lo + 0.3719 * (hi - lo)


class Uniform(_Distribution):
    """Uniform between min and max."""

    type: Literal["uniform"] = "uniform"
    min: int | float
    max: int | float

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        _finite(self.min, self.max)
        if not self.min < self.max:
            raise ValueError("min must be < max for uniform")
        return self

    def corners(self) -> list[Any]:
        return [float(self.min), float(self.max), _interior(self.min, self.max)]

    def coerce(self, value: Any) -> float:
        return float(plain(value))

    def clamp(self, cap: float) -> _Distribution:
        if self.max <= cap:
            return self
        return Uniform(min=self.min, max=cap) if self.min < cap else Fixed(value=float(cap))


class LogUniform(_Distribution):
    """Log-uniform between min and max (0 < min; the bounds are values, not logs)."""

    type: Literal["loguniform"] = "loguniform"
    min: int | float
    max: int | float

    @model_validator(mode="after")
    def _check(self) -> LogUniform:
        _finite(self.min, self.max)
        if not self.min > 0:
            raise ValueError("min must be > 0 for loguniform")
        if not self.min < self.max:
            raise ValueError("min must be < max for loguniform")
        return self

    def corners(self) -> list[Any]:
        return [float(self.min), float(self.max), _interior(self.min, self.max, log=True)]

    def coerce(self, value: Any) -> float:
        return float(plain(value))

    def clamp(self, cap: float) -> _Distribution:
        if self.max <= cap:
            return self
        if self.min < cap:
            return LogUniform(min=self.min, max=cap)
        return Fixed(value=float(cap))


class IntRange(_Distribution):
    """The multiples of `step` from min up to max."""

    type: Literal["int"] = "int"
    min: int
    max: int
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.min > self.max:
            raise ValueError("min must be <= max for int")
        if self.min % self.step:
            raise ValueError(
                f"min must be a multiple of step {self.step} for int (Ray draws multiples of step)"
            )
        return self

    @property
    def top(self) -> int:
        """The largest value drawn: max rounded down to the step grid."""
        return self.min + (self.max - self.min) // self.step * self.step

    def values(self) -> list[int]:
        return list(range(self.min, self.top + 1, self.step))

    def corners(self) -> list[Any]:
        count = (self.top - self.min) // self.step + 1
        if count <= 12:
            return self.values()
        mid = self.min + (count // 2) * self.step
        return [self.min, self.min + self.step, mid, self.top - self.step, self.top]

    def grid_values(self) -> list[Any]:
        return self.values()

    def coerce(self, value: Any) -> int:
        return round(float(plain(value)))

    def clamp(self, cap: float) -> _Distribution:
        if self.top <= cap:
            return self
        if self.min <= cap:
            return IntRange(min=self.min, max=int(cap), step=self.step)
        return Fixed(value=int(cap))


def _grid_index(x: float, round_fn: Any) -> int:
    nearest = round(x)
    return int(nearest if math.isclose(x, nearest, rel_tol=1e-9, abs_tol=1e-9) else round_fn(x))


class _Quantized(_Distribution):
    """Shared by quniform and qloguniform: values are multiples of q within [min, max]."""

    min: int | float
    max: int | float
    q: int | float = 1

    def _check_grid(self, name: str) -> None:
        _finite(self.min, self.max, self.q)
        if not self.q > 0:
            raise ValueError(f"q must be > 0 for {name}")
        if self.min > self.max:
            raise ValueError(f"min must be <= max for {name}")
        if self._lo_index() > self._hi_index():
            raise ValueError(f"no multiple of q {self.q} lies between min and max for {name}")

    @property
    def integral(self) -> bool:
        return all(is_integer(v) for v in (self.min, self.max, self.q))

    def _lo_index(self) -> int:
        return _grid_index(self.min / self.q, math.ceil)

    def _hi_index(self) -> int:
        return _grid_index(self.max / self.q, math.floor)

    def _at(self, index: int) -> int | float:
        value = index * self.q
        return int(value) if self.integral else round(value, 12)

    @property
    def lo(self) -> int | float:
        return self._at(self._lo_index())

    @property
    def hi(self) -> int | float:
        return self._at(self._hi_index())

    def coerce(self, value: Any) -> int | float:
        index = round(float(plain(value)) / self.q)
        return self._at(min(max(index, self._lo_index()), self._hi_index()))

    def corners(self) -> list[Any]:
        lo, hi = self._lo_index(), self._hi_index()
        if hi - lo < 12:
            return [self._at(i) for i in range(lo, hi + 1)]
        inner = self.coerce(_interior(self.lo, self.hi, log=isinstance(self, QLogUniform)))
        return [self._at(lo), self._at(lo + 1), inner, self._at(hi - 1), self._at(hi)]


class QUniform(_Quantized):
    """Uniform, rounded to a multiple of q."""

    type: Literal["quniform"] = "quniform"

    @model_validator(mode="after")
    def _check(self) -> QUniform:
        self._check_grid("quniform")
        return self

    def clamp(self, cap: float) -> _Distribution:
        if self.hi <= cap:
            return self
        if self.lo < cap and self._hi_index() > self._lo_index():
            top = self._at(_grid_index(cap / self.q, math.floor))
            return QUniform(min=self.lo, max=top, q=self.q)
        return Fixed(value=type(self.lo)(cap))


class QLogUniform(_Quantized):
    """Log-uniform, rounded to a multiple of q."""

    type: Literal["qloguniform"] = "qloguniform"

    @model_validator(mode="after")
    def _check(self) -> QLogUniform:
        _finite(self.min, self.max, self.q)
        if not self.min > 0:
            raise ValueError("min must be > 0 for qloguniform")
        self._check_grid("qloguniform")
        return self

    def clamp(self, cap: float) -> _Distribution:
        if self.hi <= cap:
            return self
        top = self._at(_grid_index(cap / self.q, math.floor))
        if self.lo < cap and top > self.lo:
            return QLogUniform(min=self.lo, max=top, q=self.q)
        return Fixed(value=type(self.lo)(cap))


Distribution = Annotated[
    Choice | Fixed | Uniform | LogUniform | IntRange | QUniform | QLogUniform,
    Field(discriminator="type"),
]
_DISTRIBUTIONS: dict[str, type[_Distribution]] = {
    "choice": Choice,
    "fixed": Fixed,
    "uniform": Uniform,
    "loguniform": LogUniform,
    "int": IntRange,
    "quniform": QUniform,
    "qloguniform": QLogUniform,
}
_TYPE_ALIASES: dict[str, str] = {
    "categorical": "choice",
    "constant": "fixed",
    "randint": "int",
    "int_uniform": "int",
    "q_uniform": "quniform",
}


class DistError(Exception):
    """A problem with one distribution; the caller adds the file, key and value."""


def parse_distribution(raw: Any) -> _Distribution:
    """One `space` value in seg_tune's syntax; raises DistError with the problem."""
    if isinstance(raw, list):
        raise DistError(
            "a bare list is ambiguous: write {type: choice, values: [...]} to search it "
            "or {type: fixed, value: [...]} to fix it"
        )
    if not isinstance(raw, Mapping):
        return Fixed(value=raw)
    data = dict(raw)
    kind = data.pop("type", None)
    if kind is None:
        if "values" in data:
            kind = "choice"
        elif "value" in data:
            kind = "fixed"
        else:
            raise DistError(f"missing 'type'; allowed: {', '.join(_DISTRIBUTIONS)}")
    if kind == "log_uniform":
        raise DistError(
            "type 'log_uniform' is W&B syntax with bounds in log space; "
            "in 'space' write type: loguniform with min/max as values"
        )
    canonical = _TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    cls = _DISTRIBUTIONS.get(canonical)  # type: ignore[arg-type]
    if cls is None:
        names = ", ".join([*_DISTRIBUTIONS, *_TYPE_ALIASES])
        raise DistError(f"type {kind!r} is not one of: {names}")
    try:
        return cls.model_validate({**data, "type": canonical})
    except ValidationError as exc:
        err = FieldError.first(exc)
        allowed = ", ".join(f for f in cls.model_fields if f != "type")
        if err.kind == "extra_forbidden":
            raise DistError(
                f"unknown key {err.key!r} for {canonical}; allowed: {allowed}"
            ) from None
        if err.kind == "missing":
            raise DistError(f"missing {err.key!r} for {canonical}; give {allowed}") from None
        raise DistError(err.short()) from None
