"""The ASHA schedulers of seg_tune.sweep.asha: decisions, and their state surviving a restore (a new
scheduler object reading the state file). The Tune controller is a stand-in here; the Ray tests
of test_run.py run them in real sweeps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from seg_tune.sweep.asha import (
    PauseAwareLimiter,
    PauseAwareVariantGenerator,
    PersistentASHA,
    PromotingASHA,
    load_stopped,
    read_state,
    rung_steps,
)


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


def _feed(s: Any, trial: Any, step: int, bf: float) -> str:
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
    saved = read_state(state)
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


# ---------------------------------------------------------------------- promotion by pausing


class _Live:
    """A trial as the scheduler sees it: id and a status it may change."""

    def __init__(self, trial_id: str, status: str = "RUNNING") -> None:
        self.trial_id, self.status = trial_id, status

    def set_status(self, status: str) -> None:
        self.status = status


class _Controller:
    """What Tune's controller shows a scheduler: its trials, the searcher, stop_trial."""

    def __init__(self, trials: list[_Live], finished: bool = False) -> None:
        self.trials, self.finished, self.stopped = trials, finished, []
        self.search_alg = self

    def is_finished(self) -> bool:
        return self.finished

    def get_trials(self) -> list[_Live]:
        return self.trials

    def stop_trial(self, trial: _Live) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"
        self.scheduler.on_trial_remove(self, trial)


def _promoting(path: Path, max_concurrent: int = 2) -> PromotingASHA:
    s = PromotingASHA(
        state_path=path,
        max_t=90,
        grace_period=10,
        reduction_factor=3,
        max_concurrent=max_concurrent,
    )
    assert s.set_search_properties("bf", "max")
    return s


def test_rung_steps_stop_below_the_budget() -> None:
    assert rung_steps(10, 3, 90) == [10, 30]
    assert rung_steps(20, 3, 540) == [20, 60, 180]
    assert rung_steps(20, 4, 540) == [20, 80, 320]
    assert rung_steps(100, 3, 600) == [100, 300]
    assert rung_steps(10, 1.5, 30) == [10, 15, 22]


def test_a_trial_pauses_at_a_rung_until_it_ranks_in_the_top_third(tmp_path: Path) -> None:
    s = _promoting(tmp_path / "state.json")
    a, b, c = _Live("a"), _Live("b"), _Live("c")
    ctl = _Controller([a, b, c])
    ctl.scheduler = s
    # floor(1/3) = floor(2/3) = 0: the first two wait at the rung, whatever their score
    assert _feed(s, a, 10, 0.9) == TrialScheduler.PAUSE
    a.status = "PAUSED"
    assert _feed(s, b, 10, 0.1) == TrialScheduler.PAUSE
    b.status = "PAUSED"
    assert not s.has_promotable()
    assert _feed(s, b, 20, 0.99) == TrialScheduler.PAUSE  # restarted unpromoted (a retry): waits
    assert s.rungs[10]["b"] == 0.1 and s.paused["b"] == 10
    # the third makes floor(3/3) = 1: `a` is now the rung's top and is resumed before anything
    assert _feed(s, c, 10, 0.5) == TrialScheduler.PAUSE
    c.status = "PAUSED"
    assert s.has_promotable()
    assert s.choose_trial_to_run(ctl) is a
    a.status = "PENDING"
    assert s.choose_trial_to_run(ctl) is a  # idempotent: the pending trial, no second promotion
    assert s.promoted[10] == {"a"} and set(s.paused) == {"b", "c"}
    assert not s.has_promotable()
    # the rung's best, but floor(4/3) = 1 trial has left it already: d waits for the quota
    d = _Live("d")
    assert _feed(s, d, 10, 0.95) == TrialScheduler.PAUSE
    assert not s.has_promotable()
    e, f = _Live("e"), _Live("f")
    assert _feed(s, e, 10, 0.0) == TrialScheduler.PAUSE
    assert _feed(s, f, 10, 0.0) == TrialScheduler.PAUSE  # n = 6: a second may go, the best: d
    assert s.has_promotable() and s._promotable(10) == ["d"]
    # a trial that jumps a rung between two reports is recorded there and counts as promoted
    g = _Live("g")
    assert _feed(s, g, 35, 0.2) == TrialScheduler.PAUSE
    assert s.rungs[10]["g"] == s.rungs[30]["g"] == 0.2 and "g" in s.promoted[10]
    assert _feed(s, a, 30, 0.9) == TrialScheduler.PAUSE  # 2 at rung 30: floor(2/3) = 0
    assert _feed(s, _Live("z"), 90, 0.9) == TrialScheduler.STOP  # the budget


def test_at_most_one_in_rf_trials_leaves_a_rung(tmp_path: Path) -> None:
    import random

    s = _promoting(tmp_path / "state.json", max_concurrent=3)
    rng = random.Random(0)
    trials = [_Live(f"t{i}", "PENDING") for i in range(27)]
    ctl = _Controller([], finished=False)
    ctl.scheduler = s
    for trial in trials:  # improving samples, as TPE gives: async ASHA lets most of them pass
        ctl.trials.append(trial)
        trial.status = "RUNNING"
        score = len(ctl.trials) / 27 + rng.random() * 0.1
        if _feed(s, trial, 10, score) == TrialScheduler.PAUSE:
            trial.status = "PAUSED"
        while (resumed := s.choose_trial_to_run(ctl)) is not None and resumed.status == "PAUSED":
            resumed.status = "RUNNING"
        for t in ctl.trials:
            if t.status == "RUNNING":
                t.status = "TERMINATED"
    # every slot the rung allows is used, and no more (the paper's rule promotes ~22 here)
    assert len(s.promoted[10]) == 27 // 3
    best = sorted(s.rungs[10], key=s.rungs[10].get, reverse=True)
    assert best[0] in s.promoted[10]


def test_paused_trials_and_promotions_survive_a_restore(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    first = _promoting(state)
    a, b = _Live("a"), _Live("b")
    assert _feed(first, a, 10, 0.9) == TrialScheduler.PAUSE
    assert _feed(first, b, 10, 0.2) == TrialScheduler.PAUSE
    first.on_trial_remove(None, b)  # stopped while paused: an early stop at its rung
    assert load_stopped(state) == {"b": 10}

    # Tune re-queues every unfinished trial as PENDING after a restore
    second = _promoting(state)
    again = _Live("a", "PENDING")
    second.on_trial_add(None, again)
    assert again.status == "PAUSED"  # it waits for a promotion, not for a free CPU
    fresh = _Live("c", "PENDING")
    second.on_trial_add(None, fresh)
    assert fresh.status == "PENDING"
    assert _feed(second, _Live("b"), 20, 0.99) == TrialScheduler.STOP  # the old decision stands
    assert second.rungs[10] == {"a": 0.9, "b": 0.2}

    saved = json.loads(state.read_text())
    saved["rungs"] = [[20, {}], [60, {}]]
    state.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="use --fresh"):
        _promoting(state).on_trial_add(None, _Live("x", "PENDING"))


def _two_paused_at_10(s: PromotingASHA, finished: bool) -> tuple[_Controller, _Live, _Live]:
    """a (0.4) and b (0.6) paused at rung 10 (floor(2/3) = 0), under a controller."""
    a, b = _Live("a"), _Live("b")
    ctl = _Controller([a, b], finished=finished)
    ctl.scheduler = s
    for trial, score in ((a, 0.4), (b, 0.6)):
        assert _feed(s, trial, 10, score) == TrialScheduler.PAUSE
        trial.status = "PAUSED"
    return ctl, a, b


def test_the_end_game_takes_the_best_to_the_budget_then_stops_the_rest(tmp_path: Path) -> None:
    s = _promoting(tmp_path / "state.json", max_concurrent=1)  # one slot: no fills
    ctl, _, b = _two_paused_at_10(s, finished=False)
    assert s.choose_trial_to_run(ctl) is None  # the searcher may still send better trials
    ctl.finished = True
    assert s.choose_trial_to_run(ctl) is b  # floor(2/3) = 0, but the best must go on
    b.status = "RUNNING"
    assert s.choose_trial_to_run(ctl) is None and not ctl.stopped  # b runs: a may yet rise
    assert _feed(s, b, 30, 0.7) == TrialScheduler.PAUSE
    b.status = "PAUSED"
    assert s.choose_trial_to_run(ctl) is b  # alone at rung 30: promoted again
    b.status = "RUNNING"
    assert _feed(s, b, 90, 0.8) == TrialScheduler.STOP
    b.status = "TERMINATED"
    assert s.choose_trial_to_run(ctl) is None
    assert ctl.stopped == ["a"] and load_stopped(tmp_path / "state.json") == {"a": 10}


def test_the_end_game_lets_a_late_best_go_on(tmp_path: Path) -> None:
    """4 trials, rf 3: the one slot opened with the third; the fourth, the rung's best, came too
    late for it, and goes on once nothing else can happen. The second best does not."""
    s = _promoting(tmp_path / "state.json")
    a, b, c, d = trials = [_Live(tid) for tid in "abcd"]
    ctl = _Controller(trials[:3], finished=False)
    ctl.scheduler = s
    for trial, score in ((a, 0.2), (b, 0.5), (c, 0.1)):
        assert _feed(s, trial, 10, score) == TrialScheduler.PAUSE
        trial.status = "PAUSED"
    assert s.choose_trial_to_run(ctl) is b  # the slot opened by the third arrival
    b.status = "RUNNING"
    ctl.trials.append(d)
    assert _feed(s, d, 10, 0.9) == TrialScheduler.PAUSE  # the best, but floor(4/3) = 1 is used
    d.status = "PAUSED"
    b.status = "TERMINATED"  # (it stopped later, say)
    assert s.choose_trial_to_run(ctl) is None  # the searcher may still send trials
    ctl.finished = True
    assert s.choose_trial_to_run(ctl) is d  # the rung's best goes on after all
    d.status = "TERMINATED"
    assert s.choose_trial_to_run(ctl) is None
    assert sorted(ctl.stopped) == ["a", "c"]


def _at_rung_30(s: PromotingASHA) -> tuple[_Live, _Live, _Live]:
    """p and q pause at rung 30 (floor(n/3) = 0 when they come); r, the third and best, goes on."""
    p, q, r = _Live("p"), _Live("q"), _Live("r")
    assert _feed(s, p, 30, 0.5) == TrialScheduler.PAUSE
    assert _feed(s, q, 30, 0.4) == TrialScheduler.PAUSE
    assert _feed(s, r, 30, 0.9) == TrialScheduler.CONTINUE
    p.status = q.status = "PAUSED"
    return p, q, r


def test_the_end_game_fills_a_free_slot_with_the_next_best(tmp_path: Path) -> None:
    """Issue 17: with no samples left, one trial running and a slot free, the best paused trial
    fills the slot; the fill sets no bound for further fills, and what is left when nothing
    runs ends as before."""
    state = tmp_path / "state.json"
    s = _promoting(state, max_concurrent=2)
    p, q, r = _at_rung_30(s)
    ctl = _Controller([p, q, r], finished=False)
    ctl.scheduler = s
    assert s.choose_trial_to_run(ctl) is None  # samples may still come: the quota rules
    ctl.finished = True
    assert s.choose_trial_to_run(ctl) is p  # 60 steps left for r; p needs 60: it fits
    p.status = "RUNNING"
    assert s.choose_trial_to_run(ctl) is None  # both slots busy
    assert _feed(s, r, 60, 0.95) == TrialScheduler.CONTINUE
    r.status = "TERMINATED"
    assert s.choose_trial_to_run(ctl) is None and not ctl.stopped  # only a fill runs: no chain
    assert _feed(s, p, 90, 0.7) == TrialScheduler.STOP
    p.status = "TERMINATED"
    assert s.choose_trial_to_run(ctl) is None  # nothing runs: q is not its rung's best
    assert ctl.stopped == ["q"]
    saved = read_state(state)
    assert ["p", 30, "fill"] in saved["decisions"] and saved["filled"] == {"30": ["p"]}
    assert saved["promoted"]["30"] == ["r"]  # the fill took no promotion

    # a restore knows the fills
    again = _promoting(state, max_concurrent=2)
    again.on_trial_add(None, _Live("x", "PENDING"))
    assert again.filled[30] == {"p"} and again._filling == {"p"}


def test_a_fill_must_fit_and_takes_no_quota(tmp_path: Path) -> None:
    s = _promoting(tmp_path / "state.json", max_concurrent=2)
    p, q, r = _at_rung_30(s)
    assert _feed(s, r, 75, 0.9) == TrialScheduler.CONTINUE  # 15 steps left
    ctl = _Controller([p, q, r], finished=True)
    ctl.scheduler = s
    assert s.choose_trial_to_run(ctl) is None  # p needs 60 > 2 x 15: it would idle the end
    r.status = "TERMINATED"

    extra = [_Live(tid) for tid in "stw"]
    late, others = extra[2], extra[:2]
    for trial, score in zip(others, (0.3, 0.2), strict=True):
        assert _feed(s, trial, 30, score) == TrialScheduler.PAUSE  # n = 4, 5: k = 1, used by r
        trial.status = "PAUSED"
    assert _feed(s, late, 5, 0.9) == TrialScheduler.CONTINUE  # a new trial, before rung 10
    late.status = "RUNNING"
    ctl.trials += extra
    assert s.choose_trial_to_run(ctl) is p  # `late` has 85 steps left: p fits
    p.status = "RUNNING"
    # it passes rung 10 on the way; at rung 30 n = 6 and k = 2, and only r has used the quota.
    # Had p's fill counted, late would wait.
    assert _feed(s, late, 30, 0.95) == TrialScheduler.CONTINUE


def test_paused_trials_hold_no_slot_and_promotions_go_first(tmp_path: Path) -> None:
    from ray.tune.search import Searcher

    class One(Searcher):
        def suggest(self, trial_id: str) -> dict:
            return {"x": 1}

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
            pass

    state = tmp_path / "state.json"
    s = _promoting(state)
    limiter = PauseAwareLimiter(One(metric="bf", mode="max"), 2, state)
    assert limiter.suggest("a") and limiter.suggest("b")
    assert limiter.suggest("c") is None  # two running
    s.on_trial_add(None, _Live("a"))
    assert _feed(s, _Live("a"), 10, 0.5) == TrialScheduler.PAUSE
    assert limiter.suggest("c") is not None  # `a` waits at a rung: its slot is free
    assert limiter.max_concurrent == 2
    assert limiter.suggest("d") is None
    _feed(s, _Live("b"), 10, 0.1)
    _feed(s, _Live("c"), 10, 0.2)  # floor(3/3) = 1: `a` is promotable
    limiter.on_trial_complete("c")
    assert s.has_promotable() and limiter.suggest("d") is None  # `a` goes first

    generator = PauseAwareVariantGenerator(state_path=state, max_concurrent=1)
    assert generator.max_concurrent == 1


def test_optuna_learns_from_a_trial_when_it_first_pauses(tmp_path: Path) -> None:
    """TPE ignores running trials: a paused trial is told to Optuna as pruned at its first pause
    (with its value there), and nothing more is sent about it, even after a promotion."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state = tmp_path / "state.json"
    s = _promoting(state)
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0))
    limiter = PauseAwareLimiter(searcher, 3, state)
    assert limiter.set_search_properties("bf", "max", {"x": tune.uniform(0, 1)})
    trials = {tid: _Live(tid) for tid in ("a", "b", "c")}
    for tid in trials:
        assert limiter.suggest(tid) is not None

    def result(tid: str, step: int, bf: float) -> None:
        res = {"step": step, "bf": bf, "training_iteration": step // 10}
        decision = s.on_trial_result(None, trials[tid], res)
        if decision != TrialScheduler.STOP:  # Tune's order: scheduler, then searcher
            limiter.on_trial_result(tid, res)

    study = searcher._ot_study
    states = lambda: {t.number: t.state.name for t in study.trials}  # noqa: E731
    result("a", 10, 0.9)  # pauses: floor(1/3) = 0
    assert states()[0] == "PRUNED" and study.trials[0].intermediate_values == {1: 0.9}
    result("b", 10, 0.1)
    result("c", 10, 0.5)  # `a` is now promotable
    assert states() == {0: "PRUNED", 1: "PRUNED", 2: "PRUNED"}
    s.choose_trial_to_run(_Controller([trials["a"]]))
    result("a", 20, 0.95)  # after the promotion: no second word to Optuna (it would warn)
    assert study.trials[0].intermediate_values == {1: 0.9}
    limiter.on_trial_complete("a", {"step": 90, "bf": 0.97})
    assert "a" not in limiter.live_trials and states()[0] == "PRUNED"


# ---------------------------------------------------------------------- late rungs (issue 18)


def test_rung_steps_drop_rungs_in_the_last_tenth_of_the_budget() -> None:
    assert rung_steps(333, 3, 3000) == [333, 999]  # not 2997: 3 steps before the end
    assert rung_steps(333, 3, 3330) == [333, 999, 2997]  # 2997 = 90% of 3330: kept
    assert rung_steps(60, 3, 600) == [60, 180, 540]  # the default grace (max // 10): 540 = 90%
    assert rung_steps(61, 3, 600) == [61, 183]  # 549 > 540
    assert rung_steps(20, 3, 60) == [20]  # search_spaces/smoke.yaml
    assert rung_steps(10, 3, 40) == [10, 30]  # smoke.yaml --smoke (grace 10, 40 steps)
    assert rung_steps(100, 3, 600) == [100, 300]  # base.yaml
    assert rung_steps(500, 3, 6000) == [500, 1500, 4500]  # childes.yaml
    assert rung_steps(95, 3, 100) == []  # the only rung would be in the last tenth
    assert rung_steps(100, 3, 100) == []  # the budget itself is never a rung


def test_persistent_asha_judges_at_the_same_rungs(tmp_path: Path) -> None:
    """Ray's ASHA would stop a trial at 2997 of 3000 steps; PersistentASHA has no rung there."""
    kwargs = dict(time_attr="step", metric="bf", mode="max", max_t=3000, grace_period=333)
    ours = PersistentASHA(state_path=tmp_path / "s.json", reduction_factor=3, **kwargs)
    assert sorted(m for m, _ in ours._brackets[0]._rungs) == rung_steps(333, 3, 3000)
    two = PersistentASHA(state_path=tmp_path / "b.json", reduction_factor=3, brackets=2, **kwargs)
    assert [sorted(m for m, _ in b._rungs) for b in two._brackets] == [[333, 999], [999]]
    plain = ASHAScheduler(reduction_factor=3, **kwargs)
    assert sorted(m for m, _ in plain._brackets[0]._rungs) == [333, 999, 2997]
    good, late = _Trial("good"), _Trial("late")
    for s in (ours, plain):
        for t in (good, late):
            s.on_trial_add(None, t)
        for step in (333, 999, 2997):
            assert _feed(s, good, step, 0.9) == TrialScheduler.CONTINUE
        assert _feed(s, late, 333, 0.95) == TrialScheduler.CONTINUE
        assert _feed(s, late, 999, 0.95) == TrialScheduler.CONTINUE
    assert _feed(plain, late, 2997, 0.1) == TrialScheduler.STOP
    assert _feed(ours, late, 2997, 0.1) == TrialScheduler.CONTINUE


class _Storage:
    """The parts of Ray's StorageContext that `_push_trial_logs` uses, on the local disk."""

    def __init__(self, trial_fs_path: Path) -> None:
        import pyarrow.fs

        self.storage_filesystem = pyarrow.fs.LocalFileSystem()
        self.trial_fs_path = trial_fs_path.as_posix()
        self.waited = 0

    @property
    def syncer(self) -> _Storage:
        return self

    def wait(self) -> None:
        self.waited += 1


class _StagedTrial:
    def __init__(self, local: Path, remote: Path) -> None:
        self.trial_id, self.local_path, self.storage = "t", str(local), _Storage(remote)
        self.checkpoint = "a checkpoint"
        self.status = "PAUSED"


def test_a_resumed_trial_s_logs_go_to_storage_first(tmp_path: Path) -> None:
    """Tune puts the storage copy of result.json back when a trial restarts: before Tune's
    loggers see it start, the driver's copy (which holds the rung result) goes to storage."""
    from seg_tune.sweep.tracking import KeepTrialLogs, _push_trial_logs

    local, remote = tmp_path / "staging", tmp_path / "storage"
    local.mkdir()
    trial = _StagedTrial(local, remote)
    KeepTrialLogs().on_trial_start(0, [], trial)  # a new trial: no logs, no wait for uploads
    assert trial.storage.waited == 0 and not remote.exists()
    (local / "result.json").write_text('{"step": 10}\n{"step": 20}\n')
    (local / "progress.csv").write_text("step\n10\n20\n")
    KeepTrialLogs().on_trial_start(0, [], trial)  # no folder in storage yet
    assert (remote / "result.json").read_text() == '{"step": 10}\n{"step": 20}\n'
    assert (remote / "progress.csv").read_text() == "step\n10\n20\n"
    assert trial.storage.waited == 1  # an upload in flight finishes first

    (local / "result.json").write_text('{"step": 10}\n{"step": 20}\n{"step": 30}\n')
    (remote / "progress.csv").write_text("step\n10\n20\n30\n40\n")  # larger: left alone
    (local / "progress.csv").unlink()
    _push_trial_logs(trial)
    assert (remote / "result.json").read_text().count("step") == 3
    assert (remote / "progress.csv").read_text() == "step\n10\n20\n30\n40\n"


def test_every_decision_is_recorded(tmp_path: Path) -> None:
    s = _promoting(tmp_path / "state.json", max_concurrent=1)
    a, b, c = _Live("a"), _Live("b"), _Live("c")
    ctl = _Controller([a, b, c])
    ctl.scheduler = s
    assert _feed(s, a, 10, 0.5) == TrialScheduler.PAUSE
    a.status = "PAUSED"
    assert _feed(s, b, 10, 0.9) == TrialScheduler.PAUSE
    b.status = "PAUSED"
    assert _feed(s, c, 10, 0.1) == TrialScheduler.PAUSE  # b qualifies: floor(3/3) = 1
    c.status = "PAUSED"
    assert s.choose_trial_to_run(ctl) is b
    b.status = "TERMINATED"
    s.on_trial_complete(ctl, b, {"step": 90})
    ctl.finished = True
    assert s.choose_trial_to_run(ctl) is None  # end game: a and c stop, b ranks first
    assert sorted(ctl.stopped) == ["a", "c"]
    saved = read_state(tmp_path / "state.json")
    assert saved["decisions"] == [
        ["a", 10, "pause"],
        ["b", 10, "pause"],
        ["c", 10, "pause"],
        ["b", 10, "promote"],
        ["a", 10, "stop"],
        ["c", 10, "stop"],
    ]


# ---------------------------------------------------------------------- the random/grid searcher


def _experiment(tmp_path: Path, num_samples: int) -> dict[str, Any]:
    """A Tune experiment of one uniform parameter `x`, for a search algorithm's
    `add_configurations`."""
    from ray import tune

    def trainable(config: dict) -> None:
        pass

    return {
        "pause_aware": {
            "run": trainable,
            "config": {"x": tune.uniform(0, 1)},
            "num_samples": num_samples,
            "storage_path": str(tmp_path / "ray_results"),
        }
    }


def test_variant_generator_frees_paused_slots_and_waits_for_promotions(tmp_path: Path) -> None:
    """`PauseAwareVariantGenerator` (random and grid search under pausing ASHA), driven through
    Tune's own trial generation from a real experiment spec, with no Ray cluster: a paused trial
    holds no slot, and no new trial starts while a paused trial is due for promotion."""
    from ray.tune.experiment import Trial
    from ray.tune.search import BasicVariantGenerator

    experiment = _experiment(tmp_path, num_samples=6)
    state = tmp_path / "state.json"
    s = _promoting(state, max_concurrent=2)
    generator = PauseAwareVariantGenerator(state_path=state, max_concurrent=2, random_state=0)
    generator.add_configurations(experiment)
    plain = BasicVariantGenerator(max_concurrent=2, random_state=0)  # Tune's, for contrast
    plain.add_configurations(experiment)

    a, b = generator.next_trial(), generator.next_trial()
    assert isinstance(a, Trial) and isinstance(b, Trial) and a.trial_id != b.trial_id
    assert 0 <= a.config["x"] <= 1
    assert isinstance(plain.next_trial(), Trial) and isinstance(plain.next_trial(), Trial)
    assert generator.next_trial() is None  # two running, none paused: the limit holds
    assert plain.next_trial() is None

    assert _feed(s, a, 10, 0.9) == TrialScheduler.PAUSE  # floor(1/3) = 0: `a` waits at rung 10
    assert not s.has_promotable()
    # 1 running + 1 paused = max_concurrent, yet 1 running < 2: a new trial starts
    c = generator.next_trial()
    assert isinstance(c, Trial) and c.trial_id not in {a.trial_id, b.trial_id}
    assert generator.max_concurrent == 2  # raised only while suggesting
    assert plain.next_trial() is None  # Tune's own generator counts the paused trial's slot
    assert generator.next_trial() is None  # b and c run: both slots are taken

    # b and c pause too: floor(3/3) = 1 and `a` is the rung's best, due for promotion
    assert _feed(s, b, 10, 0.1) == TrialScheduler.PAUSE
    assert _feed(s, c, 10, 0.2) == TrialScheduler.PAUSE
    assert s.has_promotable()
    assert generator.next_trial() is None  # nothing runs, but the promotion goes first

    # the scheduler resumes `a`; then one runs and two wait unpromotable: a new trial starts
    live = [_Live(t.trial_id, "PAUSED") for t in (a, b, c)]
    assert s.choose_trial_to_run(_Controller(live)).trial_id == a.trial_id
    assert not s.has_promotable()
    d = generator.next_trial()
    assert isinstance(d, Trial) and d.trial_id not in {a.trial_id, b.trial_id, c.trial_id}
    assert generator.next_trial() is None  # a and d run
    generator.on_trial_complete(a.trial_id)
    assert isinstance(generator.next_trial(), Trial)  # a finished: its slot is free


def test_the_search_stays_open_while_trials_wait_at_rungs(tmp_path: Path) -> None:
    """Once every sample is out, the pause-aware search algorithms (random/grid, and Optuna in
    `PauseAwareGenerator`) say they are finished only when no trial waits at a rung, so that
    Tune keeps a process for the end game's promotions (reuse_actors); they suggest nothing
    more meanwhile (num_samples holds)."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from seg_tune.sweep.asha import PauseAwareGenerator

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    experiment = _experiment(tmp_path, num_samples=2)
    state = tmp_path / "state.json"
    s = _promoting(state, max_concurrent=2)
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0))
    limiter = PauseAwareLimiter(searcher, 2, state)
    assert limiter.set_search_properties("bf", "max", {"x": tune.uniform(0, 1)})
    optuna_gen = PauseAwareGenerator(limiter)
    variant_gen = PauseAwareVariantGenerator(state_path=state, max_concurrent=2, random_state=0)
    for generator in (optuna_gen, variant_gen):
        generator.add_configurations(experiment)
        a, b = generator.next_trial(), generator.next_trial()
        assert a is not None and b is not None
        generator.on_trial_complete(b.trial_id)
        assert generator.next_trial() is None  # both samples are out
        assert generator.is_finished()  # (nothing waits at a rung yet)
        assert _feed(s, a, 10, 0.9) == TrialScheduler.PAUSE
        assert s.paused and not generator.is_finished()  # `a` waits: still open
        for _ in range(3):
            assert generator.next_trial() is None  # and no third sample
        # Tune's trials decide: `a` PAUSED keeps it open; once Tune has none, it is finished
        s.choose_trial_to_run(_Controller([_Live(a.trial_id, "PAUSED")]))
        assert not generator.is_finished()
        # its end closes the search at once: Tune waits for a finished search before it asks
        # the scheduler again (blocking up to 600 s in `_update_trial_queue`)
        s.on_trial_complete(_Controller([_Live(a.trial_id, "TERMINATED")]), a, {})
        assert generator.is_finished()
        s.paused.clear()
        s.rungs[10].clear()
        s.stopped.clear()
        s.promoted[10].clear()


def test_a_released_trial_that_tune_still_shows_paused_is_run(tmp_path: Path) -> None:
    """A trial promoted (or filled) but not yet started by Tune stays PAUSED in Tune's eyes and
    is in none of the scheduler's lists: it is handed out again rather than left waiting."""
    s = _promoting(tmp_path / "state.json", max_concurrent=1)
    ctl, _, b = _two_paused_at_10(s, finished=True)
    assert s.choose_trial_to_run(ctl) is b  # the end game releases b
    assert "b" not in s.paused and b.status == "PAUSED"  # Tune has not started it yet
    assert s.choose_trial_to_run(ctl) is b  # asked again: b, not a stop of a
    assert not ctl.stopped
