"""A trial's own log on the experiment's storage: written by the trial, read back for its errors.

Ray keeps a trial's output in node-local session logs (`/tmp/ray/session_*/logs/worker-*`), which
are gone with the node and never reach the driver (`log_to_driver` is off). So each trial process
also writes what it prints into `<experiment>/logs/<trial_id>.log` (`Layout.trial_log`), appended
to by every attempt of the trial (a retry, a resume after a pause or a requeue). When an attempt
fails, `summary.json` gives the last lines that attempt wrote beside Tune's reason (`tail`): the
step it was at, its warnings, its traceback, or Python's fault dump for a crash in C code. A
process killed by SIGKILL (the OOM killer) writes nothing more, so its tail ends at its last
evaluation.

The format: each attempt starts with one header line,
`=== seg_tune attempt <%Y-%m-%d_%H-%M-%S> <label> on <host> pid <pid>`, in the time format of Tune's
failure lines (`Failure # N (occurred at ...)`), so that an error is matched to the attempt that
was running when it occurred. A Ray Train worker's lines carry its rank (`[rank 1] ...`).

Writing it never fails a trial: an unwritable log (a full disk, a read-only mount) is given up
for the rest of the attempt and the trial goes on.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

HEADER = "=== seg_tune attempt "
TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"  # Tune's `date_str()`: comparable as text
TAIL_LINES = 20
_MAX_LINE = 400  # characters kept of one line in a tail


class _Sink:
    """The log file, line-buffered; given up (silently, once) at the first write that fails."""

    def __init__(self, path: Path) -> None:
        self.file: IO[str] | None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("a", encoding="utf-8", errors="replace", buffering=1)
        except OSError:
            self.file = None

    def write(self, text: str) -> None:
        if self.file is None:
            return
        try:
            self.file.write(text)
        except OSError:
            self.close()

    def flush(self) -> None:
        if self.file is not None:
            try:
                self.file.flush()
            except OSError:
                self.close()

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            with suppress(OSError):
                file.close()


class _Tee:
    """A text stream that writes through to `stream` and copies every line to the sink."""

    def __init__(self, stream: Any, sink: _Sink, prefix: str) -> None:
        self._stream, self._sink, self._prefix = stream, sink, prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if self._prefix and text:
            lines = text.split("\n")
            copied = "\n".join(
                (self._prefix + line) if line and (i or self._at_line_start) else line
                for i, line in enumerate(lines)
            )
            self._at_line_start = text.endswith("\n")
        else:
            copied = text
        self._sink.write(copied)
        return written

    def flush(self) -> None:
        self._stream.flush()
        self._sink.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def header(label: str) -> str:
    return (
        f"{HEADER}{time.strftime(TIME_FORMAT)} {label} on {socket.gethostname()} pid {os.getpid()}"
    )


@contextmanager
def captured(
    path: Path, label: str = "trial", rank: int | None = None, stdout: bool = True
) -> Iterator[None]:
    """Copy this process's stdout and stderr into the trial log `path` for the block, after a
    header line; an exception that leaves the block is written there with its traceback, and a
    fatal signal's Python stack (faulthandler) too. `rank`: a Ray Train worker's, on its lines.
    `stdout=False`: stderr only (where `print` already reaches stderr another way)."""
    sink = _Sink(path)
    sink.write(header(label if rank is None else f"{label} rank {rank}") + "\n")
    prefix = "" if rank is None else f"[rank {rank}] "
    saved = sys.stdout, sys.stderr
    if stdout:
        sys.stdout = _Tee(saved[0], sink, prefix)  # type: ignore[assignment]
    sys.stderr = _Tee(saved[1], sink, prefix)  # type: ignore[assignment]
    dumping = sink.file is not None
    if dumping:
        faulthandler.enable(file=sink.file, all_threads=True)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            # how Ray Tune ends a trial's thread (a pause, a stop): not an error
            sink.write(f"{prefix}seg_tune: attempt stopped by Ray Tune (a pause or a stop)\n")
        else:
            sink.write(prefix + traceback.format_exc().replace("\n", "\n" + prefix).rstrip() + "\n")
        raise
    finally:
        sys.stdout, sys.stderr = saved
        if dumping:
            faulthandler.enable(file=sys.__stderr__, all_threads=True)
        sink.close()


def tail(path: Path, at: str | None = None, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of the attempt that was running at `at` (a time in TIME_FORMAT,
    Tune's failure time: the last attempt that started at or before it, else the first), or of
    the last attempt when `at` is None; [] when there is no log. The attempt's header is its
    first line while it fits. Lines are cut at 400 characters."""
    return tails(path, [at], lines)[0]


def tails(path: Path, times: Sequence[str | None], lines: int = TAIL_LINES) -> list[list[str]]:
    """`tail` for each of `times`, the log read once."""
    attempts = _attempts(path, lines)
    return [_running_at(attempts, at) for at in times]


def _attempts(path: Path, lines: int) -> list[tuple[str, list[str]]]:
    """Every attempt in the log, in order: (its start time, its last `lines` lines)."""
    if not path.is_file():
        return []
    found: list[tuple[str, deque[str]]] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.rstrip("\n")
                if line.startswith(HEADER) or not found:
                    started = (
                        line[len(HEADER) :].split(" ", 1)[0] if line.startswith(HEADER) else ""
                    )
                    found.append((started, deque(maxlen=lines)))
                found[-1][1].append(line[:_MAX_LINE])
    except OSError:
        return []
    return [(started, list(kept)) for started, kept in found]


def _running_at(attempts: list[tuple[str, list[str]]], at: str | None) -> list[str]:
    if not attempts:
        return []
    if at is None:
        return attempts[-1][1]
    before = [kept for started, kept in attempts if started <= at]
    return before[-1] if before else attempts[0][1]  # (a clock behind Tune's: the first)
