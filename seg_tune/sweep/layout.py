"""One object owns every path of an experiment folder, `<storage>/<name>/`.

    tune/                  Ray Tune's: experiment and searcher state, `trial_<id>/` per trial
                           (result.json, progress.csv, checkpoints of one-worker trials); Tune
                           syncs it from its own staging copy, so nothing of ours lives there
    train_runs/<id>/       Ray Train's: the checkpoints of multi-worker trials
    driver.lock            held by the driver running it (`seg_tune.sweep.lock`)
    ray_head.json          under cluster/ray_head.wilkes3: the head job's head file, which
                           `ray_worker.wilkes3 --join FOLDER` reads (`seg_tune.sweep.cluster`)
    space.json             the resolved spec the experiment was started with (resumes compare)
    scheduler_state.json   ASHA's rungs, pauses and stops (`seg_tune.sweep.asha`): a snapshot,
                           with the changes after it in scheduler_state.journal.jsonl
                           (`seg_tune.sweep.journal`); `asha.read_state` reads both
    wandb/                 the trials' wandb runs; wandb_steps.json: the steps written for good
    logs/<id>.log          what each trial printed, every attempt (`seg_tune.sweep.trial_log`)
    summary.json           every trial and the best (`seg_tune.sweep.summary`)
    best_model/            the best trial in Hugging Face format, with segmentation.json
    report.md, plots/      the report (`seg_tune.report`)
    final/                 the final phase (`seg_tune.sweep.final`): a folder laid out like this
                           one for its Tune trials (tune/, train_runs/, wandb/, ...), plus
                           scores/, one JSON file per final run and untrained control scored

Each path is a property named after the file's role; nothing else in seg_tune spells them out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

FINAL_DIR = "final"
LOCK_NAME = "driver.lock"
HEAD_POINTER = "ray_head.json"
TUNE_DIR = "tune"  # also the Tuner's RunConfig(name=...): Tune writes <storage_path>/<name>


@dataclass(frozen=True)
class Layout:
    root: Path  # the experiment folder

    @classmethod
    def of(cls, storage: Path, name: str) -> Layout:
        return cls((storage / name).resolve())

    @property
    def name(self) -> str:
        return self.root.name

    # ------------------------------------------------------------------ Ray's
    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

    def trial_dir(self, trial_id: str) -> Path:
        """A trial's folder in `tune/` (its name: `trial_dirname`)."""
        return self.tune / trial_dirname(trial_id)

    @property
    def train_runs(self) -> Path:
        return self.root / "train_runs"

    def train_run(self, trial_id: str) -> Path:
        """A Ray Train trial's run folder (its checkpoints), named after the trial."""
        return self.train_runs / trial_id

    def checkpoint_folders(self) -> list[Path]:
        """Every trial checkpoint folder of the experiment, the final phase's included (a
        trial's `checkpoint_*` in its tune/ folder or its Train run)."""
        roots = [self.tune, self.train_runs, self.final.tune, self.final.train_runs]
        return [p for root in roots for p in root.glob("*/checkpoint_*") if p.is_dir()]

    # ------------------------------------------------------------------ ours
    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def head_pointer(self) -> Path:
        return self.root / HEAD_POINTER

    @property
    def space(self) -> Path:
        return self.root / "space.json"

    @property
    def scheduler_state(self) -> Path:
        return self.root / "scheduler_state.json"

    @property
    def wandb_parent(self) -> Path:
        """wandb's `dir=`: wandb writes its runs into `wandb/` under it."""
        return self.root

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"

    @property
    def wandb_steps(self) -> Path:
        return self.root / "wandb_steps.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def trial_log(self, trial_id: str) -> Path:
        """What a trial printed, all its attempts (`seg_tune.sweep.trial_log` owns the format)."""
        return self.logs / f"{trial_id}.log"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model"

    @property
    def segmentation(self) -> Path:
        return self.best_model / "segmentation.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    # ------------------------------------------------------------------ the final phase
    @property
    def final(self) -> Layout:
        """The final phase's own experiment folder (its Tune trials, wandb runs, checkpoints)."""
        return Layout(self.root / FINAL_DIR)

    @property
    def scores(self) -> Path:
        """Scores of a final phase's runs on valid and test (in the final phase's layout)."""
        return self.root / "scores"

    def moved_aside(self) -> Path:
        """Where `--fresh` moves an existing experiment (never deleted): `<name>.old-<time>`."""
        return self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")


def trial_dirname(trial_id: str) -> str:
    return f"trial_{trial_id}"


@dataclass(frozen=True)
class StudyLayout:
    """A study's folder, `<storage>/<study>/` (`seg_tune.sweep.study`):

    study.json        the cells and their axis values, and how each one's driver last ended
    <cell>/           each cell's experiment folder (`Layout`)
    logs/<cell>.log   what each cell's driver printed
    driver.lock       held by the study's driver
    ray_head.json     under cluster/ray_head.wilkes3: as in an experiment folder (`Layout`)
    report.md, study.csv, plots/   the study report (`seg_tune.study_report`)
    """

    root: Path

    @classmethod
    def of(cls, storage: Path, name: str) -> StudyLayout:
        return cls((storage / name).resolve())

    @property
    def name(self) -> str:
        return self.root.name

    def cell(self, name: str) -> Layout:
        return Layout(self.root / name)

    def cell_log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def study(self) -> Path:
        return self.root / "study.json"

    @property
    def head_pointer(self) -> Path:
        return self.root / HEAD_POINTER

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def csv(self) -> Path:
        return self.root / "study.csv"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def moved_aside(self) -> Path:
        return Layout(self.root).moved_aside()
