"""ASHA schedulers whose decisions survive an experiment restore.

Ray Tune does not save scheduler state with the experiment (ray issue 30838): after a restore the
rungs are empty, so a resumed sweep would let bad trials run to the end and judge new trials
against nothing. Both schedulers here journal every change of their state before acting on it, as
one line appended to `scheduler_state.journal.jsonl`, snapshot the whole state in
`scheduler_state.json` (atomically) at most every 30 s (`seg_tune.sweep.journal`: a state that
grows with the trials is not rewritten whole per decision), and read both back the first time
they are used after a restore. `read_state` gives the state as of the journal's last line:
- `PromotingASHA` (`scheduler.promotion: pause`, the default for one-worker trials): a trial
  pauses at each rung until it ranks among the rung's best within successive halving's budget;
  with `PauseAwareLimiter` / `PauseAwareVariantGenerator`, the searchers' concurrency limits that
  do not count paused trials.
- `PersistentASHA` (`promotion: continue`): Ray's ASHAScheduler (stop or continue on arrival).

`PersistentASHA`'s state (format 2; `PromotingASHA` documents its format 3):
    {"format": 2, "time_attr": "step", "metric": ..., "mode": ...,
     "brackets": [{"rungs": [[milestone, {trial_id: signed reward}], ...]}, ...],
     "trial_bracket": {trial_id: bracket index}, "num_stopped": int,
     "stopped": {trial_id: step at which ASHA stopped it}}
Its journal's ops: ["bracket", trial_id, index or null (ASHA forgot the trial)],
["rung", bracket index, milestone, trial_id, signed reward], ["num_stopped", n],
["stopped", trial_id, step]. Format 1 was the same state rewritten on every change, without a
journal; it reads as a snapshot with nothing journaled after it.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator

from seg_tune.errors import ConfigError
from seg_tune.sweep import journal
from seg_tune.sweep.rungs import keeps_rung, rung_steps

# --------------------------------------------------------------------- Ray's internals

# The Ray minor these classes were tested with. They subclass Ray's ASHAScheduler,
# ConcurrencyLimiter and BasicVariantGenerator and use their private state, which Ray changes
# between minors without notice: ASHAScheduler's `_brackets`, `_trial_info`, `_max_t`,
# `_time_attr`, `_metric`, `_mode`, `_num_stopped`, a bracket's `_rungs`, and
# BasicVariantGenerator's `_live_trials`. `seg_tune.cli.run` calls `check_ray` before Ray starts.
TESTED_RAY = (2, 60)


def check_ray(version: str | None = None) -> None:
    """Refuse (ConfigError, exit 2) a Ray whose minor is not the tested one."""
    if version is None:
        version = importlib.metadata.version("ray")
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        found = ()
    if found != TESTED_RAY:
        tested = ".".join(map(str, TESTED_RAY))
        raise ConfigError(
            f"ray {version} is installed; seg_tune's schedulers are tested with ray {tested}.x "
            f"only: install it with pip install 'ray[tune,train,default]=={tested}.*' "
            "(or re-run ./setup.sh)"
        )


FORMAT_VERSION = 2
READS_FORMATS = (1, 2)


class _SavedState:
    """A scheduler's state in a snapshot and a journal (`seg_tune.sweep.journal`): each change
    journaled before it is acted on, read back once."""

    _state_path: str
    _loaded: bool
    _journal: journal.Journal

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _take_ops(self) -> list[list[Any]]:
        """The changes since the last `_save`, as journal ops."""
        raise NotImplementedError

    def _save(self) -> None:
        self._journal.record(self._take_ops(), self.state)

    def _saved_once(self) -> journal.Saved | None:
        """The saved state the first time this is called, if there is one; else None (and the
        first time, with nothing saved, an empty snapshot is written: the file exists from the
        first trial on)."""
        if self._loaded:
            return None
        self._loaded = True
        saved = journal.read(self._state_path)
        if saved.snapshot is None:
            self._journal.start_fresh(self.state())
            return None
        self._journal.continue_from(saved)
        return saved

    def _mismatch(self) -> ValueError:
        return ValueError(
            f"{self._state_path}: scheduler state does not match this scheduler; use --fresh"
        )


class PersistentASHA(_SavedState, ASHAScheduler):
    def __init__(self, *, state_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for bracket in self._brackets:  # Ray's rungs, less those in the budget's last 10%
            bracket._rungs = [(m, rec) for m, rec in bracket._rungs if keeps_rung(m, self._max_t)]
        self._state_path = str(state_path)
        self._journal = journal.Journal(state_path)
        self._loaded = False
        self.stopped: dict[str, int] = {}
        # what the journal holds, by op key less its value: Ray's ASHA changes its own state,
        # and `_note` journals what changed for one trial (O(rungs), not O(trials))
        self._journaled: dict[tuple[Any, ...], Any] = {}
        self._ops: list[list[Any]] = []

    # ------------------------------------------------------------------ persistence

    def _note(self, trial_id: str, before: Any = None) -> None:
        """Queue ops for what changed of trial `trial_id`'s records (`before`: its bracket
        before Ray's hook ran, which may have forgotten the trial)."""
        index = {id(b): i for i, b in enumerate(self._brackets)}
        now = self._trial_info.get(trial_id)
        self._set(("bracket", trial_id), None if now is None else index[id(now)])
        for bracket in {id(b): b for b in (before, now) if b is not None}.values():
            i = index[id(bracket)]
            for milestone, recorded in bracket._rungs:
                if trial_id in recorded:
                    self._set(("rung", i, milestone, trial_id), recorded[trial_id])
        self._set(("num_stopped",), self._num_stopped)
        if trial_id in self.stopped:
            self._set(("stopped", trial_id), self.stopped[trial_id])

    def _set(self, key: tuple[Any, ...], value: Any) -> None:
        old = self._journaled.get(key, _UNSET)
        if old is _UNSET or not (old == value or (old != old and value != value)):  # NaN
            self._journaled[key] = value
            self._ops.append([*key, value])

    def _take_ops(self) -> list[list[Any]]:
        ops, self._ops = self._ops, []
        return ops

    def state(self) -> dict[str, Any]:
        index = {id(b): i for i, b in enumerate(self._brackets)}
        return {
            "format": FORMAT_VERSION,
            "time_attr": self._time_attr,
            "metric": self._metric,
            "mode": self._mode,
            "brackets": [
                {"rungs": [[milestone, dict(recorded)] for milestone, recorded in b._rungs]}
                for b in self._brackets
            ],
            "trial_bracket": {tid: index[id(b)] for tid, b in self._trial_info.items()},
            "num_stopped": self._num_stopped,
            "stopped": dict(self.stopped),
        }

    def _load_once(self) -> None:
        found = self._saved_once()
        if found is None:
            return
        saved = _persistent_state(found)
        if saved.get("format") not in READS_FORMATS or len(saved["brackets"]) != len(
            self._brackets
        ):
            raise self._mismatch()
        for bracket, saved_bracket in zip(self._brackets, saved["brackets"], strict=True):
            by_milestone = {float(m): rec for m, rec in saved_bracket["rungs"]}
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        for tid, i in saved["trial_bracket"].items():
            self._trial_info[tid] = self._brackets[i]
        self._num_stopped = saved["num_stopped"]
        self.stopped.update(saved["stopped"])
        for i, saved_bracket in enumerate(saved["brackets"]):  # the journal holds these already
            for milestone, recorded in saved_bracket["rungs"]:
                for tid, value in recorded.items():
                    self._journaled[("rung", i, milestone, tid)] = value
        for tid, i in saved["trial_bracket"].items():
            self._journaled[("bracket", tid)] = i
        self._journaled[("num_stopped",)] = self._num_stopped
        for tid, step in self.stopped.items():
            self._journaled[("stopped", tid)] = step

    # ------------------------------------------------------------------ scheduler hooks

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        if trial.trial_id not in self._trial_info:
            super().on_trial_add(tune_controller, trial)
            self._note(trial.trial_id)
            self._save()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load_once()
        if trial.trial_id in self.stopped:  # a decision taken before a restore stands
            return TrialScheduler.STOP
        if trial.trial_id not in self._trial_info:  # restored trial ASHA never saw
            super().on_trial_add(tune_controller, trial)
        action = super().on_trial_result(tune_controller, trial, result)
        step = result.get(self._time_attr)
        if action == TrialScheduler.STOP and step is not None and step < self._max_t:
            self.stopped[trial.trial_id] = int(step)  # stopped early, not at the budget's end
        self._note(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load_once()
        before = self._trial_info.get(trial.trial_id)
        if before is not None:
            super().on_trial_complete(tune_controller, trial, result)
            self._note(trial.trial_id, before)
            self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        before = self._trial_info.get(trial.trial_id)
        if before is not None:
            super().on_trial_remove(tune_controller, trial)
            self._note(trial.trial_id, before)
            self._save()


_UNSET = object()


def _persistent_state(saved: journal.Saved) -> dict[str, Any]:
    """`PersistentASHA`'s state: the snapshot with the journal's ops applied."""
    state = dict(saved.snapshot or {})
    for op in saved.ops:
        kind = op[0]
        if kind == "bracket":
            if op[2] is None:
                state["trial_bracket"].pop(op[1], None)
            else:
                state["trial_bracket"][op[1]] = op[2]
        elif kind == "rung":
            _, i, milestone, tid, value = op
            rungs = state["brackets"][i]["rungs"]
            next(rec for m, rec in rungs if float(m) == float(milestone))[tid] = value
        elif kind == "num_stopped":
            state["num_stopped"] = op[1]
        elif kind == "stopped":
            state["stopped"][op[1]] = op[2]
        else:
            raise ValueError(f"unknown op {op!r} in the journal of PersistentASHA's state")
    return state


def check_state(state_path: str | Path) -> None:
    """Refuse (ConfigError, one line naming the file) a saved scheduler state that cannot be
    read back, before a resume starts Tune on it."""
    try:
        read_state(state_path)
    except (ValueError, KeyError, TypeError, IndexError, StopIteration) as err:
        raise ConfigError(f"cannot resume: {err}") from None


def read_state(state_path: str | Path) -> dict[str, Any]:
    """A scheduler's saved state as of its journal's last line ({} if nothing is saved): the
    form `state()` gives, less the snapshot's `journal_seq`."""
    saved = journal.read(state_path)
    if saved.snapshot is None:
        return {}
    if saved.snapshot.get("kind") == "promotion":
        state = _PromotionRecord.from_saved(saved).to_json()
        header = {k: v for k, v in saved.snapshot.items() if k not in state}
        state = {**header, **state}
    else:
        state = _persistent_state(saved)
    state.pop(journal.SEQ_KEY, None)
    return state


def load_stopped(state_path: Path) -> dict[str, int]:
    """Trials ASHA stopped early, with the step, from a saved state file (empty if none)."""
    return _load_section(state_path, "stopped")


def load_paused(state_path: Path) -> dict[str, int]:
    """Trials waiting at a rung for a promotion, with the rung, from a saved state file (empty
    if none, or for Ray's ASHA, which never pauses)."""
    return _load_section(state_path, "paused")


def _load_section(state_path: Path, key: str) -> dict[str, int]:
    return dict(read_state(state_path).get(key, {}))


# ====================================================================== promotion ASHA

PROMOTION_FORMAT = 3
PROMOTION_READS = (2, 3)

# The end game's fills: a paused trial may fill a free slot if its remaining steps are at most
# this many times the longest committed trial's (PromotingASHA's docstring says why 2).
FILL_LIMIT = 2.0


class PromotingASHA(_SavedState, TrialScheduler):
    """ASHA that promotes by pausing, with successive halving's budget per rung.

    Ray's `ASHAScheduler` decides stop-or-continue the moment a trial reaches a rung, against the
    rung's results so far: the first trials always go on, and a searcher whose samples improve
    (TPE) sees nearly every new trial pass the cut-off (measured in BENCHMARKS.md: up to half the
    trials ran to the end). The promotion rule of Li et al. 2020 (arXiv:1810.05934, algorithm 2:
    promote any trial of the rung's top floor(n/rf) not yet promoted) does not help there: with
    improving samples every newcomer is in the top (`bench/promotion_rules.py`: of 27 improving
    arrivals, 22 promoted; Ray's rule 25). Here a trial reaching rung k *pauses* (checkpointed at
    that step) unless it is among the best not-yet-promoted trials of the rung's top
    k = floor(n_k / rf) AND fewer than k trials have left rung k; a paused trial is resumed as
    soon as it qualifies (the quota grows with every rf trials the rung records). So at most
    floor(n_k / rf) trials ever leave rung k, the budget of synchronous successive halving,
    without ever waiting for a rung to fill.

    Paused trials hold no slot: the searcher may start a new trial when fewer than
    `max_concurrent` trials run (`PauseAwareLimiter`, `PauseAwareVariantGenerator`), but a
    promotable paused trial goes first.

    The end game, once the searcher has no more samples:
    - While trials run and a slot is free, the slot is filled with the best paused trial (the
      highest rung first, then the best score there) whose remaining steps are at most
      `FILL_LIMIT` (2) times the steps the longest-running committed trial has left. A fill so
      bounded uses at least as much slot-time that would have stood idle as it can add to the
      sweep's wall time (steps stand in for time: the trials of one space train at similar
      speeds). Fills are beyond the quota: they take no promotion from a later arrival, and only
      committed trials (new ones, or trials that went on under the quota) set the bound, so fills
      never chain. A fill reaching its next rung is judged there like any trial.
    - When nothing runs, each rung's best trial, if it waits, is promoted, and so is the best
      waiting trial of a rung nobody left (with few samples floor(n/rf) can be 0): the best trial
      of every rung goes on, whatever the order of arrival. Then every trial still paused is
      stopped where it paused.

    Its state (rungs, promotions, paused trials, stop decisions) is journaled at every change
    (module docstring) and read back after a restore, where Tune re-queues paused trials as
    PENDING: `on_trial_add` marks them PAUSED again so they wait for a promotion.

    State (`read_state`; the snapshot `scheduler_state.json` adds `journal_seq`), format 3:
        {"format": 3, "kind": "promotion", "time_attr", "metric", "mode", "max_t",
         "reduction_factor", "rungs": [[step, {trial_id: signed score}], ...],
         "promoted": {step: [trial_id, ...]}, "filled": {step: [trial_id, ...]},
         "paused": {trial_id: step},
         "first_pause": {trial_id: reported step}, "stopped": {trial_id: its rung when stopped},
         "decisions": [[trial_id, rung, what], ...]}
    `decisions` lists every decision in order; `what` is "continue" (went on from the rung on
    arrival, or passed it between two reports), "pause", "promote" (resumed when it qualified),
    "fill" (resumed into a free slot by the end game, beyond the quota), "end_game" (resumed by
    the end game when nothing ran) or "stop" (stopped where it paused). Files written before
    fills existed have no "filled"; they read as none. The journal's ops (`_PromotionRecord.
    apply`): ["rung", step, trial_id, score], ["promoted", step, trial_id], ["filled", step,
    trial_id], ["paused", trial_id, step, reported step], ["unpaused", trial_id], ["stopped",
    trial_id, step], ["decision", trial_id, rung, what]. Format 2 was the same state rewritten on
    every change, without a journal.

    A paused trial that goes on again restarts from its rung checkpoint; `seg_tune.sweep.tracking.
    KeepTrialLogs` keeps Tune from losing its rung result then.
    """

    def __init__(
        self,
        *,
        state_path: str | Path,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
        max_concurrent: int,
        time_attr: str = "step",
    ) -> None:
        super().__init__()
        self._state_path = str(state_path)
        self.time_attr = time_attr
        self._max_t = max_t
        self._rf = reduction_factor
        self._max_concurrent = max_concurrent
        self._metric: str | None = None
        self._mode: str | None = None
        self._sign = 0.0
        self._record = _PromotionRecord.empty(rung_steps(grace_period, reduction_factor, max_t))
        self._journal = journal.Journal(state_path)
        self._ops: list[list[Any]] = []  # applied to `_record`, not yet journaled
        # the record's parts, by name (the same objects: `_record.apply` changes them in place)
        self.rungs = self._record.rungs
        self.promoted = self._record.promoted
        self.filled = self._record.filled  # beyond the quota
        self.paused = self._record.paused
        self.first_pause = self._record.first_pause  # the step a trial reported at its 1st pause
        self.stopped = self._record.stopped
        self.decisions = self._record.decisions  # [trial_id, rung, what], in order
        self._filling: set[str] = set()  # fills not yet judged at a later rung
        self._step: dict[str, int] = {}  # each trial's last reported step (this process)
        self._changes = 0  # ops applied: `_due` is recomputed only after a change
        self._due_cache: tuple[int, list[str]] = (-1, [])
        self._deferred = False  # within `_end_game`'s stops: one journal line for them all
        # whether a trial of Tune's waits at a rung (paused, or released and not yet started):
        # set by a pause, recounted from Tune's trials by `_recount` (so an id of the state file
        # that Tune lacks is not one); the searcher stays open while it is true
        self.waiting = False
        self._loaded = False
        _ACTIVE[self._state_path] = self  # again in _load_once: Tune may use an unpickled copy

    # ------------------------------------------------------------------ Tune plumbing

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        self._sign = {"max": 1.0, "min": -1.0}.get(self._mode or "", 0.0)
        return True

    def debug_string(self) -> str:
        counts = ", ".join(
            f"{step}: {len(rec)} in, {len(self.promoted[step])} promoted"
            for step, rec in self.rungs.items()
        )
        return f"ASHA (promotion): {len(self.paused)} paused; rungs {counts}"

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict[str, Any]:
        return {
            "format": PROMOTION_FORMAT,
            "kind": "promotion",
            "time_attr": self.time_attr,
            "metric": self._metric,
            "mode": self._mode,
            "max_t": self._max_t,
            "reduction_factor": self._rf,
            **self._record.to_json(),
        }

    def _op(self, *op: Any) -> None:
        """Change the state by one op (journaled at the next `_save`)."""
        self._record.apply(list(op))
        self._ops.append(list(op))
        self._changes += 1

    def _save(self) -> None:
        if not self._deferred:
            super()._save()

    def _take_ops(self) -> list[list[Any]]:
        ops, self._ops = self._ops, []
        return ops

    def _load_once(self) -> None:
        if self._loaded:
            return
        _ACTIVE[self._state_path] = self
        saved = self._saved_once()
        if saved is None or saved.snapshot is None:
            return
        steps = [int(step) for step, _ in saved.snapshot.get("rungs", [])]
        if saved.snapshot.get("format") not in PROMOTION_READS or steps != list(self.rungs):
            raise self._mismatch()
        self._record.load(saved)
        self._changes += 1
        last = {tid: what for tid, _, what in self.decisions}
        self._filling = {tid for tid, what in last.items() if what == "fill"}

    # ------------------------------------------------------------------ promotion rule

    def _promotable(self, step: int) -> list[str]:
        """Trials of rung `step` that may go on now, best first: those in its top k =
        floor(n / rf) not yet promoted, as many as k minus the promotions already made."""
        k = int(len(self.rungs[step]) / self._rf + 1e-9)
        quota = k - len(self.promoted[step])
        if quota <= 0:
            return []
        promoted, filled = self.promoted[step], self.filled[step]
        waiting = []
        for _, _, tid in itertools.islice(self._record.ranked[step], k):  # best first
            if tid not in promoted and tid not in filled:
                waiting.append(tid)
                if len(waiting) == quota:
                    break
        return waiting

    def _due(self) -> list[str]:
        """Paused trials that may go on now, the highest rung first (as in the paper); computed
        again only after the state changed (the searcher and Tune ask at every step, and the
        rungs' sort grows with the trials)."""
        if not self.paused:
            return []
        if self._due_cache[0] != self._changes:
            due = [
                tid
                for step in reversed(self.rungs)
                for tid in self._promotable(step)
                if self.paused.get(tid) == step
            ]
            self._due_cache = (self._changes, due)
        return list(self._due_cache[1])

    def has_promotable(self) -> bool:
        """Whether a paused trial is waiting to be resumed (new trials wait for it)."""
        return bool(self._due())

    def num_paused(self, live: set[str]) -> int:
        return len(live.intersection(self.paused))

    def _promote(self, trial_id: str, step: int, what: str = "promote") -> None:
        self._op("filled" if what == "fill" else "promoted", step, trial_id)
        if what == "fill":
            self._filling.add(trial_id)
        self._op("unpaused", trial_id)
        self._op("decision", trial_id, step, what)
        self._save()

    # ------------------------------------------------------------------ scheduler hooks

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        from ray.tune.experiment import Trial

        self._load_once()
        if trial.trial_id in self.paused and trial.status == Trial.PENDING:
            trial.set_status(Trial.PAUSED)  # restored: it waits for a promotion again

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load_once()
        tid = trial.trial_id
        if tid in self.stopped:  # a decision taken before a restore stands
            return TrialScheduler.STOP
        if tid in self.paused:  # restarted without a promotion (a retry after a failed pause)
            return TrialScheduler.PAUSE
        step, value = result.get(self.time_attr), result.get(self._metric)
        if step is not None:
            self._step[tid] = int(step)
        if step is None or value is None:
            return TrialScheduler.CONTINUE
        if step >= self._max_t:
            return TrialScheduler.STOP
        score = self._sign * float(value)
        score = score if score == score else float("-inf")  # NaN ranks last
        reached = [s for s in self.rungs if s <= step and tid not in self.rungs[s]]
        if not reached:
            return TrialScheduler.CONTINUE
        for s in reached:
            self._op("rung", s, tid, score)
        self._filling.discard(tid)  # judged at a rung again: committed, or paused
        rung = reached[-1]
        for s in reached[:-1]:  # passed a rung between two reports: counts as promoted
            self._op("promoted", s, tid)
            self._op("decision", tid, s, "continue")
        if tid in self._promotable(rung):
            self._op("promoted", rung, tid)
            action = TrialScheduler.CONTINUE
        else:
            # the first pause's reported step is the searcher's cue (`PauseAwareLimiter`)
            self._op("paused", tid, rung, int(step))
            self.waiting = True
            action = TrialScheduler.PAUSE
        went_on = action == TrialScheduler.CONTINUE
        self._op("decision", tid, rung, "continue" if went_on else "pause")
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load_once()
        self._filling.discard(trial.trial_id)
        if trial.trial_id in self.paused:
            self._op("unpaused", trial.trial_id)
            self._save()
        self._recount(tune_controller)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        step = self.paused.get(trial.trial_id)
        if step is not None:
            self._op("unpaused", trial.trial_id)
            self._op("stopped", trial.trial_id, step)
            self._op("decision", trial.trial_id, step, "stop")
            self._save()
        if not self._deferred:
            self._recount(tune_controller)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_complete(tune_controller, trial, {})

    def _waiting(self, trials: list[Any]) -> tuple[list[Any], list[Any]]:
        """Tune's trials paused at a rung of ours, and those this scheduler released (promoted
        or filled) that Tune still shows PAUSED: not started yet, to run, or they would wait
        forever, in no list of ours."""
        from ray.tune.experiment import Trial

        paused, released = [], []
        for t in trials:
            if t.status == Trial.PAUSED and t.trial_id in self.paused:
                paused.append(t)
            elif t.status == Trial.PAUSED and t.trial_id not in self.stopped:
                released.append(t)
        return paused, released

    def _recount(self, tune_controller: Any) -> None:
        """After a trial ended: whether one still waits (`waiting`)."""
        if tune_controller is None:  # no Tune: only our own record
            self.waiting = self.waiting and bool(self.paused)
            return
        paused, released = self._waiting(tune_controller.get_trials())
        self.waiting = bool(paused or released)

    def choose_trial_to_run(self, tune_controller: Any) -> Any | None:
        from ray.tune.experiment import Trial

        self._load_once()
        trials = tune_controller.get_trials()
        active = [t for t in trials if t.status in (Trial.RUNNING, Trial.PENDING)]
        paused, released = self._waiting(trials)
        self.waiting = bool(paused or released)
        if released and len(active) < self._max_concurrent:
            return released[0]
        if len(active) < self._max_concurrent and paused:
            by_id = {t.trial_id: t for t in paused}
            if pick := next((by_id[tid] for tid in self._due() if tid in by_id), None):
                self._promote(pick.trial_id, self.paused[pick.trial_id])
                return pick
        for trial in active:
            if trial.status == Trial.PENDING:
                return trial
        if not paused or not _all_suggested(tune_controller.search_alg):
            return None
        if not active:
            return self._end_game(tune_controller, paused)
        if len(active) < self._max_concurrent:
            return self._fill(active, paused)
        return None

    def _steps_left(self, trial: Any) -> int:
        step = self._step.get(trial.trial_id)
        if step is None:  # not reported in this process: Tune's last result, else from 0
            step = (getattr(trial, "last_result", None) or {}).get(self.time_attr) or 0
        return max(0, self._max_t - int(step))

    def _fill(self, active: list[Any], paused: list[Any]) -> Any | None:
        """A slot is free while trials run and no sample is left: resume the best paused trial,
        highest rung first, whose remaining steps fit within FILL_LIMIT times the longest
        committed trial's (class docstring)."""
        committed = [t for t in active if t.trial_id not in self._filling]
        if not committed:
            return None
        horizon = max(self._steps_left(t) for t in committed)
        by_rank = sorted(
            paused,
            key=lambda t: (
                self.paused[t.trial_id],
                self.rungs[self.paused[t.trial_id]][t.trial_id],
            ),
            reverse=True,
        )
        for trial in by_rank:
            if self._max_t - self.paused[trial.trial_id] <= FILL_LIMIT * horizon:
                self._promote(trial.trial_id, self.paused[trial.trial_id], "fill")
                return trial
        return None

    def _end_game(self, tune_controller: Any, paused: list[Any]) -> Any | None:
        """No samples left and nothing running: promote, one at a time, the best trial of a
        rung if it waits there (the quota may have gone to earlier arrivals: with n not a
        multiple of rf, the last slot opened before it came), or the best waiting trial of a
        rung nobody left (floor(n/rf) = 0 with few samples), highest rung first; once there is
        none, stop the rest where they paused."""
        for step in reversed(self.rungs):
            waiting = [t for t in paused if self.paused[t.trial_id] == step]
            if not waiting:
                continue
            recorded = self.rungs[step]
            best = max(waiting, key=lambda t: recorded[t.trial_id])
            gone = self.promoted[step] | self.filled[step]
            if recorded[best.trial_id] >= max(recorded.values()) or not gone:
                self._promote(best.trial_id, step, "end_game")
                return best
        # Tune re-saves only the trials it marks, and stopping one without an actor marks none
        # (Ray 2.60): without this the saved state keeps them PAUSED, to be re-run on a restore.
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        mark = getattr(controller, "_mark_trial_to_checkpoint", lambda trial: None)
        self._deferred = True  # one journal line and one recount for all (measured: 3 s for
        try:  # 667 stops at 1,000 trials, a line and a recount each)
            for trial in paused:
                tune_controller.stop_trial(trial)  # on_trial_remove records where it stopped
                mark(trial)
        finally:
            self._deferred = False
        self._save()
        self._recount(tune_controller)
        return None


@dataclass
class _PromotionRecord:
    """`PromotingASHA`'s state that its journal records, changed only by `apply` (live, on a
    restore and in `read_state` alike)."""

    rungs: dict[int, dict[str, float]]
    promoted: dict[int, set[str]]
    filled: dict[int, set[str]]
    paused: dict[str, int] = field(default_factory=dict)
    first_pause: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)
    decisions: list[list[Any]] = field(default_factory=list)
    # each rung's trials best first, (-score, arrival, trial_id): kept sorted as results come
    # (`bisect`), so ranking a rung costs no sort per decision (not saved: rebuilt on load)
    ranked: dict[int, list[tuple[float, int, str]]] = field(default_factory=dict)

    @classmethod
    def empty(cls, steps: list[int]) -> _PromotionRecord:
        return cls(
            {s: {} for s in steps},
            {s: set() for s in steps},
            {s: set() for s in steps},
            ranked={s: [] for s in steps},
        )

    @classmethod
    def from_saved(cls, saved: journal.Saved) -> _PromotionRecord:
        snapshot = saved.snapshot or {}
        record = cls.empty([int(step) for step, _ in snapshot.get("rungs", [])])
        record.load(saved)
        return record

    def load(self, saved: journal.Saved) -> None:
        """Fill this (empty) record in place from a snapshot and the ops journaled after it."""
        snapshot = saved.snapshot or {}
        for step, rec in snapshot["rungs"]:
            self.rungs[int(step)].update(rec)
            ranked = self.ranked[int(step)]
            ranked.extend((-float(v), i, tid) for i, (tid, v) in enumerate(rec.items()))
            ranked.sort()
        for step, ids in snapshot["promoted"].items():
            self.promoted[int(step)].update(ids)
        for step, ids in snapshot.get("filled", {}).items():
            self.filled[int(step)].update(ids)
        self.paused.update(snapshot["paused"])
        self.first_pause.update(snapshot["first_pause"])
        self.stopped.update(snapshot["stopped"])
        self.decisions.extend(snapshot.get("decisions", []))  # older files have none
        for op in saved.ops:
            self.apply(op)

    def apply(self, op: list[Any]) -> None:
        kind = op[0]
        if kind == "rung":
            step, tid, score = int(op[1]), op[2], op[3]
            rung = self.rungs[step]
            if tid in rung:  # recorded again (not done by PromotingASHA): rank it anew
                self.ranked[step] = [r for r in self.ranked[step] if r[2] != tid]
            bisect.insort(self.ranked[step], (-float(score), len(rung), tid))
            rung[tid] = score
        elif kind == "promoted":
            self.promoted[int(op[1])].add(op[2])
        elif kind == "filled":
            self.filled[int(op[1])].add(op[2])
        elif kind == "paused":
            self.paused[op[1]] = int(op[2])
            self.first_pause.setdefault(op[1], int(op[3]))
        elif kind == "unpaused":
            self.paused.pop(op[1], None)
        elif kind == "stopped":
            self.stopped[op[1]] = int(op[2])
        elif kind == "decision":
            self.decisions.append([op[1], int(op[2]), op[3]])
        else:
            raise ValueError(f"unknown op {op!r} in the journal of PromotingASHA's state")

    def to_json(self) -> dict[str, Any]:
        return {
            "rungs": [[step, dict(rec)] for step, rec in self.rungs.items()],
            "promoted": {str(step): sorted(ids) for step, ids in self.promoted.items()},
            "filled": {str(step): sorted(ids) for step, ids in self.filled.items() if ids},
            "paused": dict(self.paused),
            "first_pause": dict(self.first_pause),
            "stopped": dict(self.stopped),
            "decisions": [list(d) for d in self.decisions],
        }


# The promotion schedulers of this process by state path: the searcher wrappers below look
# theirs up here (Tune copies searcher state with deepcopy, which must not copy a scheduler).
_ACTIVE: dict[str, PromotingASHA] = {}


@contextmanager
def _paused_slots_freed(limited: Any, state_path: str, live: set[str]) -> Iterator[bool]:
    """While suggesting: raise `limited.max_concurrent` by the paused trials among `live`.
    Yields False when a promotion is due: then no new trial starts."""
    scheduler = _ACTIVE.get(state_path)
    if scheduler is not None and scheduler.has_promotable():
        yield False
        return
    extra = scheduler.num_paused(live) if scheduler is not None else 0
    limited.max_concurrent += extra
    try:
        yield True
    finally:
        limited.max_concurrent -= extra


def _trials_wait_at_rungs(state_path: str) -> bool:
    scheduler = _ACTIVE.get(state_path)
    return scheduler is not None and scheduler.waiting


class _OpenWhileTrialsWait:
    """A search algorithm that is finished (every sample suggested) only once no trial waits at
    a rung. Tune keeps a trial's process for reuse (`reuse_actors`) only while the search is
    not finished (`TuneController._maybe_cache_trial_actor`): without this the end game's
    promotions and fills, which follow the last sample, each started a new process (measured:
    about 8 s of imports each). No sample is suggested after the last: `next_trial` asks the
    searcher only while the samples are not all out."""

    state_path: str

    def all_suggested(self) -> bool:
        """Whether every sample has been suggested (Tune's own `is_finished`)."""
        return bool(super().is_finished())  # type: ignore[misc]

    def is_finished(self) -> bool:
        return self.all_suggested() and not _trials_wait_at_rungs(self.state_path)

    def next_trial(self) -> Any:
        return None if self.all_suggested() else super().next_trial()  # type: ignore[misc]


def _all_suggested(search_alg: Any) -> bool:
    """Whether the searcher has no samples left (the end game's condition)."""
    if isinstance(search_alg, _OpenWhileTrialsWait):
        return search_alg.all_suggested()
    return bool(search_alg.is_finished())


class PauseAwareGenerator(_OpenWhileTrialsWait, SearchGenerator):
    """Tune's SearchGenerator (what Tune wraps a Searcher in) around a `PauseAwareLimiter`."""

    def __init__(self, searcher: PauseAwareLimiter) -> None:
        super().__init__(searcher)
        self.state_path = searcher.state_path


class PauseAwareLimiter(ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter, but a trial paused by `PromotingASHA` holds no slot, and no new
    trial starts while a paused trial waits to be promoted.

    It also tells the searcher about a trial when the trial first pauses, as stopped there
    (Optuna: PRUNED, ranked by the step it reached and its value there), and nothing about it
    afterwards. Otherwise Optuna would see paused trials as running, which TPE ignores: with
    nearly every trial pausing at a rung, it learnt from almost nothing and kept sampling at
    random (measured in BENCHMARKS.md). A trial promoted later keeps its place in the study."""

    def __init__(self, searcher: Any, max_concurrent: int, state_path: str | Path) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.state_path = str(state_path)

    def _first_pause(self, trial_id: str) -> tuple[int, str] | None:
        """(step, time attribute) of the trial's first pause, or None if it never paused."""
        scheduler = _ACTIVE.get(self.state_path)
        if scheduler is None or trial_id not in scheduler.first_pause:
            return None
        return scheduler.first_pause[trial_id], scheduler.time_attr

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        first = self._first_pause(trial_id)
        if first is None:
            super().on_trial_result(trial_id, result)
        elif result.get(first[1]) == first[0]:  # the result it paused on: record, then stop it
            super().on_trial_result(trial_id, result)
            self.searcher.on_trial_complete(trial_id, result=None)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if self._first_pause(trial_id) is None:
            super().on_trial_complete(trial_id, result=result, error=error)
        elif trial_id in self.live_trials:  # the searcher knows already: free its slot only
            self.live_trials.remove(trial_id)
            self.num_unfinished_live_trials -= 1

    def suggest(self, trial_id: str) -> dict | None:
        with _paused_slots_freed(self, self.state_path, self.live_trials) as allowed:
            return super().suggest(trial_id) if allowed else None


class PauseAwareVariantGenerator(_OpenWhileTrialsWait, BasicVariantGenerator):
    """Random or grid search with the same rule as `PauseAwareLimiter` (and `PauseAwareGenerator`'s
    end)."""

    def __init__(self, *, state_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_path = str(state_path)

    def next_trial(self) -> Any:
        if self.max_concurrent <= 0:  # unlimited
            return super().next_trial()
        with _paused_slots_freed(self, self.state_path, self._live_trials) as allowed:
            return super().next_trial() if allowed else None
