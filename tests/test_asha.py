"""PersistentASHA: the rungs and stop decisions survive a restore (a new scheduler object)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from seg_tune.asha import PersistentASHA, load_stopped


@dataclass(frozen=True)
class _Trial:
    trial_id: str


def _scheduler(path: Path) -> PersistentASHA:
    return PersistentASHA(
        state_path=path,
        time_attr="step",
        metric="bf",
        mode="max",
        max_t=90,
        grace_period=10,
        reduction_factor=3,
    )


def _feed(s: ASHAScheduler, trial: _Trial, step: int, bf: float) -> str:
    return s.on_trial_result(None, trial, {"step": step, "bf": bf})


def test_rungs_and_decisions_survive_a_restore(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    first = _scheduler(state)
    good, bad = _Trial("good"), _Trial("bad")
    for t in (good, bad):
        first.on_trial_add(None, t)
    assert _feed(first, good, 10, 0.8) == TrialScheduler.CONTINUE
    assert _feed(first, bad, 10, 0.2) == TrialScheduler.STOP  # below the rung's cutoff
    assert load_stopped(state) == {"bad": 10}

    # A restore builds a new scheduler (Ray does not save it): it must read the file back.
    second = _scheduler(state)
    late = _Trial("late")
    second.on_trial_add(None, late)
    # With empty rungs (plain ASHA after a restore) this weak trial would continue.
    assert _feed(second, late, 10, 0.3) == TrialScheduler.STOP
    assert _feed(second, bad, 20, 0.9) == TrialScheduler.STOP  # an old decision stands
    assert _feed(second, good, 30, 0.9) == TrialScheduler.CONTINUE
    saved = json.loads(state.read_text())
    rung10 = next(rec for m, rec in saved["brackets"][0]["rungs"] if m == 10)
    assert rung10 == {"good": 0.8, "bad": 0.2, "late": 0.3}

    plain = ASHAScheduler(
        time_attr="step", metric="bf", mode="max", max_t=90, grace_period=10, reduction_factor=3
    )
    plain.on_trial_add(None, late)
    assert _feed(plain, late, 10, 0.3) == TrialScheduler.CONTINUE  # what persistence prevents


def test_reaching_the_budget_is_not_an_early_stop(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    s = _scheduler(state)
    t = _Trial("t")
    s.on_trial_add(None, t)
    assert _feed(s, t, 90, 0.5) == TrialScheduler.STOP  # max_t reached
    assert load_stopped(state) == {}
