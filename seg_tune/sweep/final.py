"""The final phase: after the search, the best configurations retrained with new seeds and
scored once on the held-out test split. It runs when `final.enabled` (on by default when the
data has a test split), in four resumable steps:

1. **Plan.** The `top_k` best trials of the search by the objective (ranked as the search's best
   trial is: `experiment.scope`), each with `seeds` new seeds (training.seed + 1 ...): exactly
   top_k x seeds `FinalRun`s, saved once to `final/plan.json` (a rerun uses the saved plan).
   A run trains to the steps its search trial reached, or `final.steps`; a trial that its own
   early stopping ended trains its whole budget again (the same early stopping ends its runs).
2. **Train.** The runs are Tune trials of a second Tuner in `<experiment>/final/` (a grid of one
   trial per run), on the same Ray cluster, with the search's trainable, retries, checkpoints
   and wandb (group `<group>-final`). A rerun restores it: finished runs stay finished, and
   interrupted ones resume from their checkpoints.
3. **Score.** In the driver, once every run has ended: each run's model at its best evaluation
   on the objective (scope best; its last for scope last), and its untrained control (the same
   configuration and seed at step 0), choose their cue x strategy row and cutoffs on the
   validation split only and are scored once on the test split (`segment.held_out_scores`);
   the TP and simple baselines are scored on the same test utterances. The test utterances
   are the split's first `final.test_utterances`, or its first whole utterances whose phonemes
   add up to at least `final.test_phonemes` (the shortest such prefix; a split with fewer is
   refused before Ray starts), or all of it (`seg_tune.sweep.spec.sample_test`); summary.json
   says how many utterances (`n_test`) and phonemes (`n_test_phonemes`). Each score is written to
   `final/scores/` as soon as it is made (atomically), so that a rerun does not redo it.
4. **Numbers.** `section()` is summary.json's `final`: per configuration its runs, and for each
   of the 12 scores the mean, sd and 95% Student-t interval over seeds on test; the untrained
   control the same way; the gain over it (paired by seed); the baselines; the best final model
   by validation (which `best_model/` holds); each run's trial compute seconds (`compute`, for
   the summary's GPU or CPU hours).

The test split is read only here (step 3), and by the driver's overlap check before the search.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seg_tune.checkpoint import atomic_write_text
from seg_tune.metrics import SCORE_KEYS, STOPPED_BY
from seg_tune.score import TypeKey
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.summary import TrialRecord
from seg_tune.sweep.values import plain

FINAL_KEY = "final_run"  # the final Tuner's one parameter: a run's key
PLAN_FORMAT = 1  # of final/plan.json
SCORE_FORMAT = 1  # of final/scores/*.json
SELECTION_METRIC = "boundary_noedge_fscore"  # what a final model's row and cutoffs maximise
HEADLINE = ("boundary_noedge_fscore", "token_fscore", "type_fscore")  # BF, WF, LF


@dataclass(frozen=True)
class FinalRun:
    """One final run: the configuration of the search trial ranked `rank`, with a new seed."""

    rank: int  # 1 = the search's best
    seed: int
    trial_id: str  # its search trial
    params: dict[str, Any]  # the search trial's sampled parameters
    steps: int

    @property
    def key(self) -> str:
        return f"r{self.rank}-s{self.seed}"

    def as_params(self) -> dict[str, Any]:
        """What `ExperimentSpec.final_config` reads."""
        return {"params": self.params, "seed": self.seed, "steps": self.steps}


# --------------------------------------------------------------------------- 1. plan


def plan(spec: Any, trials: Sequence[TrialRecord]) -> list[FinalRun]:
    """top_k x seeds runs of the search's best configurations, best first."""
    e, f = spec.experiment, spec.final
    scored = [t for t in trials if t.value(e.metric, e.mode, e.scope) is not None]
    sign = -1.0 if e.mode == "max" else 1.0
    ranked = sorted(scored, key=lambda t: (sign * t.value(e.metric, e.mode, e.scope), t.trial_id))
    base_seed = spec.base.training.seed
    runs = []
    for rank, trial in enumerate(ranked[: f.top_k], start=1):
        patience = trial.metrics.get(STOPPED_BY) == "patience"
        steps = f.steps or (e.max_steps if patience else max(1, trial.steps_trained))
        for i in range(f.seeds):
            runs.append(FinalRun(rank, base_seed + 1 + i, trial.trial_id, trial.config, steps))
    return runs


def saved_plan(layout: Layout, spec: Any, trials: Sequence[TrialRecord]) -> list[FinalRun]:
    """The plan of this final phase: the one saved in `final/plan.json` when there is one (a
    rerun never re-plans), else a new one, saved before any final run starts."""
    path = layout.final.root / "plan.json"
    if path.is_file():
        doc = json.loads(path.read_text("utf-8"))
        if doc.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r}; this seg_tune reads 1")
        return [FinalRun(**run) for run in doc["runs"]]
    runs = plan(spec, trials)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": PLAN_FORMAT, "runs": [asdict(r) for r in runs]}
    atomic_write_text(path, json.dumps(plain(doc), indent=1))
    return runs


# --------------------------------------------------------------------------- 3. score


@dataclass
class _Splits:
    """The validation and test utterances of each data config, read once per phase: the test
    sample is `final.test_utterances` or `final.test_phonemes` of the split
    (`seg_tune.sweep.spec.sample_test`)."""

    valid_n: int
    test_n: int | None
    cache: dict[str, tuple[list, list, str]] = field(default_factory=dict)
    test_phonemes: int | None = None

    def of(self, cfg: Any) -> tuple[list, list, str]:
        from seg_tune.sweep.spec import sample_test

        key = cfg.data.model_dump_json()
        if key not in self.cache:
            splits = cfg.data.load_splits()
            if not splits.test:
                raise ValueError("the final phase needs a test split; the data has none")
            where = cfg.data.describe_test(splits)
            test = sample_test(
                splits.test, utterances=self.test_n, phonemes=self.test_phonemes, where=where
            )
            self.cache[key] = (splits.valid[: self.valid_n], test, where)
        return self.cache[key]


def _score_file(layout: Layout, name: str) -> Path:
    return layout.final.scores / f"{name}.json"


def _cached(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or unreadable: score again
    ok = doc.get("format") == SCORE_FORMAT and doc.get("identity") == identity
    return doc if ok else None


def _score_model(model: Any, tokenizer: Any, cfg: Any, splits: _Splits) -> dict[str, Any]:
    from seg_tune.cues import Window
    from seg_tune.segment import held_out_scores

    valid, test, test_data = splits.of(cfg)
    window = Window.for_model(model, cfg.training.block_size)
    scores = held_out_scores(
        model,
        tokenizer,
        valid,
        test,
        window=window,
        metric=SELECTION_METRIC,
        type_key=cfg.score.type_key,
    )
    return {**scores, "test_data": test_data, "n_test_phonemes": sum(len(u) for u in test)}


def score_run(
    layout: Layout, run: FinalRun, record: TrialRecord, spec: Any, splits: _Splits
) -> dict[str, Any] | None:
    """A finished final run scored (or its saved score); None when it left no checkpoint."""
    from seg_tune.sweep.results import load_checkpoint_model

    e = spec.experiment
    folder = record.best_checkpoint_dir if e.scope == "best" else None
    folder = folder or record.checkpoint_dir
    if folder is None:
        return None
    identity = {"run": run.key, "final_trial_id": record.trial_id, "checkpoint": folder}
    path = _score_file(layout, run.key)
    if (doc := _cached(path, identity)) is not None:
        return doc
    model, tokenizer, cfg, meta = load_checkpoint_model(Path(folder))
    doc = {
        "format": SCORE_FORMAT,
        "identity": identity,
        "kind": "trained",
        **asdict(run),
        "final_trial_id": record.trial_id,
        "step": int(meta["step"]),
        "valid_objective": record.value(e.metric, e.mode, e.scope),
        **_score_model(model, tokenizer, cfg, splits),
    }
    atomic_write_text(path, json.dumps(plain(doc, finite=True), indent=1))
    return doc


def score_untrained(
    layout: Layout, run: FinalRun, checkpoint: Path, spec: Any, splits: _Splits
) -> dict[str, Any]:
    """The untrained control of a run: its configuration and seed at step 0 (the weights its
    training started from), with the run's tokenizer, scored as the trained model is."""
    import torch

    from seg_tune.model import build_model
    from seg_tune.tokenizer import load_tokenizer

    cfg = spec.final_config(run.as_params())
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
    identity = {"run": run.key, "untrained": True, "config": digest}
    path = _score_file(layout, f"untrained-{run.key}")
    if (doc := _cached(path, identity)) is not None:
        return doc
    tokenizer = load_tokenizer(checkpoint / "tokenizer")
    torch.manual_seed(cfg.training.seed)  # as the training loop seeds before building it
    model = build_model(cfg.model, tokenizer)
    model.eval()
    doc = {
        "format": SCORE_FORMAT,
        "identity": identity,
        "kind": "untrained",
        **asdict(run),
        "step": 0,
        **_score_model(model, tokenizer, cfg, splits),
    }
    atomic_write_text(path, json.dumps(plain(doc, finite=True), indent=1))
    return doc


def score_baselines(test: Sequence[Any], type_key: TypeKey) -> dict[str, Any]:
    """The six TP baselines and wordseg's simple ones on the test utterances, word types keyed
    as the models' scores are (score.type_key)."""
    from seg_tune.baseline import SIMPLE_BASELINE_LABELS, simple_baselines, tp_all_scores

    return {
        "tp": tp_all_scores(test, type_key=type_key),
        "simple": simple_baselines(test, seed=0, type_key=type_key),
        "labels": dict(SIMPLE_BASELINE_LABELS),
    }


# --------------------------------------------------------------------------- 4. numbers


def _aggregate(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Per score key: n, mean, sd and the 95% Student-t interval over `rows` (seeds)."""
    from seg_tune.stats import mean_interval

    out = {}
    for key in SCORE_KEYS:
        values = [float(r[key]) for r in rows if key in r]
        if values:
            out[key] = asdict(mean_interval(values))
    return out


def _configuration(
    rank: int, runs: Sequence[FinalRun], trained: dict[str, dict], untrained: dict[str, dict]
) -> dict[str, Any]:
    done = [trained[r.key] for r in runs if r.key in trained]
    controls = [untrained[r.key] for r in runs if r.key in untrained]
    paired = [
        {k: trained[r.key]["test"][k] - untrained[r.key]["test"][k] for k in SCORE_KEYS}
        for r in runs
        if r.key in trained and r.key in untrained
    ]
    first = runs[0]
    return {
        "rank": rank,
        "search_trial_id": first.trial_id,
        "config": first.params,
        "steps": first.steps,
        "seeds": [r.seed for r in runs],
        "runs": done,
        "test": _aggregate([d["test"] for d in done]),
        "untrained": {"runs": controls, "test": _aggregate([d["test"] for d in controls])},
        "gain": _aggregate(paired),  # trained minus untrained, paired by seed
    }


def section(
    runs: Sequence[FinalRun],
    trained: dict[str, dict],
    untrained: dict[str, dict],
    baselines: dict[str, Any] | None,
    *,
    mode: str,
    search_values: dict[str, float | None],
    outcome: str,
    failed: Sequence[str] = (),
    sample: dict[str, Any] | None = None,
    compute: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """summary.json's `final` section (schema: `seg_tune.sweep.summary`). `sample`: the test
    sample's rule (`sample_rule`); `compute`: each run's trial compute seconds, by run key."""
    ranks = sorted({r.rank for r in runs})
    configurations = [
        _configuration(k, [r for r in runs if r.rank == k], trained, untrained) for k in ranks
    ]
    for c in configurations:
        c["search_value"] = search_values.get(c["search_trial_id"])
    scored = [d for d in trained.values() if d.get("valid_objective") is not None]
    sign = -1.0 if mode == "max" else 1.0
    best = min(
        scored, key=lambda d: (sign * d["valid_objective"], d["rank"], d["seed"]), default=None
    )
    any_run = next(iter(trained.values()), None)
    return plain(
        {
            "outcome": outcome,
            "n_runs": len(runs),
            "n_scored": len(trained),
            "failed": list(failed),
            "selection_metric": SELECTION_METRIC,
            "test_data": any_run.get("test_data") if any_run else None,
            "n_test": any_run.get("n_test") if any_run else None,
            "n_test_phonemes": any_run.get("n_test_phonemes") if any_run else None,
            "test_sample": sample,
            "n_valid": any_run.get("n_valid") if any_run else None,
            "compute": None
            if compute is None
            else {
                "compute_s": sum(v for v in compute.values() if v is not None),
                "runs": dict(compute),
            },
            "configurations": configurations,
            "baselines": baselines,
            "best": None
            if best is None
            else {
                k: best[k]
                for k in (
                    "rank",
                    "seed",
                    "final_trial_id",
                    "step",
                    "valid_objective",
                    "chosen",
                    "test",
                )
            },
        },
        finite=True,
    )


def sample_rule(final: Any) -> dict[str, Any]:
    """How a `FinalSection` draws the test sample: {"by": "phonemes", "utterances" or "all",
    "asked": the number asked for, or None}."""
    if final.test_phonemes is not None:
        return {"by": "phonemes", "asked": final.test_phonemes}
    if final.test_utterances is not None:
        return {"by": "utterances", "asked": final.test_utterances}
    return {"by": "all", "asked": None}


# --------------------------------------------------------------------------- the phase


@dataclass(frozen=True)
class FinalPhase:
    """What the final phase left: the summary section, and the best final run's checkpoint."""

    section: dict[str, Any]
    best_checkpoint: str | None
    failed: list[TrialRecord]
    stopped: bool

    @property
    def line(self) -> str | None:
        """The terminal's account of it (`headline`), or None when nothing was scored."""
        return headline(self.section)


def run_phase(
    spec: Any,
    layout: Layout,
    search_trials: Sequence[TrialRecord],
    fit: Callable[[list[FinalRun], bool], None],
    *,
    interrupted: Callable[[], bool],
) -> FinalPhase:
    """Plan, train (`fit(runs, restore)`: the final Tuner's fit), then score the runs."""
    from ray import tune

    from seg_tune.sweep.results import DONE_STATUSES, collect_trials

    e = spec.experiment
    final = layout.final
    runs = saved_plan(layout, spec, search_trials)
    by_key = {r.key: r for r in runs}
    fit(runs, tune.Tuner.can_restore(str(final.tune)))
    records = collect_trials(final, e.metric)
    mine = {str(t.config.get(FINAL_KEY)): t for t in records if t.config.get(FINAL_KEY) in by_key}
    failed = [t for t in mine.values() if t.status == "ERROR"]
    search_values = {t.trial_id: t.value(e.metric, e.mode, e.scope) for t in search_trials}
    ended = all(mine.get(k) is not None and mine[k].status in DONE_STATUSES for k in by_key)
    trained: dict[str, dict] = {}
    untrained: dict[str, dict] = {}
    sample = sample_rule(spec.final)
    compute = {k: mine[k].compute_s if k in mine else None for k in by_key}

    def stopped() -> FinalPhase:  # what is scored so far is kept in final/scores/
        out = section(
            runs,
            trained,
            untrained,
            None,
            mode=e.mode,
            search_values=search_values,
            outcome="stopped",
            sample=sample,
            compute=compute,
        )
        return FinalPhase(out, None, failed, True)

    if interrupted() or not ended:
        return stopped()
    splits = _Splits(
        spec.final.valid_utterances,
        spec.final.test_utterances,
        test_phonemes=spec.final.test_phonemes,
    )
    for run in runs:
        record = mine[run.key]
        if (
            record.status == "ERROR"
            or (doc := score_run(layout, run, record, spec, splits)) is None
        ):
            continue
        trained[run.key] = doc
        checkpoint = Path(record.checkpoint_dir or doc["identity"]["checkpoint"])
        untrained[run.key] = score_untrained(layout, run, checkpoint, spec, splits)
        if interrupted():
            return stopped()
    _, test, _ = splits.of(spec.base)
    out = section(
        runs,
        trained,
        untrained,
        score_baselines(test, spec.base.score.type_key),
        mode=e.mode,
        search_values=search_values,
        outcome="failed" if failed else "finished",
        failed=[f"{t.trial_id}: {t.error}" for t in failed],
        sample=sample,
        compute=compute,
    )
    best = out["best"]
    checkpoint = None
    if best is not None:
        doc = next(d for d in trained.values() if d["final_trial_id"] == best["final_trial_id"])
        checkpoint = doc["identity"]["checkpoint"]
    return FinalPhase(out, checkpoint, failed, False)


def headline(final: dict[str, Any]) -> str | None:
    """The terminal's account of the final phase: the best configuration's test BF, mean ±
    95% CI over its seeds, and the gain over its untrained control; None when not scored."""
    configurations = [c for c in final.get("configurations", []) if c.get("test")]
    if not configurations or final.get("best") is None:
        return None
    top = next((c for c in configurations if c["rank"] == final["best"]["rank"]), configurations[0])
    bf = top["test"].get(SELECTION_METRIC)
    if not bf:
        return None
    half = bf.get("half_width")
    ci = f" ± {half:.3f}" if half is not None else ""
    gain = (top.get("gain") or {}).get(SELECTION_METRIC) or {}
    more = f", {gain['mean']:+.3f} over untrained" if gain.get("mean") is not None else ""
    phonemes = final.get("n_test_phonemes")
    of = f", {phonemes:,} phonemes" if isinstance(phonemes, int) else ""
    return (
        f"final configuration #{top['rank']} (search trial {top['search_trial_id']}): test BF "
        f"{bf['mean']:.3f}{ci} (mean, 95% CI over {bf['n']} seeds{more}; row and cutoffs chosen "
        f"on valid; {final.get('n_test')} test utterances{of})"
    )
