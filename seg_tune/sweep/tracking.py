"""What the driver records of its trials: Tune's own logs kept whole (`KeepTrialLogs`), a
restored trial's checkpoint that Ray pruned replaced by one it kept (`ResumeFromAKeptCheckpoint`),
and Weights & Biases mirroring, one wandb run per trial, grouped by experiment (`WandbTrialRuns`).

A Ray Tune callback in the driver process (several runs at once through
`wandb.init(reinit="create_new")`), rather than Ray's `WandbLoggerCallback`, which logs from one
actor per trial and kills it as soon as `wandb.finish` returns: on this machine that lost the
last trial's data (a 7-byte offline file). Here:
- wandb's step is the trial's own `step` (monotonic across restores), and a result whose step was
  already logged is dropped, so a trial resumed from an older checkpoint never logs a step twice.
  The last step of every trial that wandb has written for good (its run finished) is kept in
  `wandb_steps.json` beside the runs (atomic writes; read back from the file, since Tune restores
  callbacks as they were pickled at start). Steps logged to a run that could not be finished are
  logged again after a restore, from the trial's result.json: wandb's service holds them in
  memory until then, and a SIGTERM to every process of a job (`scontrol requeue`) kills it with
  them, while the trial resumes from a checkpoint after them.
- a restored trial continues its own run: same id (the trial id), `resume="allow"`.
- a graceful stop never hangs: open runs are finished with a bounded wait.

Offline runs (no API key) are written to `<experiment>/wandb/`; `wandb sync <dir>` uploads them.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

from ray.tune import Callback

from seg_tune.checkpoint import META_FILE, atomic_write_text
from seg_tune.metrics import RESTORE_WARNINGS, TUNE_BOOKKEEPING
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.summary import results_by_step
from seg_tune.sweep.wandb_log import last_step_written

logger = logging.getLogger(__name__)

WandbMode = Literal["auto", "online", "offline", "disabled"]
_NOT_LOGGED = TUNE_BOOKKEEPING | {"step"}  # step is wandb's own step, not a metric


# Tune's logger callbacks write each trial's result.json (JsonLoggerCallback) and progress.csv
# (CSVLoggerCallback) in the driver's staging folder, which Tune copies to storage only with its
# experiment snapshots (every 10 s or more, or after `CheckpointConfig.num_to_keep` checkpoints
# of a trial). When a trial with a checkpoint starts again, they first replace their file with
# the copy in storage (`LoggerCallback._restore_from_remote`, Ray 2.60): a trial resumed before
# the next snapshot lost every result since the last one: ASHA's end game resumes a trial
# seconds after it paused there, so its rung result was lost first of all; a promotion or a
# retry soon after a result lost it the same way.
_TRIAL_LOGS = ("result.json", "progress.csv")


def _push_trial_logs(trial: Any) -> None:
    """Copy the driver's logs of `trial` to its folder in storage, so that the copy Tune puts
    back when the trial starts again holds every result. Only the driver appends to these files,
    so its copy is the newest; one smaller than that in storage is left alone all the same."""
    import pyarrow.fs

    storage = getattr(trial, "storage", None)
    if storage is None:
        return
    logs = [Path(trial.local_path, name) for name in _TRIAL_LOGS]
    if not any(local.is_file() for local in logs):  # a new trial: nothing to copy, no wait
        return
    try:
        storage.syncer.wait()  # a snapshot upload in flight could land after ours
    except Exception as exc:  # the snapshot's failure, which waiting hands to us, not Tune
        logger.warning("uploading the experiment snapshot to storage failed: %r", exc)
    fs = storage.storage_filesystem
    for local in logs:
        if not local.is_file():
            continue
        remote = Path(storage.trial_fs_path, local.name).as_posix()
        info = fs.get_file_info(remote)
        if info.type == pyarrow.fs.FileType.File and (info.size or 0) > local.stat().st_size:
            continue
        fs.create_dir(storage.trial_fs_path, recursive=True)
        pyarrow.fs.copy_files(str(local), remote, destination_filesystem=fs)


class KeepTrialLogs(Callback):
    """Before Tune's logger callbacks see a trial start (user callbacks come first), copy its
    driver-side logs to storage, so that what they restore holds every result reported so far.
    Any restart: a promotion, the end game, a retry, a resumed experiment. A copy that fails
    costs only a warning."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            _push_trial_logs(trial)
        except Exception as exc:  # the sweep goes on; only this trial's log may lose lines
            logger.warning("trial %s: copying its logs to storage failed: %r", trial, exc)


# Ray prunes a trial's old checkpoints in the driver as it registers a new one, and saves the
# experiment state (which names each trial's latest checkpoint) afterwards, in the background:
# every `num_to_keep` checkpoints of a trial at most. A driver killed in between (SIGKILL, the
# OOM killer, a node reset) leaves a state whose latest checkpoint of a trial is gone; Tune 2.60
# then fails the restored trial ("Could not recover from checkpoint as it does not exist on
# storage anymore"), again on every retry. The newer checkpoints Ray kept are beside it.
LOST_CHECKPOINT = "was pruned before the experiment state was saved"


class ResumeFromAKeptCheckpoint(Callback):
    """Before Tune restores a trial (its actor has started), point a latest checkpoint that is
    gone from storage at the newest one kept in the trial's folder, or at an empty folder (the
    trial starts over: `seg_tune.train` skips one) when none is: one warning line on the
    terminal either way. Tune's record then lacks the results between the two, which it had
    not saved either."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            line = repoint_lost_checkpoint(trial)
        except Exception as exc:  # Tune's own error follows, naming the checkpoint
            logger.warning("trial %s: looking for its kept checkpoints failed: %r", trial, exc)
            return
        if line:
            print(f"seg_tune.run: warning: trial {trial.trial_id}: {line}", flush=True)


def repoint_lost_checkpoint(trial: Any) -> str | None:
    """What `ResumeFromAKeptCheckpoint` did to `trial` (a line), or None: its latest
    checkpoint is there, or it has none."""
    import pyarrow.fs
    from ray.tune import Checkpoint

    result = getattr(trial, "latest_checkpoint_result", None)
    if result is None or result.checkpoint is None:
        return None
    fs, path = result.checkpoint.filesystem, result.checkpoint.path
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        return None
    lost = f"{Path(path).name} (step {result.metrics.get('step', '?')})"
    kept = _kept_checkpoints(fs, Path(path).parent.as_posix())
    if not kept:
        fs.create_dir(path, recursive=True)
        return f"its latest checkpoint {lost} {LOST_CHECKPOINT}, and none is kept: it starts over"
    step, newest = max(kept)
    result.checkpoint = Checkpoint(path=newest, filesystem=fs)
    trial.invalidate_json_state()
    return (
        f"its latest checkpoint {lost} {LOST_CHECKPOINT}; it resumes from "
        f"{Path(newest).name} (step {step}), the newest kept"
    )


def _kept_checkpoints(fs: Any, folder: str) -> list[tuple[int, str]]:
    """(step, path) of each `checkpoint_N` folder in `folder` whose meta.json gives its step."""
    import pyarrow.fs

    found = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True)):
        name = Path(info.path).name
        if info.type != pyarrow.fs.FileType.Directory or not re.fullmatch(r"checkpoint_\d+", name):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{META_FILE}") as stream:
                found.append((int(json.loads(stream.read())["step"]), info.path))
        except (OSError, ValueError, KeyError, TypeError):  # set aside, torn: not a candidate
            continue
    return found


class TrialWarnings(Callback):
    """Print what a trial reports as a warning (`metrics.RESTORE_WARNINGS`: checkpoints it
    could not read and moved aside) on the driver's terminal, where the user looks: the trials'
    own output goes to Ray's logs only."""

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        for line in result.get(RESTORE_WARNINGS) or ():
            print(f"seg_tune.run: warning: trial {trial.trial_id}: {line}", flush=True)


def resolve_mode(mode: WandbMode) -> Literal["online", "offline", "disabled"]:
    """`auto`: WANDB_MODE if set; else online when an API key is configured (environment or
    netrc), offline otherwise."""
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode  # type: ignore[return-value]
    if env_mode == "dryrun":
        return "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def _reported(trial: Any) -> list[dict[str, Any]]:
    """Tune's record of a trial's results (its result.json in storage and in the driver's
    staging folder), one per step (the last), in order of step."""
    paths = []
    for folder in ("path", "local_path"):
        try:
            paths.append(Path(getattr(trial, folder), "result.json"))
        except (AttributeError, TypeError):  # no storage context: nothing recorded
            continue
    return results_by_step(*paths)


class WandbTrialRuns(Callback):
    def __init__(
        self,
        *,
        project: str,
        group: str,
        mode: Literal["online", "offline"],
        layout: Layout,
        entity: str | None = None,
        finish_timeout_s: float = 20.0,
    ) -> None:
        self.project, self.group, self.mode, self.entity = project, group, mode, entity
        self.experiment_dir = layout.wandb_parent
        self.finish_timeout_s = finish_timeout_s
        self._steps_path = layout.wandb_steps
        self._runs: dict[str, Any] = {}
        self._logged: dict[str, int] = {}  # trials seen by this process: last step logged

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks: open runs stay behind
        return {**self.__dict__, "_runs": {}, "_logged": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:  # also pickled before `_logged` was
        self.__dict__.update({"_logged": {}, **state})

    # ------------------------------------------------------------------ runs

    def _logged_steps(self) -> dict[str, int]:
        if not self._steps_path.is_file():
            return {}
        return json.loads(self._steps_path.read_text(encoding="utf-8"))

    def _run(self, trial: Any) -> Any:
        run = self._runs.get(trial.trial_id)
        if run is None:
            import wandb

            self.experiment_dir.mkdir(parents=True, exist_ok=True)
            run = wandb.init(
                project=self.project,
                entity=self.entity,
                group=self.group,
                id=trial.trial_id,
                name=f"{self.group}-{trial.trial_id}",
                config=dict(trial.config),
                dir=str(self.experiment_dir),
                mode=self.mode,
                resume="allow",
                reinit="create_new",
                settings=wandb.Settings(silent=True, console="off"),
            )
            self._runs[trial.trial_id] = run
        return run

    def _finish(self, trial_id: str) -> None:
        run = self._runs.pop(trial_id, None)
        if run is None:
            return
        run.finish()  # raises when wandb's service is gone, with the steps it had not written
        step = self._logged.pop(trial_id, None)
        if step is not None:  # written for good: never logged again
            done = self._logged_steps()
            done[trial_id] = max(step, done.get(trial_id, -1))
            atomic_write_text(self._steps_path, json.dumps(done, indent=1))

    # ------------------------------------------------------------------ Tune hooks

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        step = result.get("step")
        tid = trial.trial_id
        if step is None:
            return
        if tid not in self._logged:  # its first result in this process
            # what wandb wrote for good: what its run files hold (a driver that died without
            # finishing its runs leaves what its wandb service wrote), or what finished runs
            # held (wandb_steps.json: it outlives run files removed by `wandb sync --clean`)
            self._logged[tid] = max(
                self._logged_steps().get(tid, -1),
                last_step_written(self.experiment_dir / "wandb", tid),
            )
            # Steps reported before a restart that no finished run holds (wandb's service died
            # with them): logged now from Tune's record of them, before this one.
            for earlier in _reported(trial):
                if self._logged[tid] < earlier["step"] < step:
                    self._log(trial, earlier)
        if step <= self._logged[tid]:
            return  # already logged (before a restore): logging it again would duplicate a step
        self._log(trial, result)

    def _log(self, trial: Any, result: dict) -> None:
        metrics = {
            k: v
            for k, v in result.items()
            if k not in _NOT_LOGGED
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        self._run(trial).log(metrics, step=int(result["step"]))
        self._logged[trial.trial_id] = int(result["step"])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Finish every open run (interrupted trials too), waiting at most finish_timeout_s."""
        closer = threading.Thread(
            target=lambda: [self._finish(tid) for tid in list(self._runs)], daemon=True
        )
        closer.start()
        closer.join(self.finish_timeout_s)
