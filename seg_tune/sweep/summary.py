"""summary.json: its versioned schema, written AND read here (nothing else parses it).

Format 5 is format 4 plus the compute the trials took: per trial `compute_s`, and top-level
`compute` = {"unit": "GPU" or "CPU" (GPU when the trials hold GPUs), "per_trial" (the GPUs, else
CPUs, one trial holds: resources.workers x gpus_per_worker, else x cpus_per_worker), "resources"
(the `resources` section the summary was written with), "search" and "final" (each {"trials",
"compute_s", "hours"}; final null without a final phase) and "hours" (their sum)}; hours =
compute_s x per_trial / 3600. A trial's `compute_s` is the sum of Tune's `time_this_iter_s` over
every result in its result.json: the trainable's time from its start to each report, of every
attempt (`compute_seconds`). Tune's own `time_total_s` is not used: on a retry or resume it
restarts from the checkpoint's value, so the steps recomputed after a failure do not count, and a
Ray Train trial (which gives Tune no checkpoint) starts again from 0. Not counted: what an attempt
did after its last report (lost to a failure), a trial process's start before its trainable runs,
and the driver's own work (the final phase's scoring). Resources may change on a resume; the hours
use the last run's. The final section adds `n_test_phonemes` (the phonemes of the test utterances
scored, boundaries not counted), `test_sample` ({"by": "utterances", "phonemes" or "all", "asked":
final.test_utterances or test_phonemes, or null}) and `compute` ({"compute_s", "runs": {run key:
its trial's compute_s}}). Older formats have none of these (read as None).

Format 4 is format 3 plus `final` and, per trial, `failures`: every failed attempt of the trial
(retried or not: a trial that finished after an OOM kill keeps it) as {"attempt", "at",
"reason", "node_lost", "log_tail"}, from Tune's error file, `log_tail` being the last lines the
attempt wrote to the trial's log (`seg_tune.sweep.trial_log`); empty for older writers, which also
leave out node_lost and log_tail. `final` is null without a final phase, else the final phase's results
(`seg_tune.sweep.final.section`): outcome, n_runs, n_scored, failed, selection_metric,
test_data, n_test, n_valid, `configurations` (per configuration: rank, search_trial_id, config,
steps, seeds, search_value (its objective in the search, on valid), `runs` (per seed: the row
chosen on valid, its 12 test scores, its test interval, each cue's spike BF on test, its step
and valid objective), `test` ({score key: {n, mean, sd, low, high, half_width}}: 95% Student-t
intervals over seeds), `untrained` (the same for the untrained controls) and `gain` (trained
minus untrained, paired by seed)), `baselines` (tp, simple, labels: on the same test
utterances) and `best` (the best final run by validation: best_model/ holds it).

Format 3: the objective (`metric`, `mode`), `scope` (how the best trial is chosen: "best", on
each trial's best evaluation, or "last", on its last), `num_samples`, `scheduler`, `searcher`, `data`,
`outcome` ("finished": every trial finished, stopped early by ASHA included; "failed": every
trial ended but some in ERROR; "stopped": the sweep was interrupted or trials are left),
`finished` (outcome == "finished"), `n_failed`, `best` (trial_id, config, metrics (its last),
steps_trained, `step` and `chosen_metrics`: the evaluation it was chosen on, whose checkpoint
best_model/ holds) and `trials`: one entry per trial with trial_id, status, config (the sampled
parameters), metrics (the last reported) and steps_trained (its last step), `best` ({step,
metrics} of its best evaluation on the objective, or null), stopped_early (ASHA stopped it) and
stopped_at_step, error
(for a trial in ERROR: {"reason": its exception's first line, "file": the path of Tune's error
file, "log": the trial's log, "log_tail": the last lines its failed attempt wrote there; the last
two absent for older writers}, else null), and its history (one entry per evaluation: step and the main metrics;
duplicates from a restore removed). Format 2 had no scope and no best evaluation (its best trial
was chosen on the last values, its model was the last checkpoint); format 1 also had no outcome,
n_failed or error, and its `finished` meant "every trial ended", failed ones included. Both are
still read.

The reader (`read_experiment`) checks the file once and normalises it for the report: absent
dicts and lists are empty, NaN (written as null) is missing, configs are dotted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg_tune.checkpoint import atomic_write_text
from seg_tune.errors import ConfigError, DataError, location
from seg_tune.metrics import STEP, STOPPED_BY, TUNE_BOOKKEEPING, ci_keys
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.values import flatten, plain

FORMAT = 5  # written
READ_FORMATS = (1, 2, 3, 4, 5)  # read
OUTCOMES = ("finished", "failed", "stopped")
HISTORY_KEYS = (
    "step",
    "train_loss",
    "valid_loss",
    "valid_bpp",
    "seg_boundary_noedge_fscore",
    *ci_keys("seg_boundary_noedge_fscore"),
)
TIME_THIS_ITER = "time_this_iter_s"  # Tune's: the seconds from the previous report to this one
_EXP_HINT = "EXP_DIR must be an experiment folder written by seg_tune.run (it holds summary.json)"

# --------------------------------------------------------------------------- Tune's records


def results_by_step(*paths: Path) -> list[dict[str, Any]]:
    """A trial's results from Tune's result.json files (JSON lines; several: the copies in
    storage and in the driver's staging folder), one per step (the last read), by step. A line
    cut by a kill is skipped."""
    by_step: dict[int, dict[str, Any]] = {}
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict) and isinstance(result.get(STEP), int):
                by_step[result[STEP]] = result
    return [by_step[step] for step in sorted(by_step)]


def compute_seconds(path: Path) -> float | None:
    """A trial's compute time: the sum of `time_this_iter_s` over every result in its
    result.json (JSON lines), each attempt's included (a step recomputed after a failure counts
    again: it took the time again); None without the file. A line cut by a kill is skipped."""
    if not path.is_file():
        return None
    total = 0.0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        seconds = finite_number(result.get(TIME_THIS_ITER)) if isinstance(result, dict) else None
        total += seconds if seconds is not None and seconds > 0 else 0.0
    return total


def held_per_trial(resources: Mapping[str, Any]) -> tuple[float, str]:
    """(how many, "GPU" or "CPU"): the GPUs one trial holds (resources.workers x
    gpus_per_worker), or its CPUs (x cpus_per_worker) when it holds no GPU."""
    workers = finite_number(resources.get("workers")) or 1.0
    gpus = finite_number(resources.get("gpus_per_worker")) or 0.0
    if gpus > 0:
        return workers * gpus, "GPU"
    return workers * (finite_number(resources.get("cpus_per_worker")) or 1.0), "CPU"


def compute_section(
    resources: Mapping[str, Any],
    search_s: Sequence[float | None],
    final_s: Sequence[float | None] | None,
) -> dict[str, Any]:
    """summary.json's `compute`: each phase's trials, their compute seconds and hours (seconds x
    the GPUs or CPUs a trial holds / 3600), and the total. A trial without a record counts 0."""
    per_trial, unit = held_per_trial(resources)

    def phase(seconds: Sequence[float | None]) -> dict[str, Any]:
        total = sum(s for s in seconds if s is not None)
        return {"trials": len(seconds), "compute_s": total, "hours": total * per_trial / 3600}

    search = phase(search_s)
    final = None if final_s is None else phase(final_s)
    return {
        "unit": unit,
        "per_trial": per_trial,
        "resources": dict(resources),
        "search": search,
        "final": final,
        "hours": search["hours"] + (final["hours"] if final else 0.0),
    }


# --------------------------------------------------------------------------- writing


@dataclass
class TrialRecord:
    """One trial as the driver saw it at the end of `Tuner.fit`."""

    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_dir: str | None = None  # its latest checkpoint
    best_checkpoint_dir: str | None = None  # the checkpoint of its best evaluation
    stopped_at_step: int | None = None
    error: str | None = None  # ERROR trials: the exception's first line
    error_file: str | None = None  # ERROR trials: Tune's error.txt
    error_log: str | None = None  # ERROR trials: the trial's own log (`Layout.trial_log`)
    log_tail: list[str] = field(default_factory=list)  # ERROR trials: its failed attempt's
    # every failed attempt, retried or not: {"attempt", "at", "reason", "node_lost",
    # "log_tail"} (Tune's error.txt; the attempt's last lines in the trial's log)
    failures: list[dict[str, Any]] = field(default_factory=list)
    compute_s: float | None = None  # `compute_seconds` of its result.json (None: no record)

    @property
    def steps_trained(self) -> int:
        return int(self.metrics.get("step", 0) or 0)

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        """Its best evaluation on `metric` (the earliest of equal ones: a segmentation score
        carried over to later evaluations is not new), from its history."""
        scored = [h for h in self.history if _finite(h.get(metric))]
        if not scored:
            return None
        sign = -1.0 if mode == "max" else 1.0
        return min(scored, key=lambda h: (sign * h[metric], h[STEP]))

    def value(self, metric: str, mode: str, scope: str) -> float | None:
        """What ranks it: its best value (`scope` best) or its last reported one (last)."""
        if scope == "best":
            best = self.best(metric, mode)
            if best is not None:
                return float(best[metric])
        last = self.metrics.get(metric)
        return float(last) if _finite(last) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_trial(
    trials: Sequence[TrialRecord], metric: str, mode: str, scope: str = "best"
) -> TrialRecord | None:
    """The best trial by `TrialRecord.value` (its best evaluation, or its last for scope last)."""
    scored = [t for t in trials if t.value(metric, mode, scope) is not None]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda t: t.value(metric, mode, scope))


def build(
    trials: Sequence[TrialRecord],
    *,
    name: str,
    space: dict[str, Any],
    metric: str,
    mode: str,
    num_samples: int,
    max_steps: int,
    outcome: str,
    data_description: str | None = None,
    scope: str = "best",
    final: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def entry(t: TrialRecord) -> dict[str, Any]:
        metrics = {k: v for k, v in t.metrics.items() if k not in TUNE_BOOKKEEPING}
        top = t.best(metric, mode)
        by_asha = t.stopped_at_step is not None and t.steps_trained < max_steps
        return {
            "trial_id": t.trial_id,
            "status": t.status,
            "config": t.config,
            "metrics": metrics,
            "steps_trained": t.steps_trained,
            "stopped_early": by_asha,
            "stopped_at_step": t.stopped_at_step,
            # who ended it before its budget: ASHA at a rung, or its own early stopping
            "stopped_by": "patience"
            if t.metrics.get(STOPPED_BY) == "patience"
            else ("asha" if by_asha else None),
            "error": None
            if t.status != "ERROR"
            else {
                "reason": t.error or "unknown",
                "file": t.error_file,
                "log": t.error_log,
                "log_tail": t.log_tail,
            },
            "failures": t.failures,
            "compute_s": t.compute_s,
            "best": None
            if top is None
            else {"step": top[STEP], "metrics": {k: v for k, v in top.items() if k != STEP}},
            "history": t.history,
        }

    best = best_trial(trials, metric, mode, scope)
    experiment = space.get("experiment", {})
    final_runs = ((final or {}).get("compute") or {}).get("runs")  # None: no final phase
    compute = compute_section(
        space.get("resources") or {},
        [t.compute_s for t in trials],
        None if final_runs is None else list(final_runs.values()),
    )
    return plain(
        {
            "format": FORMAT,
            "name": name,
            "space_file": space.get("source_path"),
            "metric": metric,
            "mode": mode,
            "scope": scope,
            "num_samples": num_samples,
            "outcome": outcome,
            "finished": outcome == "finished",
            "n_failed": sum(t.status == "ERROR" for t in trials),
            "scheduler": {**space.get("scheduler", {}), "max_steps": experiment.get("max_steps")},
            "searcher": space.get("searcher", {}),
            "data": data_description,
            "best": None if best is None else _best_entry(entry(best), scope),
            "trials": [entry(t) for t in sorted(trials, key=lambda t: t.trial_id)],
            "compute": compute,
            "final": final,
        },
        finite=True,
    )


def write(layout: Layout, content: dict[str, Any]) -> Path:
    """summary.json, atomically (a kill leaves the old one or the new one, never half)."""
    atomic_write_text(layout.summary, json.dumps(content, indent=1))
    return layout.summary


def _best_entry(trial: dict[str, Any], scope: str) -> dict[str, Any]:
    """The summary's `best`: the best trial's id, config and steps, and the step and metrics of
    the evaluation it was chosen on (its best, or its last for scope last): the model's step."""
    out = {k: trial[k] for k in ("trial_id", "config", "metrics", "steps_trained")}
    chosen = trial["best"] if scope == "best" and trial["best"] is not None else None
    out["step"] = chosen["step"] if chosen else trial["steps_trained"]
    out["chosen_metrics"] = chosen["metrics"] if chosen else trial["metrics"]
    return out


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TrialSummary:
    """One trial of the summary, normalised: absent dicts/lists are empty, not None."""

    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    steps_trained: int | None
    stop_step: int | None  # where ASHA stopped it; None when it was not stopped early
    error: dict[str, Any] | None = None  # in ERROR: {"reason", "file", "log", "log_tail"}
    best: dict[str, Any] | None = None  # format 3: its best evaluation {"step", "metrics"}
    failures: list[dict[str, Any]] = field(default_factory=list)  # its failed attempts
    compute_s: float | None = None  # format 5: its compute seconds (`compute_seconds`)

    def best_value(self, metric: str) -> float | None:
        """`metric` at its best evaluation of the objective (format 3), else None."""
        if self.best is None:
            return None
        return finite_number(mapping(self.best.get("metrics"), "best metrics").get(metric))

    def value(self, metric: str) -> float | None:
        """The last reported value of `metric` (the history's when `metrics` lacks it), or None;
        NaN counts as missing."""
        v = finite_number(self.metrics.get(metric))
        if v is None:
            v = next(
                (finite_number(h.get(metric)) for h in reversed(self.history) if metric in h), None
            )
        return v


@dataclass(frozen=True)
class ExperimentSummary:
    """What the report shows: the summary's settings, its trials, and the best model's table."""

    path: Path
    summary: dict[str, Any]
    metric: str
    mode: str
    trials: list[TrialSummary]
    best: dict[str, Any] | None
    segmentation: dict[str, Any] | None
    final: dict[str, Any] | None = None  # format 4: the final phase (None: none ran)
    compute: dict[str, Any] | None = None  # format 5: the trials' compute (None: not recorded)

    @property
    def model_step(self) -> int | None:
        """The step of the evaluation best_model/ was chosen on (formats 1-2: not recorded)."""
        step = None if self.best is None else finite_number(self.best.get("step"))
        return None if step is None else int(step)

    @property
    def best_id(self) -> str | None:
        return None if self.best is None else str(self.best.get("trial_id"))

    @property
    def by_best(self) -> bool:
        """Whether trials are ranked by their best evaluation (scope best, format 3)."""
        return self.summary.get("scope", "last") == "best"

    def objective(self, t: TrialSummary) -> float | None:
        """What ranks a trial: its best evaluation's objective (scope best), else its last."""
        best = t.best_value(self.metric) if self.by_best else None
        return best if best is not None else t.value(self.metric)

    def ranked(self) -> list[TrialSummary]:
        """Trials best first by the objective; trials without a value last, in summary order."""
        sign = -1.0 if self.mode == "max" else 1.0

        def key(t: TrialSummary) -> tuple[bool, float]:
            v = self.objective(t)
            return (v is None, 0.0 if v is None else sign * v)

        return sorted(self.trials, key=key)


def finite_number(value: Any) -> float | None:
    """A finite int/float as float, else None (bools, strings, None and NaN are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{location(path, exc.lineno)}: not valid JSON ({exc.msg}); {_EXP_HINT}"
        ) from None


def mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected an object, got {type(value).__name__} {value!r:.60}")
    return value


def _trial(raw: Any, where: str) -> TrialSummary:
    raw = mapping(raw, where)
    if "trial_id" not in raw:
        raise DataError(f"{where}: no 'trial_id'; every trial entry needs one")
    history_raw = raw.get("history") or []
    if not isinstance(history_raw, list):
        raise DataError(f"{where}: 'history' must be a list, got {type(history_raw).__name__}")
    history = [mapping(h, f"{where} history[{i}]") for i, h in enumerate(history_raw)]
    history = sorted(
        (h for h in history if finite_number(h.get(STEP)) is not None), key=lambda h: h[STEP]
    )
    steps = finite_number(raw.get("steps_trained"))
    stop = None
    if raw.get("stopped_early"):
        # An older writer may leave the step out: then the last step it trained or reported.
        stop = finite_number(raw.get("stopped_at_step"))
        stop = stop if stop is not None else steps
        if stop is None and history:
            stop = float(history[-1][STEP])
    return TrialSummary(
        trial_id=str(raw["trial_id"]),
        status=str(raw.get("status") or "UNKNOWN"),
        config=flatten(mapping(raw.get("config"), f"{where} config")),
        metrics=mapping(raw.get("metrics"), f"{where} metrics"),
        history=history,
        steps_trained=None if steps is None else int(steps),
        stop_step=None if stop is None else int(stop),
        error=mapping(raw["error"], f"{where} error") if raw.get("error") else None,
        best=mapping(raw["best"], f"{where} best") if raw.get("best") else None,
        failures=[mapping(f, f"{where} failures") for f in raw.get("failures") or []],
        compute_s=finite_number(raw.get("compute_s")),
    )


def read_raw(exp_dir: Path) -> dict[str, Any]:
    """The checked summary.json of `exp_dir`; ConfigError when it is not an experiment folder."""
    if not exp_dir.is_dir():
        raise ConfigError(f"{exp_dir}: no such folder; {_EXP_HINT}")
    path = Layout(exp_dir).summary
    if not path.is_file():
        raise ConfigError(f"{exp_dir}: no {path.name} in it; {_EXP_HINT}")
    data = _read_json(path)
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in READ_FORMATS:
        raise DataError(
            f"{path}: format {fmt!r} is unknown, this seg_tune reads formats "
            f"{', '.join(map(str, READ_FORMATS))}; "
            "write the report with the seg_tune version that ran the experiment"
        )
    for key in ("metric", "mode", "trials"):
        if key not in data:
            raise DataError(f"{path}: key {key!r} is missing; {_EXP_HINT}")
    if data["mode"] not in ("min", "max"):
        raise DataError(f"{path}: 'mode' is {data['mode']!r}; allowed: 'min' or 'max'")
    if not isinstance(data["trials"], list):
        raise DataError(f"{path}: 'trials' must be a list, got {type(data['trials']).__name__}")
    return data


def read_segmentation(exp_dir: Path) -> dict[str, Any] | None:
    """best_model/segmentation.json, or None when no trial finished (no best model)."""
    path = Layout(exp_dir).segmentation
    if not path.is_file():
        return None
    data = mapping(_read_json(path), str(path))
    table = data.get("table") or []
    if not isinstance(table, list):
        raise DataError(f"{path}: 'table' must be a list of rows, got {type(table).__name__}")
    for i, row in enumerate(table):
        row = mapping(row, f"{path} table[{i}]")
        if "cue" not in row or "strategy" not in row:
            raise DataError(f"{path}: table[{i}] lacks 'cue' or 'strategy'; got keys {list(row)}")
    mapping(data.get("tp_baseline"), f"{path} tp_baseline")
    mapping(data.get("best"), f"{path} best")
    return data


def read_experiment(exp_dir: Path) -> ExperimentSummary:
    """Everything the report shows, read and checked once."""
    summary = read_raw(exp_dir)
    path = Layout(exp_dir).summary
    trials = [_trial(t, f"{path} trials[{i}]") for i, t in enumerate(summary["trials"])]
    best = summary.get("best")
    return ExperimentSummary(
        path=exp_dir,
        summary=summary,
        metric=str(summary["metric"]),
        mode=summary["mode"],
        trials=trials,
        best=mapping(best, f"{path} best") or None,
        segmentation=read_segmentation(exp_dir),
        final=mapping(summary.get("final"), f"{path} final") or None,
        compute=mapping(summary.get("compute"), f"{path} compute") or None,
    )
