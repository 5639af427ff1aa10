"""Reading wandb's offline `.wandb` files in tests, through `seg_tune.sweep.wandb_log`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

from seg_tune.sweep.wandb_log import records as _records


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    group: str = ""
    resumed: bool = False
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [int(h["_step"]) for h in self.history if "_step" in h]


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun(path)
    for raw in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group = record.run.run_id, record.run.run_group
            run.resumed = run.resumed or record.run.resumed
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run file below `root`, oldest first."""
    return [read_run(p) for p in sorted(root.rglob("offline-run-*/run-*.wandb"))]


def steps_by_run(root: Path) -> dict[str, list[int]]:
    """The steps each run id logged, over all its offline files below `root`, in file order. A
    file whose writer was killed before it wrote anything (a bare header: no id, no history)
    holds none."""
    steps: dict[str, list[int]] = {}
    for run in offline_runs(root):
        if run.run_id or run.history:
            steps.setdefault(run.run_id, []).extend(run.steps)
    return steps


def check_steps_logged_once(root: Path, tune_steps: dict[str, list[int]]) -> None:
    """Each trial's wandb run (id = trial id) logged exactly the steps Tune recorded for it
    (`tune_steps`: its result.json's steps), each once, in increasing order; no other run."""
    logged_by_run = steps_by_run(root)
    assert set(logged_by_run) == set(tune_steps)
    for tid, logged in logged_by_run.items():
        tune = sorted(set(tune_steps[tid]))
        assert logged == sorted(set(logged)), f"wandb run {tid} logged a step twice: {logged}"
        assert logged == tune, f"trial {tid}: wandb logged {logged}, Tune has {tune}"
