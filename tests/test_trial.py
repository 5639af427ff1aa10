"""Trial plumbing that needs no Ray cluster: placement checks and the device choice."""

from __future__ import annotations

import pytest
import torch

from seg_tune.sweep import trial as tune
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
