"""The schedulers' state as a snapshot plus an append-only journal (`seg_tune.sweep.journal`):
the state read back equals the live one after every decision, a restore decides as the live
scheduler would, a line cut short by a kill is ignored, the snapshot is written at a bounded
rate, and what is written per decision does not grow with the trials (issue 14)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from ray.tune.schedulers import TrialScheduler
from test_asha import _Controller, _feed, _Live, _promoting, _scheduler, _Trial

from seg_tune.errors import ConfigError
from seg_tune.sweep import journal
from seg_tune.sweep.asha import check_state, load_paused, load_stopped, read_state


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _live_state(s: Any) -> dict[str, Any]:
    return json.loads(json.dumps(s.state()))  # as JSON gives it back (string keys, lists)


def _drive_promoting(s: Any, rng: random.Random, trials: int) -> list[tuple[str, str]]:
    """Random arrivals at rungs 10/30 of max_t 90, with promotions, fills and stops through the
    controller; checks the state read back after every call. Returns the decisions taken."""
    live = [_Live(f"t{i}") for i in range(trials)]
    ctl = _Controller(live[:1])
    ctl.scheduler = s
    taken = []
    started = 1
    step = {t.trial_id: 0 for t in live}
    for _ in range(trials * 8):
        running = [t for t in ctl.trials if t.status == "RUNNING"]
        if not running or rng.random() < 0.2:
            if started < trials:
                ctl.trials.append(live[started])
                started += 1
            else:
                ctl.finished = True
            pick = s.choose_trial_to_run(ctl)
            if pick is not None:
                pick.status = "RUNNING"
                taken.append((pick.trial_id, "run"))
        running = [t for t in ctl.trials if t.status == "RUNNING"]
        if not running:
            if ctl.finished and not s.choose_trial_to_run(ctl):
                break
            continue
        trial = rng.choice(running)
        step[trial.trial_id] += 10
        action = _feed(s, trial, step[trial.trial_id], rng.random())
        taken.append((trial.trial_id, action))
        if action == TrialScheduler.PAUSE:
            trial.status = "PAUSED"
        elif action == TrialScheduler.STOP:
            trial.status = "TERMINATED"
            s.on_trial_complete(ctl, trial, {})
        assert read_state(s._state_path) == _live_state(s)
    return taken


def test_the_promotion_state_read_back_is_the_live_state_after_every_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "SNAPSHOT_EVERY_S", 1e9)  # one snapshot: all in the journal
    state = tmp_path / "scheduler_state.json"
    s = _promoting(state)
    taken = _drive_promoting(s, random.Random(0), trials=40)
    whats = {what for _, _, what in s.decisions}
    assert {"pause", "promote", "continue"} <= whats, whats  # the run went through them
    assert json.loads(state.read_text())[journal.SEQ_KEY] == 0  # the snapshot stayed empty
    lines = journal.journal_path(state).read_text().splitlines()
    assert len(lines) >= len([t for t in taken if t[1] != "run"]) // 2

    # a restore (a new scheduler) reads the same state and goes on deciding alike
    again = _promoting(state)
    again.on_trial_add(None, _Live("new", "PENDING"))
    assert _live_state(again) == _live_state(s)
    assert load_paused(state) == s.paused and load_stopped(state) == s.stopped


def test_persistent_asha_state_read_back_is_the_live_state(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    s = _scheduler(state)
    rng = random.Random(1)
    trials = [_Trial(f"t{i}") for i in range(30)]
    for t in trials:
        s.on_trial_add(None, t)
        for step in (10, 30, 60):
            if _feed(s, t, step, rng.random()) == TrialScheduler.STOP:
                break
        if rng.random() < 0.3:
            s.on_trial_complete(None, t, {"step": step, "bf": 0.5})
        assert read_state(state) == _live_state(s)
    assert s.stopped and load_stopped(state) == s.stopped
    again = _scheduler(state)
    again.on_trial_add(None, _Trial("late"))
    assert {k: v for k, v in _live_state(again).items() if k != "trial_bracket"} == {
        k: v for k, v in _live_state(s).items() if k != "trial_bracket"
    }
    assert _live_state(again)["trial_bracket"] == {**_live_state(s)["trial_bracket"], "late": 0}


def test_the_snapshot_is_written_at_a_bounded_rate(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    clock = _Clock()
    s = _promoting(state)
    s._journal = journal.Journal(state, snapshot_every_s=30.0, clock=clock)
    writes = []
    real = s._journal.snapshot
    s._journal.snapshot = lambda st: (writes.append(clock.now), real(st))[-1]  # type: ignore
    for i in range(200):
        clock.now = i * 1.0  # a decision a second
        _feed(s, _Live(f"t{i}"), 10, i / 200)
    assert writes == [0.0, *[float(t) for t in range(30, 200, 30)]]  # every 30 s, not per call
    assert read_state(state) == _live_state(s)


def test_what_a_decision_writes_does_not_grow_with_the_trials(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    s = _promoting(state)
    sizes = []
    for i in range(1000):
        before = journal.journal_path(state).stat().st_size if i else 0
        _feed(s, _Live(f"trial_{i:04d}"), 10, (i * 7919 % 1000) / 1000)
        sizes.append(journal.journal_path(state).stat().st_size - before)
    assert max(sizes[-100:]) <= max(sizes[:100]) + 8  # bytes per decision, flat
    assert len(read_state(state)["rungs"][0][1]) == 1000


def test_a_line_cut_short_by_a_kill_is_ignored_and_overwritten(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    s = _promoting(state)
    a, b = _Live("a"), _Live("b")
    assert _feed(s, a, 10, 0.9) == TrialScheduler.PAUSE
    log = journal.journal_path(state)
    whole = log.read_text()
    log.write_text(whole + '{"seq": 2, "ops": [["rung", 10, "b"')  # killed while writing b's
    assert read_state(state)["rungs"][0][1] == {"a": 0.9}
    again = _promoting(state)
    assert _feed(again, b, 10, 0.2) == TrialScheduler.PAUSE
    assert read_state(state)["rungs"][0][1] == {"a": 0.9, "b": 0.2}
    assert log.read_text().startswith(whole) and log.read_text().count("\n") == 2


def test_a_damaged_journal_line_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    state = tmp_path / "scheduler_state.json"
    s = _promoting(state)
    for i in range(3):
        _feed(s, _Live(f"t{i}"), 10, 0.5)
    log = journal.journal_path(state)
    lines = log.read_text().splitlines()
    lines[1] = "garbage"
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"scheduler_state\.journal\.jsonl: line 2 .*--fresh"):
        read_state(state)
    with pytest.raises(ConfigError, match=r"^cannot resume: .*journal\.jsonl: line 2 .*--fresh$"):
        check_state(state)  # what a resume says, before Tune starts
    lines[1] = json.dumps({"seq": 7, "ops": []})
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2 has seq 7, expected 2"):
        _promoting(state).on_trial_add(None, _Live("x", "PENDING"))


def test_an_old_state_file_without_a_journal_reads_as_before(tmp_path: Path) -> None:
    """Format 2 (before the journal): the whole state in scheduler_state.json."""
    state = tmp_path / "scheduler_state.json"
    old = {
        "format": 2,
        "kind": "promotion",
        "time_attr": "step",
        "metric": "bf",
        "mode": "max",
        "max_t": 90,
        "reduction_factor": 3,
        "rungs": [[10, {"a": 0.9, "b": 0.2}], [30, {}]],
        "promoted": {"10": [], "30": []},
        "paused": {"a": 10},
        "first_pause": {"a": 10},
        "stopped": {"b": 10},
        "decisions": [["a", 10, "pause"], ["b", 10, "pause"], ["b", 10, "stop"]],
    }
    state.write_text(json.dumps(old))
    assert load_paused(state) == {"a": 10} and load_stopped(state) == {"b": 10}
    check_state(state)  # readable: a resume goes on
    s = _promoting(state)
    again = _Live("a", "PENDING")
    s.on_trial_add(None, again)
    assert again.status == "PAUSED" and s.rungs[10] == {"a": 0.9, "b": 0.2}
    assert _feed(s, _Live("c"), 10, 0.5) == TrialScheduler.PAUSE
    assert read_state(state)["rungs"][0][1] == {"a": 0.9, "b": 0.2, "c": 0.5}


def test_a_rung_ranks_as_a_stable_sort_by_score_whatever_the_arrivals(tmp_path: Path) -> None:
    """The rungs' rankings kept sorted as results come (no sort per decision) pick the trials
    the old rule did: the top floor(n / rf) by score, ties in arrival order, less those gone,
    up to the quota; also after a restore, which rebuilds them from the snapshot."""
    rng = random.Random(3)
    s = _promoting(tmp_path / "scheduler_state.json")
    for i in range(300):
        score = rng.choice([0.1, 0.5, 0.5, 0.9, float("nan"), rng.random()])
        _feed(s, _Live(f"t{i}"), 10, score)
        if i % 37 == 0 and s._due():
            s._promote(s._due()[0], 10)
        recorded = s.rungs[10]
        k = int(len(recorded) / 3 + 1e-9)
        top = sorted(recorded, key=lambda tid: recorded[tid], reverse=True)[:k]
        gone = s.promoted[10] | s.filled[10]
        old = [tid for tid in top if tid not in gone][: max(0, k - len(s.promoted[10]))]
        assert s._promotable(10) == old, i
    again = _promoting(tmp_path / "scheduler_state.json")
    again.on_trial_add(None, _Live("late", "PENDING"))
    assert again._promotable(10) == s._promotable(10) and again._record.ranked == s._record.ranked
