"""Training checkpoints: a documented folder format, written atomically, the last K kept.

A checkpoint is a folder:

    meta.json    {"format": 2, "step": int, "data_position": {...}, "best": {"step", "value"}
                  (the run's best evaluation so far on training.select_metric), "is_best": this
                  checkpoint is that evaluation's, "segmentation": {...}, "metrics": {...},
                  "written_at": ISO time}      (written last; older ones hold "best_valid_loss")
    config.json  the resolved RunConfig
    state.pt     {"model", "optimizer", "scheduler": state_dicts, "rng": {...}}
                 (plain tensors and containers: loaded with torch.load(weights_only=True))
    tokenizer/   the PreTrainedTokenizerFast (save_pretrained)

`rng` holds "torch" (the CPU generator's state), "python" (`random.getstate()`) and, since
format 2, "cuda": the state of every CUDA device's generator in device order
(`torch.cuda.get_rng_state_all()`; an empty list where CUDA is not available). Format 1, without
"cuda", is still read; its CUDA generators are left as they are on resume.

`write_checkpoint` builds it in a temporary sibling folder, fsyncs every file and renames it into
place, so a crash leaves either the old set of checkpoints or the new one, never a torn folder.
`CheckpointDir` keeps a run's `step_XXXXXXXX` folders and prunes all but the newest K.

A checkpoint that cannot be read (node crashes with write-back caches, a quota hit on a shared
filesystem, a copied experiment folder) is not fatal: the loop (`seg_tune.train`) resumes from
the next older readable one and `set_aside` moves the bad folder to `<name>.corrupt`, never
deleting it. Folders Ray tracks (a Tune or Train checkpoint) get an empty folder left in their
place, which Ray prunes as usual; an empty folder is one set aside earlier.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 2  # 2: the RNG states include "cuda"
READABLE_FORMATS = (1, 2)
_PREFIX = "step_"
META_FILE = "meta.json"  # written last: a folder that has it is whole
CORRUPT_SUFFIX = ".corrupt"  # an unreadable checkpoint moved aside: <name>.corrupt[-N]


def fsync_tree(path: Path) -> None:
    """fsync every file below `path`, then the folders (so a following rename is durable)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill: the old file stays, the part goes
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create folder `target` atomically: `fill(tmp)` writes into a temporary sibling first.

    An existing `target` is replaced (moved aside, then deleted) only after the new one is complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_tree(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            os.rename(target, old)
        os.rename(tmp, target)
        fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def rng_state() -> dict[str, Any]:
    """The CPU, Python and (where available) every CUDA device's generator state."""
    cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved. CUDA states are restored for the devices both the
    checkpoint and this machine have; any other difference is one warning line on stderr."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    warning = _set_cuda_rng_states(state.get("cuda"))
    if warning is not None:
        print(f"seg_tune.checkpoint: warning: {warning}", file=sys.stderr, flush=True)


def _set_cuda_rng_states(saved: list[torch.Tensor] | None) -> str | None:
    """Restore the saved CUDA states that match a device here; a warning when not all match."""
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved is None:  # format 1
        if here == 0:
            return None
        return (
            f"the checkpoint has no CUDA RNG states (an older format); the {here} CUDA "
            "device(s) here keep theirs, so GPU randomness (dropout) may differ from an "
            "uninterrupted run"
        )
    n = min(len(saved), here)
    if n:
        try:
            torch.cuda.set_rng_state_all(list(saved[:n]))
        except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a state of another build
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"the checkpoint's CUDA RNG states could not be restored ({first})"
    if len(saved) == here:
        return None
    return (
        f"the checkpoint has CUDA RNG states of {len(saved)} device(s), this machine has "
        f"{here}; restored {n}, so GPU randomness (dropout) may differ from an uninterrupted run"
    )


def write_checkpoint_files(
    folder: Path,
    *,
    state: dict[str, Any],
    meta: dict[str, Any],
    config_json: str,
    tokenizer: Any,
) -> None:
    """Fill `folder` with a checkpoint (not atomic by itself: see `atomic_dir`)."""
    torch.save(state, folder / "state.pt")
    (folder / "config.json").write_text(config_json, encoding="utf-8")
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    meta = {"format": FORMAT_VERSION, **meta, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint folder."""
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{folder}: checkpoint format {meta.get('format')}, expected one of "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    return state, meta


def is_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file() and (folder / "state.pt").is_file()


def is_set_aside(folder: Path) -> bool:
    """A folder `set_aside` made: `<name>.corrupt[-N]`, or the empty one left in Ray's place."""
    if _SET_ASIDE.search(folder.name):
        return True
    return folder.is_dir() and not any(folder.iterdir())


_SET_ASIDE = re.compile(re.escape(CORRUPT_SUFFIX) + r"(-\d+)?$")


def set_aside(folder: Path, *, placeholder: bool) -> Path:
    """Move an unreadable checkpoint folder to `<name>.corrupt` (`-2`, `-3`... if taken); the
    new path. `placeholder`: leave an empty folder in its place (Ray tracks the folder and
    deletes it when it prunes; a missing one would fail there)."""
    target, n = folder.with_name(folder.name + CORRUPT_SUFFIX), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}{CORRUPT_SUFFIX}-{n}")
    os.rename(folder, target)
    if placeholder:
        folder.mkdir()
    fsync_dir(folder.parent)
    return target


class CheckpointDir:
    """The `step_XXXXXXXX` checkpoints of one local run; the newest `keep` are kept."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep

    def folders(self) -> list[Path]:
        """Every `step_N` folder, complete or not (not those set aside), oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.glob(f"{_PREFIX}*")
            if p.is_dir() and p.name.removeprefix(_PREFIX).isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name.removeprefix(_PREFIX)))

    def all(self) -> list[Path]:
        return [p for p in self.folders() if is_complete(p)]

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, fill: Callable[[Path], None]) -> Path:
        path = atomic_dir(self.root / f"{_PREFIX}{step:08d}", fill)
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob(f".{_PREFIX}*.tmp-*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
        return path
