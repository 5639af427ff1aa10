"""The final phase's plan and numbers, without Ray: which runs, and the summary's `final`
section's arithmetic (means, Student-t intervals over seeds, the paired gain over the untrained
control, the best run by validation), checked against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from seg_tune.metrics import SCORE_KEYS
from seg_tune.sweep.final import FinalRun, headline, plan, section
from seg_tune.sweep.summary import TrialRecord

T_975_2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom
T_975_1 = 12.706204736174707  # 1 degree of freedom


def _spec(top_k: int = 2, seeds: int = 3, steps: int | None = None, mode: str = "max") -> object:
    return SimpleNamespace(
        experiment=SimpleNamespace(
            metric="seg_boundary_noedge_fscore", mode=mode, scope="best", max_steps=300
        ),
        final=SimpleNamespace(top_k=top_k, seeds=seeds, steps=steps),
        base=SimpleNamespace(training=SimpleNamespace(seed=0)),
    )


def _trial(tid: str, history: list[tuple[int, float]], **metrics: object) -> TrialRecord:
    hist = [{"step": s, "seg_boundary_noedge_fscore": v} for s, v in history]
    last = {"step": history[-1][0], "seg_boundary_noedge_fscore": history[-1][1], **metrics}
    return TrialRecord(tid, "TERMINATED", {"training.lr": float(len(tid))}, last, hist)


def test_plan_takes_the_top_k_by_their_best_evaluation_each_with_new_seeds() -> None:
    trials = [
        _trial("a", [(100, 0.70), (300, 0.60)]),  # best 0.70 (peaked early)
        _trial("bb", [(100, 0.65), (300, 0.68)]),  # best 0.68
        _trial("ccc", [(100, 0.50)]),  # stopped by ASHA at 100
        _trial("dddd", [(100, 0.66), (200, 0.69)], stopped_by="patience"),
    ]
    runs = plan(_spec(top_k=3, seeds=2), trials)
    assert [(r.rank, r.trial_id, r.seed) for r in runs] == [
        (1, "a", 1),
        (1, "a", 2),
        (2, "dddd", 1),
        (2, "dddd", 2),
        (3, "bb", 1),
        (3, "bb", 2),
    ]
    # the steps its trial reached; a trial its own patience ended trains its whole budget
    assert {r.trial_id: r.steps for r in runs} == {"a": 300, "dddd": 300, "bb": 300}
    assert plan(_spec(top_k=1, seeds=1), trials[2:3])[0].steps == 100
    assert plan(_spec(top_k=1, seeds=1, steps=50), trials)[0].steps == 50
    assert plan(_spec(top_k=1, seeds=1, mode="min"), trials)[0].trial_id == "ccc"
    assert runs[0].as_params() == {"params": {"training.lr": 1.0}, "seed": 1, "steps": 300}


def _scores(bf: float) -> dict[str, float]:
    return {key: bf if key == "boundary_noedge_fscore" else 0.5 for key in SCORE_KEYS}


def _doc(run: FinalRun, bf: float, valid: float | None = None, kind: str = "trained") -> dict:
    return {
        "kind": kind,
        "rank": run.rank,
        "seed": run.seed,
        "final_trial_id": f"f{run.key}",
        "step": 300 if kind == "trained" else 0,
        "valid_objective": valid,
        "chosen": {"cue": "ent", "strategy": "spike", **_scores(bf)},
        "test": _scores(bf),
        "test_data": "tagged file test.txt",
        "n_test": 100,
        "n_valid": 50,
    }


def test_section_means_intervals_gain_and_best_by_validation() -> None:
    runs = [FinalRun(1, s, "a", {}, 300) for s in (1, 2, 3)] + [FinalRun(2, 1, "b", {}, 300)]
    test_bf = {"r1-s1": 0.70, "r1-s2": 0.74, "r1-s3": 0.72, "r2-s1": 0.60}
    valid = {"r1-s1": 0.80, "r1-s2": 0.78, "r1-s3": 0.79, "r2-s1": 0.81}
    control_bf = {"r1-s1": 0.40, "r1-s2": 0.40, "r1-s3": 0.46, "r2-s1": 0.30}
    trained = {r.key: _doc(r, test_bf[r.key], valid[r.key]) for r in runs}
    untrained = {r.key: _doc(r, control_bf[r.key], kind="untrained") for r in runs}
    out = section(
        runs,
        trained,
        untrained,
        {"tp": {}, "simple": {}, "labels": {}},
        mode="max",
        search_values={"a": 0.79, "b": 0.77},
        outcome="finished",
    )
    first, second = out["configurations"]
    bf = first["test"]["boundary_noedge_fscore"]
    half = T_975_2 * 0.02 / math.sqrt(3)  # mean 0.72, sd 0.02
    assert bf["n"] == 3 and bf["mean"] == pytest.approx(0.72) and bf["sd"] == pytest.approx(0.02)
    assert bf["half_width"] == pytest.approx(half)
    assert (bf["low"], bf["high"]) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    # the gain is paired by seed: 0.30, 0.34, 0.26 -> mean 0.30, sd 0.04
    gain = first["gain"]["boundary_noedge_fscore"]
    assert gain["mean"] == pytest.approx(0.30) and gain["sd"] == pytest.approx(0.04)
    assert gain["half_width"] == pytest.approx(T_975_2 * 0.04 / math.sqrt(3))
    assert first["untrained"]["test"]["boundary_noedge_fscore"]["mean"] == pytest.approx(
        (0.40 + 0.40 + 0.46) / 3
    )
    # one seed: a mean, no interval
    single = second["test"]["boundary_noedge_fscore"]
    assert single["n"] == 1 and single["sd"] is None and single["half_width"] is None
    assert first["search_value"] == 0.79
    # best_model/ is the best final run by validation, whatever its test score
    assert (out["best"]["rank"], out["best"]["seed"]) == (2, 1)
    line = headline(out)
    assert line is not None and "#2" in line and "test BF 0.600 (mean, 95% CI over 1 seeds" in line


def test_headline_quotes_the_interval_and_the_gain() -> None:
    runs = [FinalRun(1, s, "a", {}, 300) for s in (1, 2)]
    trained = {r.key: _doc(r, 0.70 + 0.02 * r.seed, 0.8) for r in runs}
    untrained = {r.key: _doc(r, 0.5, kind="untrained") for r in runs}
    out = section(runs, trained, untrained, None, mode="max", search_values={}, outcome="finished")
    half = T_975_1 * math.sqrt(0.0002) / math.sqrt(2)  # values 0.72, 0.74: sd sqrt(2e-4)
    assert headline(out) == (
        f"final configuration #1 (search trial a): test BF 0.730 ± {half:.3f} (mean, 95% CI "
        "over 2 seeds, +0.230 over untrained; row and cutoffs chosen on valid; 100 test "
        "utterances)"
    )
    assert (
        headline(section(runs, {}, {}, None, mode="max", search_values={}, outcome="stopped"))
        is None
    )


def test_a_sigusr1_between_fits_is_recorded_and_a_sigterm_still_counts_once() -> None:
    """After a Tune fit (the final phase then scores in the driver), SIGUSR1 is the batch
    script's "time is nearly up": the driver records it and stops between runs."""
    import os
    import signal

    from seg_tune.cli.run import StopRequest

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        stop = StopRequest()
        stop.install()
        stop.watch_usr1()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signals == ["SIGTERM"]  # not forwarded to itself as a SIGUSR1
        stop.signals.clear()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signals == ["SIGUSR1"]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
