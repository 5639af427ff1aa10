"""wandb's local run files (`run-<id>.wandb`, written in offline and online mode alike), read
back: which steps a run really holds. wandb 0.31 has no public reader.

Format, as wandb 0.31 writes it: a 7-byte header (`:W&B`, 2 magic bytes, a version byte), then
LevelDB-log framing: 32 KiB blocks; each record chunk behind a 7-byte header (crc32: 4 bytes,
length: 2 bytes little-endian, type: 1 byte — 1 full, 2 first, 3 middle, 4 last); a block tail
shorter than 7 bytes is padding. Each assembled record is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - (pos % _BLOCK)
        if left_in_block < _HEADER:  # padding at the end of a block
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if pos + _HEADER + length > len(data):
            return  # a chunk cut short by a kill: wandb sync drops it too
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:  # zero fill written ahead of time
            continue
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def last_step_written(wandb_dir: Path, run_id: str) -> int:
    """The highest history step in the local files of run `run_id` under `wandb_dir` (-1: none
    or unreadable): what wandb's service wrote, whether or not the run was finished."""
    from wandb.proto import wandb_internal_pb2

    last = -1
    for path in wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb"):
        try:
            for raw in records(path):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(raw)
                if record.WhichOneof("record_type") != "history":
                    continue
                if record.history.HasField("step"):
                    last = max(last, int(record.history.step.num))
                for item in record.history.item:
                    if "_step" in (item.key, *item.nested_key):
                        last = max(last, int(json.loads(item.value_json)))
        except (OSError, ValueError):
            continue
    return last
