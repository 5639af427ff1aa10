"""The names a space file may use: its sections, the dotted keys a `space` may search (every
scalar field of `RunConfig`), and the metrics a trial reports (the objective's check)."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from seg_tune.config import RunConfig
from seg_tune.errors import ConfigError
from seg_tune.metrics import REPORTED_METRICS
from seg_tune.sweep.values import show

# The sections of seg_tune's own syntax (a W&B sweep file may hold them beside its own keys).
OUR_SECTIONS = (
    "experiment",
    "data",
    "model",
    "training",
    "score",
    "space",
    "scheduler",
    "searcher",
    "resources",
    "failure",
    "checkpoints",
    "wandb",
    "hub",
    "final",
)
STUDY_SECTION = "study"  # a study file's own section (`seg_tune.sweep.study`), beside these


def unknown_key(source: str, key: str, allowed: Iterable[str], hint: str = "") -> ConfigError:
    allowed = list(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{source}: unknown key {key!r}{maybe}; allowed: {', '.join(allowed)}{hint}")


def model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (`X`, `X | None`), or None for a scalar field."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _leaf_keys(cls: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted field of RunConfig that a space may set (scalars, not whole sections)."""
    keys: list[str] = []
    for name, info in cls.model_fields.items():
        sub = model_class(info.annotation)
        dotted = f"{prefix}{name}"
        keys.extend(_leaf_keys(sub, dotted + ".") if sub else [dotted])
    return keys


SPACE_KEYS = frozenset(_leaf_keys())


def check_metric(metric: Any, key: str, source: str) -> str:
    """`metric` when a trial reports it; else a ConfigError naming the close ones."""
    if metric in REPORTED_METRICS:
        return metric
    names = list(REPORTED_METRICS)
    close = difflib.get_close_matches(str(metric), names, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    preferred = ["valid_loss", "valid_bpp", "train_loss", "seg_boundary_noedge_fscore"]
    shown = ", ".join(preferred + [n for n in names if n.startswith("seg_token")])
    raise ConfigError(
        f"{source}: key {key!r} = {show(metric)}: no trial reports this metric{maybe}; "
        f"allowed: {shown}, ... ({len(names)} in all, see seg_tune.metrics.REPORTED_METRICS)"
    )
