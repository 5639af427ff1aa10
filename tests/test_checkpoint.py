"""RNG states in checkpoints: CUDA generators saved and given back exactly, old checkpoints
without them still read, and a checkpoint moved between machines with a different number of CUDA
devices (none included) restores what matches with one warning line. There is no GPU here, so
torch.cuda is replaced by a fake that records what it is given."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from seg_tune import checkpoint as ckpt
from seg_tune.checkpoint import (
    atomic_dir,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint_files,
)


class _Tokenizer:
    def save_pretrained(self, path: str) -> None:
        Path(path).mkdir()


def _state(seed: int) -> torch.Tensor:
    """A distinct fake CUDA generator state (a CPU ByteTensor, like the real ones)."""
    return torch.randint(
        0, 256, (816,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


class FakeCuda:
    """Stands in for torch.cuda: `devices` devices whose states are `states`; records restores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, devices: int) -> None:
        self.devices = devices
        self.states = [_state(100 + i) for i in range(devices)]
        self.restored: list[list[torch.Tensor]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: self.devices > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self._get)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self._set)

    def _get(self) -> list[torch.Tensor]:
        assert self.devices > 0, "get_rng_state_all called without CUDA"
        return [s.clone() for s in self.states]

    def _set(self, states) -> None:  # type: ignore[no-untyped-def]
        assert self.devices > 0, "set_rng_state_all called without CUDA"
        states = list(states)
        assert len(states) <= self.devices, "more states than devices"
        self.restored.append(states)


def _write(folder: Path, rng: dict) -> Path:
    def fill(tmp: Path) -> None:
        write_checkpoint_files(
            tmp,
            state={"model": {"w": torch.ones(2)}, "rng": rng},
            meta={"step": 7},
            config_json="{}",
            tokenizer=_Tokenizer(),
        )

    return atomic_dir(folder, fill)


def _assert_same(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_cuda_states_written_and_given_back_exactly(tmp_path, monkeypatch, capsys):
    cuda = FakeCuda(monkeypatch, devices=2)
    folder = _write(tmp_path / "c", rng_state())
    written = list(cuda.states)
    cuda.states = [_state(7), _state(8)]  # the generators move on after the checkpoint

    state, meta = read_checkpoint(folder)
    assert meta["format"] == ckpt.FORMAT_VERSION == 2
    assert set(state["rng"]) == {"torch", "python", "cuda"}
    _assert_same(state["rng"]["cuda"], written)

    set_rng_state(state["rng"])
    assert len(cuda.restored) == 1
    _assert_same(cuda.restored[0], written)
    assert capsys.readouterr().err == ""


def test_cpu_and_python_states_restored(tmp_path, monkeypatch):
    FakeCuda(monkeypatch, devices=0)
    torch.manual_seed(3)
    random.seed(3)
    folder = _write(tmp_path / "c", rng_state())
    expected = (torch.rand(4), random.random())
    torch.manual_seed(99)
    random.seed(99)
    state, _ = read_checkpoint(folder)
    set_rng_state(state["rng"])
    got = (torch.rand(4), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def test_without_cuda_the_checkpoint_holds_an_empty_list(tmp_path, monkeypatch, capsys):
    cuda = FakeCuda(monkeypatch, devices=0)
    state, _ = read_checkpoint(_write(tmp_path / "c", rng_state()))
    assert state["rng"]["cuda"] == []
    set_rng_state(state["rng"])  # resumed on a machine without CUDA as well: nothing to say
    assert cuda.restored == [] and capsys.readouterr().err == ""


def test_old_checkpoint_without_cuda_states_loads(tmp_path, monkeypatch, capsys):
    """A format-1 checkpoint (CPU and Python states only) reads and resumes, on a CUDA machine
    too: the CUDA generators are left alone and one line says so."""
    cuda = FakeCuda(monkeypatch, devices=2)
    torch.manual_seed(5)
    old_rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    expected = torch.rand(3)
    folder = _write(tmp_path / "old", old_rng)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 1}))

    state, meta = read_checkpoint(folder)
    assert meta["format"] == 1 and "cuda" not in state["rng"]
    torch.manual_seed(0)
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected)
    assert cuda.restored == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA RNG states" in err

    cuda.devices = 0  # the same old checkpoint on a machine without CUDA: silent
    set_rng_state(state["rng"])
    assert capsys.readouterr().err == ""


def test_unknown_format_is_refused(tmp_path, monkeypatch):
    FakeCuda(monkeypatch, devices=0)
    folder = _write(tmp_path / "c", rng_state())
    (folder / "meta.json").write_text(json.dumps({"format": 99, "step": 7}))
    with pytest.raises(ValueError, match="checkpoint format 99"):
        read_checkpoint(folder)


@pytest.mark.parametrize(("saved", "here"), [(3, 2), (1, 2), (2, 0), (0, 2)])
def test_device_count_mismatch_restores_what_matches(tmp_path, monkeypatch, capsys, saved, here):
    cuda = FakeCuda(monkeypatch, devices=saved)
    folder = _write(tmp_path / "c", rng_state())
    written = list(cuda.states)
    cuda.devices = here  # resumed on another machine

    state, _ = read_checkpoint(folder)
    _assert_same(state["rng"]["cuda"], written)
    set_rng_state(state["rng"])  # never raises
    n = min(saved, here)
    if n:
        assert len(cuda.restored) == 1
        _assert_same(cuda.restored[0], written[:n])
    else:
        assert cuda.restored == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, once
    assert err.startswith("seg_tune.checkpoint: warning: ")
    assert f"states of {saved} device(s), this machine has {here}; restored {n}" in err


def test_a_state_the_device_refuses_is_a_warning(tmp_path, monkeypatch, capsys):
    cuda = FakeCuda(monkeypatch, devices=1)
    state, _ = read_checkpoint(_write(tmp_path / "c", rng_state()))

    def refuse(states) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("Expected a state of size 16\nmore detail")

    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    set_rng_state(state["rng"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not be restored (Expected a state of size 16)" in err
    assert cuda.restored == []


def test_training_checkpoints_carry_and_restore_cuda_states(tmp_path, monkeypatch, capsys):
    """Through the training loop: the trainer writes the CUDA states into its checkpoint and
    hands them back to torch.cuda when it resumes from it."""
    from conftest import tiny_run_config

    from seg_tune.config import RunConfig, validate
    from seg_tune.train import LocalSession, train_loop

    cuda = FakeCuda(monkeypatch, devices=2)
    cfg = validate(RunConfig, tiny_run_config(steps=5, checkpoint_every_steps=5), source="test")
    train_loop(cfg, LocalSession(tmp_path, keep=1), progress=False)
    written = list(cuda.states)
    state, _ = read_checkpoint(ckpt.CheckpointDir(tmp_path / "checkpoints", 1).latest())
    _assert_same(state["rng"]["cuda"], written)

    cuda.states = [_state(1), _state(2)]
    assert train_loop(cfg, LocalSession(tmp_path, keep=1), progress=False) == {}  # at its end
    assert len(cuda.restored) == 1
    _assert_same(cuda.restored[0], written)
    assert "warning" not in capsys.readouterr().err
