"""Shared fixtures: tiny configs and the location of the shared real data."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CHILDES = SHARED / "data" / "childes-en"

# Tests share 2 cores with Ray workers: one intra-op thread keeps timings and results stable.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def childes() -> Path:
    """The shared CHILDES folder (train.txt, dev.txt); tests that need it skip without it."""
    if not (CHILDES / "dev.txt").is_file():
        pytest.skip(f"shared data not found at {CHILDES}")
    return CHILDES


def tiny_run_config(**training: object) -> dict:
    """A run config (as a dict) that trains in seconds: 1 layer, width 32, small synthetic corpus."""
    return {
        "data": {"train": {"kind": "synthetic", "n_utterances": 600, "seed": 3}},
        "model": {"preset": None, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64},
        "training": {
            "steps": 20,
            "batch_size": 8,
            "block_size": 32,
            "warmup_steps": 4,
            "eval_every_steps": 5,
            "checkpoint_every_steps": 10,
            "segment_utterances": 0,
            "lr": 3e-3,
            "threads": 1,
            **training,
        },
    }


# Drivers that tests start in their own session (so that a signal reaches the driver alone):
# whatever a test leaves running, a failed assert included, is killed with its process group
# after the test, so that it cannot starve the tests after it.
DRIVERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_drivers():
    yield
    while DRIVERS:
        proc = DRIVERS.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def free_port_block(size: int, low: int, high: int, avoid: frozenset[int] = frozenset()) -> int:
    """The first port of `size` consecutive TCP ports, between `low` and `high`, that are free
    now and not in `avoid` (drawn at random, so that two callers rarely pick the same block)."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(low, high - size)
        if avoid & set(range(base, base + size)):
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + size):
                    stack.enter_context(socket.socket()).bind(("", port))
            except OSError:
                continue
        return base
    raise AssertionError(f"no {size} consecutive free ports found in {low}..{high}")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real filesystem of its own, small enough to fill: a tmpfs (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (run the tests as root): {done.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(disk: Path, leave: int) -> Path:
    """A ballast file leaving `leave` bytes free on `disk`."""
    ballast = disk / "ballast"
    size = shutil.disk_usage(disk).free - leave
    with ballast.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)
    return ballast
