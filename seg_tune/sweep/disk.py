"""Free space on the storage folder: a sweep stops, state whole, before its disk is full.

A full disk in the middle of a write costs more than the write: a trial whose checkpoint cannot
be written fails an attempt, and a sweep whose every write fails ends in a cascade of errors. So
the driver measures the storage folder's free space before Ray starts and every
`CHECK_EVERY_S` seconds while it runs (`StorageWatch`, a thread that needs nothing from Ray),
and stops gracefully, as on SIGUSR1, while enough is left to save the experiment state, then
exits 1 with one line naming the folder and its free space. Every write of seg_tune is atomic
(`seg_tune.checkpoint`), so a write that fails all the same leaves the previous file whole.

Enough is `HEADROOM` checkpoints per concurrent trial, of the size of the largest checkpoint the
experiment holds, and at least `FLOOR_BYTES`: a trial writes its new checkpoint beside the ones
it keeps, and Tune copies it from a temporary folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from seg_tune.sweep.layout import Layout

MIB = 2**20
FLOOR_BYTES = 64 * MIB  # needed free at least, whatever the checkpoints weigh
HEADROOM = 3  # checkpoints per concurrent trial that must fit in what is free
CHECK_EVERY_S = 5.0
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a quota reached


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (the folder may not exist yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding `path`."""
    return shutil.disk_usage(_existing(path)).free


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # pruned while we count
                continue
    return total


def checkpoint_bytes(layout: Layout, newest: int = 4) -> int:
    """The size of the largest of the `newest` most recent checkpoint folders of the
    experiment (0 before its first checkpoint)."""
    found = []
    for folder in layout.checkpoint_folders():
        try:
            found.append((folder.stat().st_mtime, folder))
        except OSError:  # pruned while we look
            continue
    found.sort(reverse=True)
    return max((_folder_bytes(folder) for _, folder in found[:newest]), default=0)


def needed_bytes(layout: Layout, concurrent: int) -> int:
    """Free bytes a sweep of `concurrent` trials needs to go on writing safely."""
    return max(FLOOR_BYTES, HEADROOM * max(concurrent, 1) * checkpoint_bytes(layout))


def shortage(layout: Layout, concurrent: int) -> str | None:
    """Why the experiment's storage is too full to go on (one line), or None."""
    free, need = free_bytes(layout.root), needed_bytes(layout, concurrent)
    if free >= need:
        return None
    return (
        f"storage {_existing(layout.root)}: {free / MIB:,.1f} MiB free, under the {need / MIB:,.1f} MiB "
        f"this sweep needs to write whole checkpoints ({HEADROOM} of the largest checkpoint per "
        f"concurrent trial, at least {FLOOR_BYTES // MIB} MiB)"
    )


def full_disk_line(exc: OSError) -> str:
    """The one line for a write that failed on a full disk or quota (`FULL_ERRNOS`)."""
    where = Path(exc.filename) if exc.filename else Path.cwd()
    return (
        f"{where}: {os.strerror(exc.errno or errno.ENOSPC)} ({free_bytes(where) / MIB:,.1f} MiB "
        "free there); files written before are whole (every write is atomic): free space, then "
        "run the same command again to resume"
    )


class StorageWatch:
    """A daemon thread checking `shortage(layout, concurrent)` every `every` seconds; the first
    shortage is kept in `reason` and handed to `on_short` (the driver's graceful stop), once."""

    def __init__(
        self,
        layout: Layout,
        concurrent: int,
        on_short: Callable[[str], None],
        every: float = CHECK_EVERY_S,
    ) -> None:
        self.layout, self.concurrent, self.on_short, self.every = (
            layout,
            concurrent,
            on_short,
            every,
        )
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="storage-watch", daemon=True)

    def __enter__(self) -> StorageWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=self.every + 5)

    def _watch(self) -> None:
        while not self._done.wait(self.every):
            try:
                reason = shortage(self.layout, self.concurrent)
            except OSError:  # the folder moved or vanished for a moment: look again later
                continue
            if reason is not None:
                self.reason = reason
                self.on_short(reason)
                return
