"""Trial plumbing that needs no Ray cluster: placement checks, the device choice, and what a
restored trial resumes from when its latest checkpoint was pruned."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seg_tune import checkpoint as ckpt
from seg_tune.sweep import trial as tune
from seg_tune.sweep.tracking import LOST_CHECKPOINT, repoint_lost_checkpoint
from seg_tune.sweep.trial import TrialSettings, placement_problem


def _settings(workers: int = 1, cpus: float = 1, gpus: float = 0) -> TrialSettings:
    return TrialSettings(
        spec_json="{}",
        workers=workers,
        cpus_per_worker=cpus,
        gpus_per_worker=gpus,
        keep_checkpoints=1,
        train_storage="/nowhere",
        use_ray_train=workers > 1,
    )


def _node(cpu: float, gpu: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpu, "memory": 1e9} | ({"GPU": gpu} if gpu else {})
    return {"Alive": alive, "Resources": resources}


@pytest.mark.parametrize(
    ("settings", "nodes"),
    [
        (_settings(), [_node(2)]),
        (_settings(gpus=0.5), [_node(2, 1)]),
        (_settings(gpus=0.1), [_node(1, 1)]),  # 0.1 GPU: float division must not lose it
        (_settings(workers=2, gpus=1), [_node(8, 1), _node(8, 1)]),  # a worker per node
        (_settings(workers=4, cpus=2), [_node(8)]),
    ],
)
def test_placeable_trials_pass(settings: TrialSettings, nodes: list[dict]) -> None:
    assert placement_problem(settings, nodes) is None


@pytest.mark.parametrize(
    ("settings", "nodes", "expected"),
    [
        (_settings(gpus=1), [_node(16)], "0 GPUs"),
        (_settings(gpus=2), [_node(16, 1), _node(16, 1)], "can place 0"),  # GPUs on two nodes
        (_settings(workers=3, gpus=1), [_node(2, 4)], "can place 2"),  # CPUs run out first
        (_settings(cpus=4), [_node(2), _node(4, alive=False)], "1 node(s)"),  # dead node ignored
    ],
)
def test_unplaceable_trials_are_named(
    settings: TrialSettings, nodes: list[dict], expected: str
) -> None:
    problem = placement_problem(settings, nodes)
    assert problem is not None and expected in problem
    assert "gpus_per_worker" in problem and "\n" not in problem


def test_gpu_trial_without_cuda_says_so_and_uses_the_cpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tune._device(0.5) == torch.device("cpu")
    assert "holds 0.5 GPU" in capsys.readouterr().err
    assert tune._device(0) == torch.device("cpu")
    assert capsys.readouterr().err == ""


def _restored_trial(latest: Path, step: int) -> SimpleNamespace:
    """What `repoint_lost_checkpoint` reads of a Tune trial restored from its experiment state:
    its latest checkpoint result (Ray's own classes) on the local filesystem."""
    import pyarrow.fs
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    checkpoint = Checkpoint(path=str(latest), filesystem=pyarrow.fs.LocalFileSystem())
    return SimpleNamespace(
        latest_checkpoint_result=_TrainingResult(checkpoint, {"step": step}),
        invalidate_json_state=lambda: None,
    )


def _checkpoint_folder(path: Path, step: int | None) -> None:
    path.mkdir(parents=True)
    if step is not None:
        (path / "meta.json").write_text(json.dumps({"step": step}))


def test_a_pruned_latest_checkpoint_is_replaced_by_the_newest_kept(tmp_path: Path) -> None:
    lost = tmp_path / "checkpoint_000001"
    _checkpoint_folder(tmp_path / "checkpoint_000002", 30)
    _checkpoint_folder(tmp_path / "checkpoint_000003", 40)
    _checkpoint_folder(tmp_path / "checkpoint_000004", None)  # torn: no meta.json
    _checkpoint_folder(tmp_path / "checkpoint_000005.corrupt", 50)  # set aside
    trial = _restored_trial(lost, 20)
    line = repoint_lost_checkpoint(trial)
    assert line == (
        f"its latest checkpoint checkpoint_000001 (step 20) {LOST_CHECKPOINT}; "
        "it resumes from checkpoint_000003 (step 40), the newest kept"
    )
    assert trial.latest_checkpoint_result.checkpoint.path == str(tmp_path / "checkpoint_000003")
    assert not lost.exists()
    assert repoint_lost_checkpoint(trial) is None  # it is there now: nothing to do


def test_a_pruned_latest_checkpoint_with_none_kept_leaves_an_empty_folder(tmp_path: Path) -> None:
    lost = tmp_path / "checkpoint_000001"
    trial = _restored_trial(lost, 20)
    line = repoint_lost_checkpoint(trial)
    assert line == (
        f"its latest checkpoint checkpoint_000001 (step 20) {LOST_CHECKPOINT}, "
        "and none is kept: it starts over"
    )
    assert lost.is_dir() and not any(lost.iterdir())  # seg_tune.train skips an empty one
    assert ckpt.is_set_aside(lost)
