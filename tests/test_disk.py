"""Free space on the storage folder (issue 13.5): the arithmetic on a real filesystem, the watch
thread, and a real sweep on a small tmpfs that is filled up under it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import fill_disk

from seg_tune.checkpoint import atomic_write_text
from seg_tune.sweep.disk import (
    FLOOR_BYTES,
    HEADROOM,
    MIB,
    StorageWatch,
    checkpoint_bytes,
    free_bytes,
    needed_bytes,
    shortage,
)
from seg_tune.sweep.layout import Layout


def _checkpoint(root: Path, trial: str, name: str, size: int) -> None:
    folder = root / "tune" / f"trial_{trial}" / name
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"\0" * size)
    (folder / "meta.json").write_text("{}")


def test_needed_space_follows_the_largest_checkpoint(tmp_path: Path) -> None:
    assert checkpoint_bytes(Layout(tmp_path)) == 0
    assert needed_bytes(Layout(tmp_path), 4) == FLOOR_BYTES  # before any checkpoint: the floor
    _checkpoint(tmp_path, "a", "checkpoint_000000", 9 * MIB)
    _checkpoint(tmp_path, "b", "checkpoint_000001", 30 * MIB)
    assert checkpoint_bytes(Layout(tmp_path)) == 30 * MIB + 2
    assert needed_bytes(Layout(tmp_path), 2) == HEADROOM * 2 * (30 * MIB + 2)
    assert needed_bytes(Layout(tmp_path), 0) == max(FLOOR_BYTES, HEADROOM * (30 * MIB + 2))
    free = free_bytes(tmp_path / "not" / "yet")  # the nearest existing parent's filesystem
    assert free == free_bytes(tmp_path) > 0
    assert shortage(Layout(tmp_path), 1) is None  # /tmp has more than 90 MiB free
    many = free // (HEADROOM * 30 * MIB) + 1  # so many concurrent trials cannot fit
    line = shortage(Layout(tmp_path), many)
    assert line is not None and line.startswith(f"storage {tmp_path}: ") and "\n" not in line
    assert "MiB free, under the" in line


def test_the_watch_calls_once_and_stops(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "a", "checkpoint_000000", MIB)
    calls: list[str] = []
    called = threading.Event()

    def on_short(reason: str) -> None:
        calls.append(reason)
        called.set()

    huge = free_bytes(tmp_path) // (HEADROOM * MIB) + 1
    with StorageWatch(Layout(tmp_path), huge, on_short, every=0.05) as watch:
        assert called.wait(5)
        time.sleep(0.3)
    assert calls == [watch.reason] and watch.reason is not None
    with StorageWatch(Layout(tmp_path), 1, on_short, every=0.05):
        time.sleep(0.3)
    assert len(calls) == 1  # enough space: never called


def test_a_write_on_a_full_disk_leaves_the_old_file_and_no_part(small_disk: Path) -> None:
    target = small_disk / "state.json"
    atomic_write_text(target, "old")
    fill_disk(small_disk, 64 * 1024)
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, "x" * (4 * MIB))
    assert caught.value.errno == 28  # ENOSPC
    assert target.read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast", "state.json"]
