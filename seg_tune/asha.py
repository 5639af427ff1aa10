"""ASHA whose decisions survive an experiment restore.

Ray Tune does not save scheduler state with the experiment (ray issue 30838): after a restore the
rungs are empty, so a resumed sweep would let bad trials run to the end and judge new trials
against nothing. `PersistentASHA` writes its rungs, the trial-to-bracket map and its stop decisions
to a JSON file (atomically) after every change, and reads them back the first time it is used
after a restore.

File format (`scheduler_state.json`, format 1):
    {"format": 1, "time_attr": "step", "metric": ..., "mode": ...,
     "brackets": [{"rungs": [[milestone, {trial_id: signed reward}], ...]}, ...],
     "trial_bracket": {trial_id: bracket index}, "num_stopped": int,
     "stopped": {trial_id: step at which ASHA stopped it}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from seg_tune.checkpoint import atomic_write_text

FORMAT_VERSION = 1


class PersistentASHA(ASHAScheduler):
    def __init__(self, *, state_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_path = str(state_path)
        self._loaded = False
        self.stopped: dict[str, int] = {}

    # ------------------------------------------------------------------ persistence

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

    def _save(self) -> None:
        atomic_write_text(Path(self._state_path), json.dumps(self.state(), indent=1))

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Path(self._state_path)
        if not path.is_file():
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format") != FORMAT_VERSION or len(saved["brackets"]) != len(self._brackets):
            raise ValueError(f"{path}: scheduler state does not match this scheduler; use --fresh")
        for bracket, saved_bracket in zip(self._brackets, saved["brackets"], strict=True):
            by_milestone = {float(m): rec for m, rec in saved_bracket["rungs"]}
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        for tid, i in saved["trial_bracket"].items():
            self._trial_info[tid] = self._brackets[i]
        self._num_stopped = saved["num_stopped"]
        self.stopped.update(saved["stopped"])

    # ------------------------------------------------------------------ scheduler hooks

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        if trial.trial_id not in self._trial_info:
            super().on_trial_add(tune_controller, trial)
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
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._load_once()
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
            self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        if trial.trial_id in self._trial_info:
            super().on_trial_remove(tune_controller, trial)
            self._save()


def load_stopped(state_path: Path) -> dict[str, int]:
    """Trials ASHA stopped early, with the step, from a saved state file (empty if none)."""
    if not state_path.is_file():
        return {}
    return dict(json.loads(state_path.read_text(encoding="utf-8")).get("stopped", {}))
