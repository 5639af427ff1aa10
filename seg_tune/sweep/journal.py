"""State kept as a snapshot plus an append-only journal of its changes.

A scheduler's state grows with the trials (a record per trial and rung, a line per decision):
rewritten whole on every decision it cost O(trials) per decision, O(trials^2) per sweep (issue
14). Here each change is one line appended to a journal, and the whole state is written
(atomically) at most once every `SNAPSHOT_EVERY_S` seconds, which bounds its cost per minute
whatever the number of trials.

For a state file `path` (`scheduler_state.json`), two files:
- `path`, the snapshot: the owner's state dict plus `"journal_seq": n`, the number of journal
  lines folded into it; written atomically (readers see the old or the new one);
- `journal_path(path)` (`scheduler_state.journal.jsonl`), one line per change,
  `{"seq": n, "ops": [op, ...]}`, n = 1, 2, ...: appended, flushed and fsynced before the
  change is acted on. What an op means is the owner's (the snapshot's own format number covers
  both files). The journal is never rewritten: it is the whole history, in order.

`read(path)` gives the snapshot and the ops of the lines after it, in order: the state is the
snapshot with those applied. A last line cut short (a process killed while writing it; the
change was never acted on) is ignored; any other unreadable line is an error naming the file and
the line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from seg_tune.checkpoint import atomic_write_text

SNAPSHOT_EVERY_S = 30.0
SEQ_KEY = "journal_seq"


def journal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.journal.jsonl")


class Saved(NamedTuple):
    snapshot: dict[str, Any] | None  # None: no state saved
    ops: list[list[Any]]  # journaled after the snapshot, in order
    seq: int  # the journal's last complete line


def read(path: str | Path) -> Saved:
    """The snapshot at `path` and the ops journaled after it."""
    path = Path(path)
    if not path.is_file():
        return Saved(None, [], 0)
    snapshot = json.loads(path.read_text(encoding="utf-8"))
    after = int(snapshot.get(SEQ_KEY, 0))
    log = journal_path(path)
    if not log.is_file():
        if after:
            raise ValueError(
                f"{path}: folds in {after} lines of {log}, which is missing; use --fresh"
            )
        return Saved(snapshot, [], 0)
    lines = log.read_text(encoding="utf-8").split("\n")
    ops: list[list[Any]] = []
    expected = 1
    # the last piece has no newline after it: empty, or cut short by a kill (never acted on)
    for number, line in enumerate(lines[:-1], 1):
        try:
            entry = json.loads(line)
            seq, entry_ops = int(entry["seq"]), list(entry["ops"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{log}: line {number} is not a journal entry ({err}); "
                "the experiment's scheduler state is damaged: use --fresh"
            ) from None
        if seq != expected:
            raise ValueError(
                f"{log}: line {number} has seq {seq}, expected {expected}; "
                "the experiment's scheduler state is damaged: use --fresh"
            )
        expected += 1
        if seq > after:
            ops.extend(entry_ops)
    if expected - 1 < after:
        raise ValueError(
            f"{path}: the snapshot folds in {after} journal lines but {log} has {expected - 1}; "
            "use --fresh"
        )
    return Saved(snapshot, ops, expected - 1)


class Journal:
    """The writer of one state's snapshot and journal (one process writes them)."""

    def __init__(
        self,
        path: str | Path,
        *,
        snapshot_every_s: float | None = None,  # None: SNAPSHOT_EVERY_S
        clock: Callable[[], float] | None = None,  # None: time.monotonic
    ) -> None:
        self.path = Path(path)
        self.log = journal_path(self.path)
        self.snapshot_every_s = snapshot_every_s
        self.clock = clock
        self.seq = 0  # journal lines written (or read back)
        self._snapshot_seq: int | None = None  # the seq of the last snapshot written here
        self._snapshot_at = 0.0

    def start_fresh(self, state: dict[str, Any]) -> None:
        """No saved state: drop a journal left without its snapshot, write a snapshot at 0."""
        self.log.unlink(missing_ok=True)
        self.seq = 0
        self.snapshot(state)

    def continue_from(self, saved: Saved) -> None:
        """The state was read back (`read`): append after its last line, first cutting a last
        line left without its newline by a killed writer (`read` ignored it)."""
        self.seq = saved.seq
        self._snapshot_seq = None  # the first record after a restore writes a snapshot
        if self.log.is_file():
            data = self.log.read_bytes()
            if data and not data.endswith(b"\n"):
                with self.log.open("r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)

    def record(self, ops: list[list[Any]], state: Callable[[], dict[str, Any]]) -> None:
        """Journal `ops` (one line, durable on return); snapshot if one is due."""
        if ops:
            self.seq += 1
            line = json.dumps({"seq": self.seq, "ops": ops}, separators=(",", ":")) + "\n"
            with self.log.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        every = SNAPSHOT_EVERY_S if self.snapshot_every_s is None else self.snapshot_every_s
        due = self._snapshot_seq is None or self._now() - self._snapshot_at >= every
        if due and self.seq != self._snapshot_seq:
            self.snapshot(state())

    def snapshot(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.path, json.dumps({**state, SEQ_KEY: self.seq}, indent=1))
        self._snapshot_seq = self.seq
        self._snapshot_at = self._now()

    def _now(self) -> float:
        return (self.clock or time.monotonic)()
