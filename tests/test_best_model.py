"""The best model is the best checkpoint: a real sweep on a real local Ray cluster whose trial
overfits (its validation loss falls, then rises) exports the trial at its best step, keeps that
checkpoint beside the latest however many came after, and says so in summary.json, the report
and the final line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_run import _env, _results, _start

from seg_tune.report import MODEL_MARKER_GID, learning_curves_figure
from seg_tune.sweep.summary import FORMAT as SUMMARY_FORMAT
from seg_tune.sweep.summary import read_experiment

OVERFITTING = {  # as tests/test_train.py's overfitting_config: the best is well before the end
    "experiment": {
        "name": "peak",
        "metric": "valid_loss",
        "mode": "min",
        "num_samples": 1,
        "max_concurrent": 1,
        "max_steps": 120,
    },
    "data": {"train": {"kind": "synthetic", "n_utterances": 80, "seed": 3}, "valid_fraction": 0.5},
    "model": {
        "preset": None,
        "n_layer": 1,
        "n_embd": 64,
        "n_head": 2,
        "n_positions": 64,
        "dropout": 0.0,
    },
    "training": {
        "batch_size": 8,
        "block_size": 32,
        "lr": 1e-2,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "eval_every_steps": 10,
        "checkpoint_every_steps": 60,
        "segment_utterances": 0,
        "threads": 1,
    },
    "scheduler": {"type": "fifo"},
    "searcher": {"type": "random", "seed": 0},
    "checkpoints": {"keep": 1},
    "failure": {"max_retries": 0},
    "wandb": {"mode": "disabled"},
}


def _sweep(tmp_path: Path, doc: dict) -> tuple[Path, Path, dict]:
    """Run the sweep `doc` to its end (exit 0; again when called again with the same folder):
    the experiment folder, the driver's log and summary.json."""
    space = tmp_path / "peak.yaml"
    space.write_text(yaml.safe_dump(doc))
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    proc = _start(space, storage, log, env=_env())
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    exp = storage / "peak"
    return exp, log, json.loads((exp / "summary.json").read_text())


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_that_peaks_early_exports_its_best_step(tmp_path: Path) -> None:
    exp, log, summary = _sweep(tmp_path, OVERFITTING)
    [trial] = summary["trials"]
    losses = {r["step"]: r["valid_loss"] for r in _results(exp, trial["trial_id"])}
    best_step = min(losses, key=lambda s: (losses[s], s))
    assert best_step < 120 and losses[120] > losses[best_step], f"no peak: {losses}"

    assert summary["format"] == SUMMARY_FORMAT and summary["scope"] == "best"
    assert trial["best"]["step"] == best_step and trial["steps_trained"] == 120
    assert trial["best"]["metrics"]["valid_loss"] == pytest.approx(losses[best_step])
    assert trial["metrics"]["valid_loss"] == pytest.approx(losses[120])  # the last, as before
    assert summary["best"]["step"] == best_step
    assert summary["best"]["chosen_metrics"]["valid_loss"] == pytest.approx(losses[best_step])

    seg = json.loads((exp / "best_model" / "segmentation.json").read_text())
    assert seg["step"] == best_step  # the model exported is the best step's, not the last
    kept = sorted(
        json.loads(p.read_text())["step"] for p in exp.glob("tune/trial_*/checkpoint_*/meta.json")
    )
    assert kept == [best_step, 120], kept  # keep 1: the best, and the latest to resume from
    out = log.read_text()
    assert f"valid_loss={losses[best_step]:.4g} at step {best_step}" in out, out[-2000:]

    report = (exp / "report.md").read_text()
    assert f"`best_model/` is this trial at step {best_step}" in report
    fig = learning_curves_figure(read_experiment(exp))
    stars = [c for ax in fig.axes for c in ax.collections if c.get_gid() == MODEL_MARKER_GID]
    assert len(stars) == 1 and list(stars[0].get_offsets()[0]) == pytest.approx(
        [best_step, losses[best_step]]
    )


@pytest.mark.ray
@pytest.mark.slow
def test_patience_stops_a_trial_as_a_finish_and_the_stop_survives_a_resume(
    tmp_path: Path,
) -> None:
    """training.early_stopping in a real sweep: the trial ends before its budget, TERMINATED,
    summary.json says stopped_by: patience (not ASHA), the sweep exits 0; the same command
    again trains nothing more."""
    doc = {
        **OVERFITTING,
        "training": {**OVERFITTING["training"], "early_stopping": {"patience_evals": 2}},
    }
    exp, _, summary = _sweep(tmp_path, doc)
    [trial] = summary["trials"]
    assert trial["status"] == "TERMINATED" and summary["outcome"] == "finished"
    assert trial["stopped_by"] == "patience" and trial["stopped_early"] is False
    assert trial["steps_trained"] < 120
    assert trial["steps_trained"] == trial["best"]["step"] + 2 * 10  # 2 evaluations of 10 steps
    results = (exp / "tune" / f"trial_{trial['trial_id']}" / "result.json").read_text()

    _, _, again = _sweep(tmp_path, doc)  # the same command again
    assert again["trials"][0]["steps_trained"] == trial["steps_trained"]
    assert (exp / "tune" / f"trial_{trial['trial_id']}" / "result.json").read_text() == results
