"""What a sweep leaves behind once `Tuner.fit` returns: every trial read back from Tune's state
(`collect_trials`), the best of them, `best_model/` and the order of the post-sweep steps
(`finish`). summary.json's schema is `seg_tune.sweep.summary`'s.

`best_model/`: the best trial's model and tokenizer in Hugging Face format (from its latest
checkpoint), its resolved config, and `segmentation.json`: the full cue x strategy table on the
validation split beside the TP baselines on the same utterances.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg_tune.checkpoint import is_set_aside, read_checkpoint
from seg_tune.config import RunConfig
from seg_tune.metrics import ci_keys
from seg_tune.sweep import summary, trial_log
from seg_tune.sweep.faults import text_is_node_loss
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.summary import (
    HISTORY_KEYS,
    TrialRecord,
    best_trial,
    compute_seconds,
    results_by_step,
)
from seg_tune.sweep.values import plain


def read_history(trial_dir: Path, metric: str) -> list[dict[str, Any]]:
    """Evaluations of a trial from Tune's `result.json`, one per step: the main metrics."""
    keys = (*HISTORY_KEYS, metric, *ci_keys(metric))
    return [{k: r[k] for k in keys if k in r} for r in results_by_step(trial_dir / "result.json")]


def load_checkpoint_model(checkpoint_dir: Path) -> tuple[Any, Any, RunConfig, dict]:
    """A trial checkpoint's model (eval mode), tokenizer, resolved config and meta."""
    from seg_tune.model import build_model
    from seg_tune.tokenizer import load_tokenizer

    state, meta = read_checkpoint(checkpoint_dir)
    cfg = RunConfig.model_validate_json((checkpoint_dir / "config.json").read_text("utf-8"))
    tokenizer = load_tokenizer(checkpoint_dir / "tokenizer")
    model = build_model(cfg.model, tokenizer)
    model.load_state_dict(state["model"])
    model.eval()
    return model, tokenizer, cfg, meta


def export_best_model(
    checkpoint_dir: Path,
    target: Path,
    *,
    segmentation_utterances: int = 2000,
    test: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the best trial's model as a Hugging Face folder with its segmentation table (on
    validation utterances; `test`: the final phase's scores of this model on the test split,
    kept beside it under "test")."""
    from seg_tune.baseline import tp_all_scores
    from seg_tune.cues import Window
    from seg_tune.segment import best_row, segment_table
    from seg_tune.train import export_model

    model, tokenizer, cfg, meta = load_checkpoint_model(checkpoint_dir)
    _, valid = cfg.data.load()
    utterances = valid[:segmentation_utterances]
    window = Window.for_model(model, cfg.training.block_size)
    key = cfg.score.type_key
    table = segment_table(model, tokenizer, utterances, window=window, type_key=key)
    seg = {
        "data": f"validation split of {cfg.data.train.describe()}"
        if cfg.data.valid is None
        else cfg.data.valid.describe(),
        "n_utterances": len(utterances),
        "step": meta["step"],
        "table": table,
        "best": best_row(table),
        "tp_baseline": tp_all_scores(utterances, type_key=key),
    }
    if test is not None:
        seg["test"] = test

    segmentation = json.dumps(plain(seg, finite=True), indent=1)
    export_model(model, tokenizer, target, cfg, extra={"segmentation.json": segmentation})
    return seg


def _checkpoints(
    layout: Layout, trial_id: str, trial_dir: Path | None
) -> list[tuple[int, Path, dict]]:
    """(step, folder, meta) of every complete checkpoint of a trial, wherever its path kept it:
    the trial folder (single-worker trials) or the trial's Ray Train run under `train_runs/`."""
    roots = [layout.train_run(trial_id)]
    if trial_dir is not None:
        roots.append(trial_dir)
    found = []
    for root in roots:
        for path in root.glob("checkpoint_*/meta.json") if root.is_dir() else ():
            if is_set_aside(path.parent):
                continue  # an unreadable checkpoint a resume moved aside
            try:
                meta = json.loads(path.read_text("utf-8"))
                found.append((int(meta["step"]), path.parent, meta))
            except (ValueError, KeyError, OSError):
                continue
    return sorted(found, key=lambda item: item[0])


def latest_and_best(
    layout: Layout, trial_id: str, trial_dir: Path | None
) -> tuple[Path | None, Path | None]:
    """A trial's newest complete checkpoint (where it resumes from), and the checkpoint of its
    best evaluation on the objective: the newest written at a new best (`is_best`, kept by the
    tuner's checkpoint config however long the trial went on; None for checkpoints written
    before seg_tune recorded it)."""
    found = _checkpoints(layout, trial_id, trial_dir)  # every meta.json read once
    bests = [folder for _, folder, meta in found if meta.get("is_best")]
    return (found[-1][1] if found else None), (bests[-1] if bests else None)


def collect_trials(layout: Layout, metric: str) -> list[TrialRecord]:
    """Every trial of the experiment, read back from Tune's saved experiment state."""
    from ray import tune

    from seg_tune.sweep.asha import load_paused, load_stopped

    stopped = load_stopped(layout.scheduler_state)
    # Tune saves a trial paused at a rung as PENDING (it re-queues it on restore); the scheduler
    # holds it paused until a promotion, which is what it is.
    paused = load_paused(layout.scheduler_state)
    records = []
    for trial in tune.ExperimentAnalysis(str(layout.tune)).trials:
        status = str(trial.status)
        if trial.trial_id in paused and status not in DONE_STATUSES:
            status = "PAUSED"
        trial_dir = Path(trial.path) if trial.path else None
        checkpoint, best = latest_and_best(layout, trial.trial_id, trial_dir)
        records.append(
            TrialRecord(
                trial_id=trial.trial_id,
                status=status,
                config=dict(trial.config),
                metrics=dict(trial.last_result or {}),
                history=read_history(trial_dir, metric) if trial_dir else [],
                checkpoint_dir=str(checkpoint) if checkpoint else None,
                best_checkpoint_dir=str(best) if best else None,
                stopped_at_step=stopped.get(trial.trial_id),
                compute_s=compute_seconds(trial_dir / "result.json") if trial_dir else None,
                **_error_of(trial, trial_dir, layout.trial_log(trial.trial_id)),
            )
        )
    return records


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.+)$")


def error_reason(text: str) -> str:
    """The one-line reason in a Tune error file: its last `SomeError: message` line (the
    innermost exception, where Ray wraps a trial's error), without the module path."""
    found = [m for line in text.splitlines() if (m := _EXCEPTION_LINE.match(line.strip()))]
    if not found:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else "unknown error (empty error file)"
    name, message = found[-1].groups()
    return f"{name.rsplit('.', 1)[-1]}: {message}"[:300]


# Tune appends each failed attempt of a trial to its error.txt behind this line
_FAILURE_HEADER = re.compile(r"^Failure # (\d+) \(occurred at ([^)]*)\)$", re.MULTILINE)


def failure_history(text: str) -> list[dict[str, Any]]:
    """Every failed attempt in a Tune error file, in order: {"attempt" (1, 2, ...), "at",
    "reason", "node_lost"}. A lost node's attempt is not counted against
    failure.max_retries (`faults`), so Tune's own number repeats there; "attempt" counts all."""
    heads = list(_FAILURE_HEADER.finditer(text))
    if not heads:
        return []
    chunks = [
        text[h.end() : n.start() if n else len(text)]
        for h, n in zip(heads, [*heads[1:], None], strict=True)
    ]
    return [
        {
            "attempt": i,
            "at": head.group(2),
            "reason": error_reason(chunk),
            "node_lost": text_is_node_loss(chunk),
        }
        for i, (head, chunk) in enumerate(zip(heads, chunks, strict=True), start=1)
    ]


def _error_of(trial: Any, trial_dir: Path | None, log: Path) -> dict[str, Any]:
    """The failed attempts of a trial (retried or not), each with the last lines its attempt
    wrote to the trial's log (`trial_log.tail`), and for a trial in ERROR its reason, error
    file (Tune writes one error.txt per trial, appended to at each failure) and log tail."""
    name = getattr(trial.run_metadata, "error_filename", None) or "error.txt"
    path = trial_dir / name if trial_dir is not None else None
    text = path.read_text("utf-8", errors="replace") if path and path.is_file() else None
    failures = failure_history(text) if text else []
    *attempts, last = trial_log.tails(log, [f["at"] for f in failures] + [None])
    found: dict[str, Any] = {
        "failures": [{**f, "log_tail": t} for f, t in zip(failures, attempts, strict=True)]
    }
    if str(trial.status) != "ERROR":
        return found
    found |= {
        "error_log": str(log) if log.is_file() else None,
        "log_tail": attempts[-1] if attempts else last,  # the attempt that failed for good
    }
    if text is None:
        return {**found, "error": "unknown error (Tune wrote no error file)", "error_file": None}
    return {**found, "error": error_reason(text), "error_file": str(path)}


DONE_STATUSES = ("TERMINATED", "ERROR")  # the rest (PENDING, RUNNING, PAUSED) may go on


@dataclass(frozen=True)
class Outcome:
    """How a sweep ended, for the terminal and the exit status."""

    outcome: str  # finished | failed | stopped (summary.json's `outcome`)
    failed: list[TrialRecord]  # trials in ERROR
    best_line: str  # the final line's account of the best trial
    step_failures: list[str]  # post-sweep steps that failed: "step: reason"


def _outcome(trials: Sequence[TrialRecord], num_samples: int, interrupted: bool) -> str:
    if (
        interrupted
        or len(trials) < num_samples
        or any(t.status not in DONE_STATUSES for t in trials)
    ):
        return "stopped"
    return "failed" if any(t.status == "ERROR" for t in trials) else "finished"


def finish(
    spec: Any,
    layout: Layout,
    *,
    interrupted: bool,
    report: bool,
    final_pending: bool = False,
    final: Any = None,
) -> Outcome:
    """What a sweep leaves behind, in an order where no step can cost the ones before it:
    summary.json first, then (once every trial has ended) the best model, then the report, then
    the hub push. A step that fails is recorded and the next ones still run.

    `final_pending`: the final phase comes next; only summary.json is written now (the best
    model, report and push wait for the final phase). `final`: the final phase's result
    (`seg_tune.sweep.final.FinalPhase`): its section goes into the summary, and best_model/ is
    its best run by validation, with that run's test scores beside it."""
    e = spec.experiment
    trials = collect_trials(layout, e.metric)
    outcome = _outcome(trials, e.num_samples, interrupted or bool(final and final.stopped))
    content = summary.build(
        trials,
        name=layout.name,
        space=spec.to_dict(),
        metric=e.metric,
        mode=e.mode,
        num_samples=e.num_samples,
        max_steps=e.max_steps,
        outcome=outcome,
        data_description=spec.base.data.train.describe(),
        scope=e.scope,
        final=final.section if final is not None else None,
    )
    summary.write(layout, content)
    failed = [t for t in trials if t.status == "ERROR"]
    step_failures: list[str] = []
    for t in final.failed if final is not None else ():
        step_failures.append(
            f"final run {t.config.get('final_run')} (trial {t.trial_id}): {t.error}"
        )

    def attempt(step: str, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # each step on its own: the others still run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            step_failures.append(f"{step}: {type(exc).__name__}: {first}")

    best = best_trial(trials, e.metric, e.mode, e.scope)
    ended = outcome != "stopped"
    chosen = content["best"]
    if best is None:
        line = f"no trial reported {e.metric}; see {layout.root}"
    else:
        value = chosen["chosen_metrics"].get(e.metric, best.value(e.metric, e.mode, e.scope))
        line = f"best trial {best.trial_id}: {e.metric}={value:.4g} at step {chosen['step']}"
    if final_pending:
        return Outcome(outcome, failed, line, step_failures)
    if ended and final is not None and final.best_checkpoint:
        test = final.section["best"]
        attempt(
            "best model export",
            lambda: export_best_model(Path(final.best_checkpoint), layout.best_model, test=test),
        )
    elif ended and best is not None:
        # scope best: the checkpoint of its best evaluation; scope last (or a trial whose
        # checkpoints predate that record): its latest
        folder = best.best_checkpoint_dir if e.scope == "best" else None
        folder = folder or best.checkpoint_dir
        if folder:
            attempt("best model export", lambda: export_best_model(Path(folder), layout.best_model))
    if final is not None:
        line = final.line or line
    if report:
        from seg_tune.report import write_report

        def write() -> None:
            nonlocal line
            line += f"; report: {write_report(layout.root)}"

        attempt("report", write)
    if ended and spec.hub.repo_id and layout.best_model.is_dir():
        from seg_tune.hub import push_best_model

        attempt(
            "hub push",
            lambda: push_best_model(layout.best_model, spec.hub.repo_id, private=spec.hub.private),
        )
    return Outcome(outcome, failed, line, step_failures)
