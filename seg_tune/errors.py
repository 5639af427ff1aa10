"""The one exception base class of seg_tune, and its user-facing subclasses.

Every error a user can cause (bad file, bad key, bad value) is a `SegTuneError` whose message is
one line naming the file or key, the value received, what is allowed, and the next step. The CLIs
print that line and exit with status 2; they never show a traceback for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


class SegTuneError(Exception):
    """Base class: an error the user can fix; its message is one line."""

    exit_code = 1


class ConfigError(SegTuneError):
    """A configuration or search-space file (or a command-line argument) is invalid."""

    exit_code = 2


class DataError(SegTuneError):
    """A corpus file or dataset is missing, empty or malformed."""

    exit_code = 2


def location(path: object, line: int | None = None) -> str:
    """`file:line` (1-based line) for messages."""
    return f"{path}:{line}" if line is not None else f"{path}"


def run_cli(run: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run a command's body; a user error becomes one `error: ...` line and its exit status."""
    try:
        return run(argv)
    except SegTuneError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `... | head`: the reader left; not our error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr, flush=True)
        return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors become a ConfigError (one line, exit 2) like every user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message} (see --help)")
