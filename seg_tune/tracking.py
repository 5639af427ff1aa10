"""Weights & Biases mirroring: one wandb run per trial, grouped by experiment.

Built on Ray's `WandbLoggerCallback`, with three fixes that a requeued sweep needs:
- wandb's step is the trial's own `step` (monotonic across restores), not Tune's
  `training_iteration` (which restarts at 1 after a restore), and a result whose step was already
  logged is dropped, so a trial resumed from an older checkpoint never logs a step twice. The last
  logged step of every trial is kept in `wandb_steps.json` in the experiment folder (atomic writes).
- a restored trial continues its own run: same id (the trial id), `resume="allow"`.
- a graceful stop never hangs: runs still open are told to finish, and the wait is bounded.

Offline runs (no API key) are written to `<experiment>/wandb/`; `wandb sync <dir>` uploads them.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any, Literal

from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

from seg_tune.checkpoint import atomic_write_text

WandbMode = Literal["auto", "online", "offline", "disabled"]


def resolve_mode(mode: WandbMode) -> Literal["online", "offline", "disabled"]:
    """`auto`: online when an API key is configured (environment or netrc), offline otherwise."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


class StepSafeWandbCallback(WandbLoggerCallback):
    def __init__(
        self,
        *,
        project: str,
        group: str,
        mode: Literal["online", "offline"],
        experiment_dir: Path,
        finish_timeout_s: int = 20,
    ) -> None:
        wandb_dir = experiment_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            project=project,
            group=group,
            upload_timeout=finish_timeout_s,
            excludes=["checkpoint_path", "checkpoint_dir_name", "should_checkpoint"],
            dir=str(experiment_dir),  # wandb adds the wandb/ folder itself
            mode=mode,
            resume="allow",
        )
        self._mode = mode
        self._steps_path = experiment_dir / "wandb_steps.json"
        self._last_step: dict[str, int] = (
            json.loads(self._steps_path.read_text(encoding="utf-8"))
            if self._steps_path.is_file()
            else {}
        )

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self._mode == "offline":  # Ray asks for an API key unless WANDB_MODE says offline
            os.environ["WANDB_MODE"] = "offline"
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = result.get("step")
        if step is None or step <= self._last_step.get(trial.trial_id, -1):
            return  # already logged before a restore: logging it again would duplicate a step
        super().log_trial_result(iteration, trial, {**result, "training_iteration": step})
        self._last_step[trial.trial_id] = int(step)
        atomic_write_text(self._steps_path, json.dumps(self._last_step, indent=1))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Interrupted trials never got their END item: send it so their runs finish cleanly,
        # then wait at most `upload_timeout` seconds (Ray's default would wait 30 minutes).
        for trial in list(self._trial_queues):
            self._trial_queues[trial].put((_QueueItem.END, None))
        self._cleanup_logging_actors(timeout=self._upload_timeout, kill_on_timeout=True)
