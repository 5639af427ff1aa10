"""The training loop: resume equality, checkpoints, Hugging Face export, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_run_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from seg_tune.checkpoint import CheckpointDir, read_checkpoint
from seg_tune.config import RunConfig, validate
from seg_tune.train import LocalSession, train_loop


def _cfg(**training: object) -> RunConfig:
    return validate(RunConfig, tiny_run_config(**training), source="test")


class _Interrupted(Exception):
    pass


class _CrashAfter(LocalSession):
    """A session that dies right after persisting the checkpoint of step `crash_step`."""

    def __init__(self, out: Path, keep: int, crash_step: int) -> None:
        super().__init__(out, keep)
        self.crash_step = crash_step

    def report(self, metrics, checkpoint) -> None:  # type: ignore[no-untyped-def]
        super().report(metrics, checkpoint)
        if metrics["step"] == self.crash_step:
            raise _Interrupted


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    """2N steps straight == N steps, crash, resume, N steps: same losses and same weights."""
    cfg = _cfg(steps=20, checkpoint_every_steps=10)
    straight = LocalSession(tmp_path / "straight", keep=2)
    train_loop(cfg, straight, export_dir=tmp_path / "straight")

    crashed = _CrashAfter(tmp_path / "resumed", keep=2, crash_step=10)
    with pytest.raises(_Interrupted):
        train_loop(cfg, crashed, export_dir=tmp_path / "resumed")
    assert [m["step"] for m in crashed.history] == [5, 10]
    resumed = LocalSession(tmp_path / "resumed", keep=2)
    train_loop(cfg, resumed, export_dir=tmp_path / "resumed")
    assert [m["step"] for m in resumed.history] == [15, 20]  # continued, not restarted

    combined = crashed.history + resumed.history
    assert [m["step"] for m in combined] == [m["step"] for m in straight.history]
    for a, b in zip(straight.history, combined, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-5, abs=1e-6)
    wa, wb = _weights(tmp_path / "straight/final_model"), _weights(tmp_path / "resumed/final_model")
    for name, tensor in wa.items():
        torch.testing.assert_close(tensor, wb[name], rtol=1e-5, atol=1e-6)
    # Dropout is on (0.1 by default), so equality also proves the RNG state was restored.
    assert cfg.model.dropout > 0


def test_checkpoints_hold_full_state_and_keep_last_k(tmp_path: Path) -> None:
    cfg = _cfg(steps=30, checkpoint_every_steps=5, keep_checkpoints=2)
    session = LocalSession(tmp_path, keep=2)
    train_loop(cfg, session)
    kept = CheckpointDir(tmp_path / "checkpoints", keep=2).all()
    assert [p.name for p in kept] == ["step_00000025", "step_00000030"]
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    state, meta = read_checkpoint(kept[-1])
    assert set(state) == {"model", "optimizer", "scheduler", "rng"}
    assert set(state["rng"]) == {"torch", "python", "cuda"}  # "cuda": [] without CUDA
    assert meta["step"] == 30 and meta["format"] == 2
    # The data position of step 30, worked out from the corpus: the stream is one UTT token
    # before, between and after the utterances; an epoch has as many whole batches as the worst
    # window offset (0 .. block_size - 1) leaves (here 5649 tokens: 175 blocks, 21 batches of 8),
    # so 30 steps are one whole epoch and 9 batches into the second.
    train_utts, _ = cfg.data.load()
    n_tokens = 1 + sum(len(u) + 1 for u in train_utts)
    block, batch = cfg.training.block_size, cfg.training.batch_size
    per_epoch = min((n_tokens - offset) // block // batch for offset in range(block))
    assert per_epoch < 30  # the run crosses an epoch, so epoch and batch are both exercised
    epoch, within = divmod(30, per_epoch)
    assert meta["data_position"] == {"epoch": epoch, "batch_in_epoch": within}
    saved_cfg = json.loads((kept[-1] / "config.json").read_text())
    assert RunConfig.model_validate(saved_cfg) == cfg
    assert AutoTokenizer.from_pretrained(kept[-1] / "tokenizer").bos_token == "UTT_BOUNDARY"


def test_exported_model_reloads_with_auto_classes(tmp_path: Path) -> None:
    cfg = _cfg(steps=10)
    train_loop(cfg, LocalSession(tmp_path, keep=1), export_dir=tmp_path)
    for name in ("final_model", "best_model"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        assert tok.bos_token == tok.eos_token == "UTT_BOUNDARY"
        ids = tok("p a t a", return_tensors="pt").input_ids
        assert tok.unk_token_id not in ids[0].tolist() or "p" not in tok.get_vocab()
        with torch.inference_mode():
            logits = model(ids).logits
        assert logits.shape == (1, ids.shape[1], len(tok))
    reloaded = _weights(tmp_path / "final_model")
    state, _ = read_checkpoint(CheckpointDir(tmp_path / "checkpoints", 1).latest())
    for key, tensor in reloaded.items():
        torch.testing.assert_close(tensor, state["model"][key])


def test_sgd_optimizer_with_momentum(tmp_path: Path) -> None:
    cfg = _cfg(optimizer="sgd", momentum=0.9, lr=0.05, steps=10)
    session = LocalSession(tmp_path, keep=1)
    metrics = train_loop(cfg, session)
    assert metrics["step"] == 10 and session.history[-1]["step"] == 10
    state, _ = read_checkpoint(CheckpointDir(tmp_path / "checkpoints", 1).latest())
    group = state["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and "betas" not in group  # SGD, not AdamW


def _write_config(path: Path, **training: object) -> Path:
    path.write_text(yaml.safe_dump(tiny_run_config(**training)), encoding="utf-8")
    return path


def test_cli_trains_and_resumes_after_sigkill(tmp_path: Path) -> None:
    """Kill the CLI hard after its first checkpoint; the same command resumes and the final
    weights equal those of an uninterrupted run."""
    config = _write_config(tmp_path / "run.yaml", steps=40, checkpoint_every_steps=10)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "seg_tune.train", str(config)]
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "straight")],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not CheckpointDir(out / "checkpoints", 2).all() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = CheckpointDir(out / "checkpoints", 2).latest()
    assert first is not None
    result = subprocess.run(
        [*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stdout
    wa, wb = _weights(tmp_path / "straight/final_model"), _weights(out / "final_model")
    for name, tensor in wa.items():
        torch.testing.assert_close(tensor, wb[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("training: {lr: -1}\n", "training.lr"),
        ("training: {stepz: 3}\n", "unknown key 'training.stepz'"),
        ("model: {preset: 3M}\n", "model.preset"),
        ("data: {train: {kind: tagged, path: /nonexistent.txt}}\n", "/nonexistent.txt"),
        ("training: [1, 2\n", "not valid YAML"),
    ],
)
def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "seg_tune.train", str(config), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(config) in lines[0], result.stderr
    assert not (tmp_path / "o").exists()


def overfitting_config(**training: object) -> RunConfig:
    """A run whose validation loss falls, then rises (80 utterances, half held out, a constant
    lr of 1e-2, no dropout): its best evaluation comes well before its end."""
    settings = {
        "steps": 120,
        "lr": 1e-2,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "eval_every_steps": 10,
        "checkpoint_every_steps": 60,
    }
    doc = tiny_run_config(**{**settings, **training})
    doc["data"]["train"]["n_utterances"] = 80
    doc["data"]["valid_fraction"] = 0.5
    doc["model"].update(dropout=0.0, n_embd=64)
    return validate(RunConfig, doc, source="test")


def test_the_best_evaluation_is_flagged_and_checkpointed_and_survives_a_resume(
    tmp_path: Path,
) -> None:
    """best_so_far is 1 exactly at each new minimum of the selection metric (valid_loss), a
    checkpoint is written there (besides the periodic ones) recording it, and a resumed run
    carries the best on instead of starting it over."""
    cfg = overfitting_config()
    session = LocalSession(tmp_path / "run", keep=20)
    train_loop(cfg, session, progress=False)
    losses = [(h["step"], h["valid_loss"]) for h in session.history]
    new_minima = [s for i, (s, v) in enumerate(losses) if all(v < w for _, w in losses[:i])]
    assert [h["step"] for h in session.history if h["best_so_far"]] == new_minima
    best_step = new_minima[-1]
    assert best_step < cfg.training.steps, f"the plant did not overfit: {losses}"
    written = {}
    for folder in session.checkpoints.all():
        _, meta = read_checkpoint(folder)
        written[meta["step"]] = meta
    assert set(new_minima) <= set(written), (new_minima, sorted(written))  # every new best
    assert written[best_step]["is_best"] and written[best_step]["best"]["step"] == best_step
    final = written[cfg.training.steps]
    assert not final["is_best"] and final["best"]["step"] == best_step
    assert final["best"]["value"] == min(v for _, v in losses)

    # Stop at step 60 (before the best), resume to the end: the same flags as in one go.
    half = LocalSession(tmp_path / "half", keep=20)
    train_loop(cfg.with_overrides({"training.steps": 60}), half, progress=False)
    # (a shorter run has another lr schedule length; the schedule is constant: same steps)
    resumed = LocalSession(tmp_path / "half", keep=20)
    train_loop(cfg, resumed, progress=False)
    flags = [h["best_so_far"] for h in half.history + resumed.history]
    assert flags == [h["best_so_far"] for h in session.history]


def test_a_segmentation_score_carried_over_is_not_a_new_best(tmp_path: Path) -> None:
    """With segment_every_steps above eval_every_steps, the evaluations between two scorings
    repeat the last score: they must not count as a best (nor checkpoint) on it."""
    cfg = overfitting_config(
        steps=40,
        segment_utterances=30,
        segment_every_steps=20,
        select_metric="seg_boundary_noedge_fscore",
        select_mode="max",
    )
    session = LocalSession(tmp_path / "run", keep=20)
    train_loop(cfg, session, progress=False)
    by_step = {h["step"]: h for h in session.history}
    key = "seg_boundary_noedge_fscore"
    # scored at 10 (none yet), 20, and 40 (the end); 30 carries 20's score over
    assert by_step[30][key] == by_step[20][key]
    flagged = [step for step, h in by_step.items() if h["best_so_far"]]
    assert flagged[0] == 10 and 30 not in flagged and set(flagged) <= {10, 20, 40}, flagged


def test_select_metric_must_be_reported_and_its_mode_right() -> None:
    with pytest.raises(Exception, match="select_metric 'valid_los' is not a reported metric"):
        validate(RunConfig, tiny_run_config(select_metric="valid_los"), source="x")
    with pytest.raises(Exception, match="select_mode 'max': valid_loss is better when lower"):
        validate(RunConfig, tiny_run_config(select_mode="max"), source="x")


def test_early_stopping_ends_a_run_and_survives_a_resume(tmp_path: Path) -> None:
    """training.early_stopping: the run ends patience_evals evaluations after its last
    improvement (a normal finish, checkpointed, reported with stopped_by: patience); stopped
    half-way and resumed it ends at the same step, and rerun once ended it trains no further."""
    cfg = overfitting_config(early_stopping={"patience_evals": 2, "min_delta": 0.0})
    whole = LocalSession(tmp_path / "whole", keep=20)
    last = train_loop(cfg, whole, progress=False)
    losses = [(h["step"], h["valid_loss"]) for h in whole.history]
    improvements = [s for i, (s, v) in enumerate(losses) if all(v < w for _, w in losses[:i])]
    end = losses[-1][0]
    assert end < cfg.training.steps, f"never ran out of patience: {losses}"
    assert end == improvements[-1] + 2 * cfg.training.eval_every_steps, (improvements, end)
    assert last["stopped_by"] == "patience" and last["step"] == end
    assert [h.get("stopped_by") for h in whole.history].count("patience") == 1
    _, meta = read_checkpoint(whole.checkpoints.latest())
    assert meta["step"] == end and meta["patience"]["evals"] == 2

    again = LocalSession(tmp_path / "whole", keep=20)  # the same command again: nothing to do
    assert train_loop(cfg, again, progress=False) == {} and again.history == []

    # stopped at step 60 (its patience count in the checkpoint), then resumed to the end
    half = LocalSession(tmp_path / "half", keep=20)
    train_loop(cfg.with_overrides({"training.steps": 60}), half, progress=False)
    rest = LocalSession(tmp_path / "half", keep=20)
    train_loop(cfg, rest, progress=False)
    assert [h["step"] for h in half.history + rest.history][-1] == end


def test_early_stopping_needs_a_patience() -> None:
    with pytest.raises(Exception, match="patience_evals"):
        validate(RunConfig, tiny_run_config(early_stopping={"min_delta": 0.1}), source="x")


# --------------------------------------------------------------------------- corrupt checkpoints


def _truncate_state(folder: Path) -> None:
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 2])


def _bad_meta(folder: Path) -> None:
    (folder / "meta.json").write_text('{"format": 2, "step": ', encoding="utf-8")


def _future_format(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 99}), encoding="utf-8")


def _no_tokenizer(folder: Path) -> None:
    for file in (folder / "tokenizer").iterdir():
        file.unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate_state, "PytorchStreamReader"),
        (_bad_meta, "JSONDecodeError"),
        (_future_format, "checkpoint format 99"),
        (_no_tokenizer, "tokenizer"),
    ],
)
def test_a_corrupt_checkpoint_falls_back_to_the_next_older_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, reason: str
) -> None:
    """Issue 13.3: the newest checkpoint unreadable (bad zip, bad JSON, a format this version
    cannot read, a missing file): the run resumes from the next older one, says so in one line
    naming the bad folder and the step, and keeps the bad folder as <name>.corrupt."""
    cfg = _cfg(steps=20, checkpoint_every_steps=5, keep_checkpoints=3)
    crashed = _CrashAfter(tmp_path, keep=3, crash_step=15)
    with pytest.raises(_Interrupted):
        train_loop(cfg, crashed)
    newest = tmp_path / "checkpoints" / "step_00000015"
    damage(newest)
    before = sorted(p.name for p in newest.rglob("*"))
    capsys.readouterr()
    resumed = LocalSession(tmp_path, keep=3)
    train_loop(cfg, resumed)
    assert [m["step"] for m in resumed.history] == [15, 20]
    assert {m["resumed_from_step"] for m in resumed.history} == {10}
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "cannot be read" in x]
    aside = newest.with_name("step_00000015.corrupt")
    assert line.startswith(f"seg_tune.train: warning: checkpoint {newest} cannot be read (")
    assert reason in line and f"moved aside to {aside}; resuming from step 10" in line
    assert sorted(p.name for p in aside.rglob("*")) == before  # moved whole, not deleted
    kept = [p.name for p in CheckpointDir(tmp_path / "checkpoints", keep=3).all()]
    assert kept == ["step_00000010", "step_00000015", "step_00000020"]  # a new 15 was written


def test_no_readable_checkpoint_left_starts_from_step_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(steps=10, checkpoint_every_steps=5, keep_checkpoints=2)
    crashed = _CrashAfter(tmp_path, keep=2, crash_step=10)
    with pytest.raises(_Interrupted):
        train_loop(cfg, crashed)
    for folder in CheckpointDir(tmp_path / "checkpoints", keep=2).all():
        _truncate_state(folder)
    capsys.readouterr()
    again = LocalSession(tmp_path, keep=2)
    train_loop(cfg, again)
    assert [m["step"] for m in again.history] == [5, 10]
    assert {m["resumed_from_step"] for m in again.history} == {0}
    lines = [x for x in capsys.readouterr().err.splitlines() if "cannot be read" in x]
    assert len(lines) == 2
    assert all(
        x.endswith("no readable checkpoint is left: training starts again from step 0")
        for x in lines
    )
    aside = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if "corrupt" in p.name)
    assert aside == ["step_00000005.corrupt", "step_00000010.corrupt"]
