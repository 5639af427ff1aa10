"""Values as a space file gives them and as results store them: shown on one line the way the
user wrote them, YAML 1.1's number strings read as numbers, and numpy scalars (from Ray's
samplers) made plain Python so that configs and summaries stay JSON-able."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

_EXP_NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string; users mean a number."""
    if isinstance(value, str) and _EXP_NUMBER_RE.match(value.strip()):
        return float(value)
    return value


def show(value: Any) -> str:
    """A value as the user wrote it, on one line: mappings in YAML flow style."""
    if isinstance(value, (dict, list, tuple)):
        text = yaml.safe_dump(
            value if not isinstance(value, tuple) else list(value),
            default_flow_style=True,
            sort_keys=False,
            width=1_000_000,
        )
        return " ".join(text.split())
    return repr(value)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plain(value: Any, *, finite: bool = False) -> Any:
    """`value` with numpy scalars made Python numbers, inside dicts and lists too; `finite`:
    NaN and infinities become None (JSON has no such numbers)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v, finite=finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, finite=finite) for v in value]
    return value


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys ("training.lr"), as the search spaces name them."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out
