"""Every result a trial reports reaches each record of it exactly once, whatever ASHA decided.

One real sweep (`python -m seg_tune.run` on its own local Ray cluster, ASHA `promotion: pause`)
whose five trials, run one at a time, take every path of `seg_tune.sweep.asha.PromotingASHA`: pause at
the rung, promotion of a paused trial, going on from the rung on arrival, the end game's promotion
(a trial resumed seconds after it paused) and the end game's stop of the trials left waiting.
scheduler_state.json's `decisions` proves which paths were taken. For every trial, the steps it
reported (recorded inside the trial process, by a `sitecustomize` hook that wraps
`seg_tune.sweep.trial.TuneSession.report`; nothing in seg_tune writes such a record) must equal, in
order, the steps of its Tune result.json and progress.csv, of summary.json's history, of the
report's learning curve and of its wandb run.

Tune copies its staging folder to storage only with its experiment snapshots, and a trial that
starts again from a checkpoint gets its result.json back from storage (issue 18: the end game's
promotion lost the rung result). `TUNE_GLOBAL_CHECKPOINT_S=3600` leaves only the snapshots that
checkpoints force (one per `checkpoints.keep` = 2 checkpoints of a trial), so what storage holds
when a trial restarts does not depend on timing: with checkpoints at steps 7 and 14, the
snapshot after step 14 is the last before the rung result at step 20.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from test_run import _env, _results, _space, _start
from wandb_files import offline_runs

from seg_tune.sweep.asha import read_state

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_STEPS, RUNG, EVAL_EVERY, CHECKPOINT_EVERY = 40, 20, 10, 7
# Grid order = start order (one trial at a time). valid_loss at step 20 ranks them 3rd, 5th,
# 4th, 2nd, 1st: the 1st pauses (nothing to compare with) and is promoted when the 2nd pauses;
# the 3rd pauses (quota used); the 4th goes on on arrival; the 5th, the best, pauses (quota
# used), and the end game promotes it at once and stops the 2nd and 3rd.
LEARNING_RATES = [6e-4, 1e-4, 3e-4, 1e-3, 3e-3]

HOOK = """
import importlib.abc, importlib.util, json, os, sys

OUT = os.environ.get("SEG_TUNE_TEST_REPORTS")


class _RecordReports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "seg_tune.sweep.trial":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            real_report = module.TuneSession.report

            def report(self, metrics, checkpoint):
                from ray import tune

                trial_id = tune.get_context().get_trial_id()
                line = {"step": int(metrics["step"]), "resumed": metrics["resumed_from_step"]}
                with open(os.path.join(OUT, trial_id + ".jsonl"), "a") as fh:
                    fh.write(json.dumps(line) + "\\n")
                return real_report(self, metrics, checkpoint)

            module.TuneSession.report = report

        spec.loader.exec_module = exec_module
        return spec


if OUT:
    sys.meta_path.insert(0, _RecordReports())
"""


def _scheduled_steps(last: int) -> list[int]:
    """The steps seg_tune.train reports up to `last`: evaluations, checkpoints, the rung."""
    return [
        s
        for s in range(1, last + 1)
        if s % EVAL_EVERY == 0 or s % CHECKPOINT_EVERY == 0 or s in (RUNG, MAX_STEPS)
    ]


def _reported(reports: Path, trial_id: str) -> list[dict]:
    path = reports / f"{trial_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _progress_steps(exp: Path, trial_id: str) -> list[int]:
    with (exp / "tune" / f"trial_{trial_id}" / "progress.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def _curve_steps(exp: Path) -> tuple[dict[str, list[int]], list[float]]:
    """The report's learning curves of the objective (trial id -> steps) and its rung marks."""
    from seg_tune.report import learning_curves_figure
    from seg_tune.sweep.summary import read_experiment

    fig = learning_curves_figure(read_experiment(exp))
    assert fig is not None
    objective = fig.axes[0]
    curves, marks = {}, []
    for line in objective.get_lines():
        label = str(line.get_label()).removeprefix("best: ")
        xs = [float(x) for x in line.get_xdata()]
        if label.startswith("_"):  # unlabelled: a rung mark (axvline)
            marks.append(xs[0])
        else:
            curves[label] = [int(x) for x in xs]
    return curves, marks


def _decisions_by_trial(state: dict) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for trial_id, rung, what in state["decisions"]:
        out.setdefault(trial_id, []).append((rung, what))
    return out


def test_every_reported_step_is_in_every_record_once(tmp_path: Path) -> None:
    hook, reports = tmp_path / "hook", tmp_path / "reports"
    hook.mkdir()
    reports.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    space = _space(
        tmp_path,
        replace={
            "space": {"training.lr": {"type": "choice", "values": LEARNING_RATES}},
            "searcher": {"type": "grid", "seed": 0},
            "scheduler": {"type": "asha", "grace_period_steps": RUNG, "reduction_factor": 2},
            "checkpoints": {"keep": 2},
        },
        experiment={
            "name": "history",
            "num_samples": 1,
            "max_concurrent": 1,
            "max_steps": MAX_STEPS,
            "metric": "valid_loss",
            "mode": "min",
        },
        training={
            "eval_every_steps": EVAL_EVERY,
            "checkpoint_every_steps": CHECKPOINT_EVERY,
            "warmup_steps": 5,
            "segment_utterances": 50,
        },
    )
    pythonpath = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = _env(
        SEG_TUNE_TEST_REPORTS=str(reports),
        PYTHONPATH=pythonpath,
        TUNE_GLOBAL_CHECKPOINT_S="3600",
    )
    log = tmp_path / "driver.log"
    proc = _start(space, tmp_path / "results", log, env=env)
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    exp = tmp_path / "results" / "history"

    # Which paths ASHA took, from its own state file.
    state = read_state(exp / "scheduler_state.json")
    decisions = _decisions_by_trial(state)
    shown = json.dumps(state["decisions"])
    assert {what for steps in decisions.values() for _, what in steps} == {
        "continue",
        "pause",
        "promote",
        "end_game",
        "stop",
    }, shown
    assert all(rung == RUNG for steps in decisions.values() for rung, _ in steps), shown
    paths = (("continue",), ("pause", "promote"), ("pause", "end_game"), ("pause", "stop"))
    by_path = {
        path: [t for t, steps in decisions.items() if tuple(w for _, w in steps) == path]
        for path in paths
    }
    assert all(by_path.values()), (by_path, shown)
    assert state["stopped"] == {t: RUNG for t in by_path[("pause", "stop")]}, shown
    assert state["paused"] == {}, shown

    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True
    history = {t["trial_id"]: [int(h["step"]) for h in t["history"]] for t in summary["trials"]}
    assert sorted(history) == sorted(decisions)
    curves, marks = _curve_steps(exp)
    assert marks == [float(RUNG)]  # the report's rung marks: the scheduler's rungs
    wandb_steps: dict[str, list[int]] = {}
    for run in offline_runs(exp / "wandb"):
        wandb_steps.setdefault(run.run_id, []).extend(run.steps)

    for trial_id, steps in decisions.items():
        stopped = [w for _, w in steps] == ["pause", "stop"]
        expected = _scheduled_steps(RUNG if stopped else MAX_STEPS)
        reported = _reported(reports, trial_id)
        where = f"trial {trial_id} ({[w for _, w in steps]})"
        assert [r["step"] for r in reported] == expected, where
        if [w for _, w in steps][-1] in ("promote", "end_game"):
            # It really restarted from the rung's checkpoint (in the process it had or a new
            # one: resources.reuse_processes): every report after the rung says so.
            resumed = [r["resumed"] for r in reported]
            assert resumed == [RUNG if r["step"] > RUNG else 0 for r in reported], where
        assert [r["step"] for r in _results(exp, trial_id)] == expected, where
        assert _progress_steps(exp, trial_id) == expected, where
        assert history[trial_id] == expected, where
        assert curves.get(trial_id) == expected, where
        assert wandb_steps.get(trial_id) == expected, where
