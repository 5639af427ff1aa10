"""What every command shares: a user error is one `error: ...` line and exit status 2 (never a
traceback), and argparse's usage errors are user errors like any other."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from seg_tune.errors import ConfigError, SegTuneError

# The drivers' exit statuses (`seg-tune run` on a space file or a study; the batch script reads
# them): every trial (cell) finished, some failed, bad input, stopped (resumable).
EXIT_FINISHED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3


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
