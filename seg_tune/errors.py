"""The one exception base class of seg_tune, and its user-facing subclasses.

Every error a user can cause (bad file, bad key, bad value) is a `SegTuneError` whose message is
one line naming the file or key, the value received, what is allowed, and the next step. The CLIs
print that line and exit with status 2; they never show a traceback for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


class SegTuneError(Exception):
    """Base class: an error the user can fix; its message is one line."""

    exit_code = 1


class ConfigError(SegTuneError):
    """A configuration or search-space file (or a command-line argument) is invalid."""

    exit_code = 2


class DataError(SegTuneError):
    """A corpus file or dataset is missing, empty or malformed."""

    exit_code = 2


class StorageError(SegTuneError):
    """The storage folder has too little free space to go on writing whole checkpoints and
    state (`seg_tune.sweep.disk`): the run fails (exit 1), resumable once space is freed."""


def location(path: object, line: int | None = None) -> str:
    """`file:line` (1-based line) for messages."""
    return f"{path}:{line}" if line is not None else f"{path}"


@dataclass(frozen=True)
class FieldError:
    """Pydantic's first error, as seg_tune's one-line messages use it (every validation message
    of seg_tune is made here, so that they all read alike)."""

    kind: str  # pydantic's error type: "extra_forbidden", "missing", "value_error", ...
    key: str  # the dotted key, after a prefix ("" for the object itself)
    message: str  # pydantic's message without its "Value error, " prefix
    value: Any  # the value received
    at_field: bool  # the error is about a field (not about the object as a whole)
    more: int  # how many further errors pydantic found

    @classmethod
    def first(cls, exc: ValidationError, prefix: str = "") -> FieldError:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        return cls(
            kind=err["type"],
            key=".".join([prefix, *loc] if prefix else loc),
            message=err["msg"].removeprefix("Value error, "),
            value=err.get("input"),
            at_field=bool(loc),
            more=len(exc.errors()) - 1,
        )

    def short(self) -> str:
        """`key: message`, for a message that already names the value."""
        return f"{self.key}: {self.message}" if self.key else self.message

    def line(
        self, source: str, *, allowed: Iterable[str] | None = None, show: Callable = repr
    ) -> str:
        """`source: key 'k' = value: message` (an unknown key: what is allowed)."""
        more = f" (and {self.more} more)" if self.more else ""
        if self.kind == "extra_forbidden":
            names = ", ".join(allowed) if allowed is not None else None
            what = f"allowed: {names}" if names is not None else "check its spelling"
            return f"{source}: unknown key {self.key!r}; {what}{more}"
        if self.kind == "missing":
            return f"{source}: missing key {self.key!r}{more}"
        if not self.key:
            return f"{source}: {self.message}{more}"
        shown = (
            "" if isinstance(self.value, dict) or not self.at_field else f" = {show(self.value)}"
        )
        return f"{source}: key {self.key!r}{shown}: {self.message}{more}"
