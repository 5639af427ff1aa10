"""The typed, frozen spec of one experiment: the sections of a space file, validated and
resolved (`seg_tune.sweep.load` makes it from a file), and what follows from it: a trial's
RunConfig, the data configs a trial can get, ASHA's pause rungs, and the keys that must not change
when an experiment is resumed. The file syntax is documented in `seg_tune.sweep.load`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from seg_tune.config import DataConfig, RunConfig, ScoreConfig, Strict, validate, with_dotted
from seg_tune.errors import ConfigError
from seg_tune.sweep.distributions import Distribution
from seg_tune.sweep.rungs import rung_steps
from seg_tune.sweep.values import flatten

if TYPE_CHECKING:
    from seg_tune.corpus import Utterance

FORMAT = "seg_tune.search_space/1"  # of space.json (the name is older than the sweep package)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- sections


class ExperimentSection(Strict):
    name: str | None = None  # default: the file's stem
    description: str | None = None  # free text, shown in the report
    metric: str = "valid_loss"  # the objective: a reported metric (seg_tune.metrics)
    mode: Literal["min", "max"] | None = None  # default: the direction in which metric is better
    num_samples: int | None = Field(None, ge=1)  # default 10 (1 for grid: runs of the whole grid)
    max_concurrent: int = Field(2, ge=1)  # trials training at once (paused ones not counted)
    max_steps: int | None = Field(None, ge=1)  # default: training.steps
    # how the best trial (and best_model/) is chosen: "best" = on each trial's best evaluation of
    # the objective, whose checkpoint is kept; "last" = on its last. ASHA's rungs always compare
    # the values reported at the rung: trials are judged at the same budget, as ASHA assumes.
    scope: Literal["best", "last"] = "best"

    @model_validator(mode="after")
    def _check_name(self) -> ExperimentSection:
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ValueError(
                f"name {self.name!r}: use letters, digits, '.', '_' or '-' (it names folders)"
            )
        return self


class AshaScheduler(Strict):
    type: Literal["asha"] = "asha"  # or fifo: every trial runs its whole budget
    grace_period_steps: int | None = Field(None, ge=1)  # default: max_steps // 10
    reduction_factor: float = Field(3, gt=1)  # 1 in rf trials leaves each rung
    brackets: int = Field(1, ge=1)  # Hyperband-style brackets (continue only)
    # pause: a trial waits at a rung until it ranks among the rung's best within a budget of 1
    # in rf (seg_tune.sweep.asha.PromotingASHA); continue: Ray's stop-or-continue on arrival; auto:
    # pause, but continue for Ray Train trials (pausing one can leak its worker group, ray
    # issue 54305) and for several brackets
    promotion: Literal["auto", "pause", "continue"] = "auto"


class FifoScheduler(Strict):
    type: Literal["fifo"] = "fifo"


class Searcher(Strict):
    type: Literal["optuna", "random", "grid"] = "optuna"  # optuna = seeded TPE
    seed: int | None = 0  # None: unseeded
    # optuna: trials sampled at random before TPE models the results (None: Optuna's default,
    # 10); fewer suit small budgets, where ASHA then has more comparable trials to stop
    startup_trials: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_startup(self) -> Searcher:
        if self.startup_trials is not None and self.type != "optuna":
            raise ValueError(f"startup_trials applies to the optuna searcher, not {self.type!r}")
        return self


class Resources(Strict):
    workers: int = Field(1, ge=1)  # Ray Train workers per trial (DDP when > 1)
    cpus_per_worker: int | float = Field(1, gt=0)  # also the torch threads of a worker
    gpus_per_worker: int | float = Field(0, ge=0)  # fractional: several small trials share a GPU
    # auto: a one-worker trial trains inside its Tune trainable (faster start, same checkpoints,
    # resume and metrics); always: every trial is a Ray Train TorchTrainer job
    use_ray_train: Literal["auto", "always"] = "auto"
    # a one-worker trial's process goes on to the next trial, or to a paused trial's resume,
    # instead of a new process starting (Tune's reuse_actors: no Python start-up, no imports of
    # torch and transformers, the shared corpus kept); false: a new process for every attempt
    reuse_processes: bool = True

    @property
    def ray_train(self) -> bool:
        """Whether trials are Ray Train jobs (`seg_tune.sweep.trial`): several workers, or asked."""
        return self.workers > 1 or self.use_ray_train == "always"

    @property
    def reuse_actors(self) -> bool:
        """Tune's reuse_actors: on the one-worker path only. A Train trial's Tune process only
        drives its Train job (whose workers are new processes anyway), and a reused process
        must end its trial's thread within Tune's 2 s, which a running Train job does not."""
        return self.reuse_processes and not self.ray_train

    @model_validator(mode="after")
    def _check_gpus(self) -> Resources:
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError("gpus_per_worker above 1 must be a whole number")
        if self.workers > 1 and 0 < self.gpus_per_worker < 1:
            # Ray packs the workers' fractions onto one GPU, and NCCL refuses two ranks on one
            # device ("Duplicate GPU detected"): the trial would fail after Ray had started.
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker:g} with workers {self.workers}: the DDP "
                "workers of one trial cannot share a GPU (NCCL refuses two ranks on one device); "
                "use whole GPUs per worker, or workers: 1 to let small trials share a GPU"
            )
        return self


class Failure(Strict):
    max_retries: int = Field(2, ge=0)  # restarts of a failed trial (from its last checkpoint)
    # restarts of a trial whose node died, not counted in max_retries (seg_tune.sweep.faults)
    max_node_losses: int = Field(5, ge=0)
    # trials that may end in ERROR (after their retries) with the sweep still exiting 0
    allow_failed_trials: int = Field(0, ge=0)


class Checkpoints(Strict):
    keep: int | None = Field(None, ge=1)  # default: training.keep_checkpoints


class Wandb(Strict):
    project: str = "seg_tune"  # the wandb project
    entity: str | None = None  # the wandb team or user; null: your default
    group: str | None = None  # default: the experiment's name
    mode: Literal["auto", "online", "offline", "disabled"] = (
        "auto"  # auto: online with WANDB_API_KEY
    )


class Hub(Strict):
    repo_id: str | None = None  # e.g. "user/childes-gpt2"; None = do not push
    private: bool = True  # the hub repository's visibility (token: HF_TOKEN only)

    @model_validator(mode="after")
    def _check_repo(self) -> Hub:
        if self.repo_id is not None and not re.match(
            r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$", self.repo_id
        ):
            raise ValueError(f"repo_id {self.repo_id!r}: expected 'name' or 'owner/name'")
        return self


class FinalSection(Strict):
    """The final phase (`seg_tune.sweep.final`): after the search, the `top_k` best
    configurations are each retrained from scratch with `seeds` new seeds, as Tune trials on the
    same cluster; each final model chooses its cue x strategy and cutoffs on the validation split
    and is then scored once on the test split, beside its untrained control and the baselines."""

    enabled: bool | None = None  # null: on when the data has a test split (data.test/test_fraction)
    top_k: int = Field(3, ge=1)  # configurations retrained, best first by the search's objective
    # seeds per configuration: training.seed + 1 .. training.seed + seeds (the search used
    # training.seed itself)
    seeds: int = Field(3, ge=1)
    steps: int | None = Field(None, ge=1)  # null: the steps its search trial reached
    valid_utterances: int = Field(2000, ge=1)  # validation utterances the row and cutoffs come from
    # the test sample scored, one of (null both: the whole test split): the first
    # test_utterances utterances of the split, or the first whole utterances whose phonemes add
    # up to at least test_phonemes (the shortest such prefix: it overshoots by less than one
    # utterance), so that corpora are compared on equal amounts of speech
    test_utterances: int | None = Field(None, ge=1)
    test_phonemes: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_sample_size(self) -> FinalSection:
        if self.test_utterances is not None and self.test_phonemes is not None:
            raise ValueError(
                f"test_utterances {self.test_utterances} and test_phonemes {self.test_phonemes}: "
                "give one of them (a sample of utterances or of phonemes), not both"
            )
        return self

    def test_sample(self, test: Sequence[Utterance], where: str) -> list[Utterance]:
        """The test utterances the final phase scores (`sample_test`)."""
        return sample_test(
            test, utterances=self.test_utterances, phonemes=self.test_phonemes, where=where
        )


def sample_test(
    test: Sequence[Utterance], *, utterances: int | None, phonemes: int | None, where: str
) -> list[Utterance]:
    """The final phase's test sample of a whole split (`test`, in corpus order): its first
    `utterances` utterances (all when it has fewer), or its shortest prefix of whole utterances
    whose phonemes (`Utterance.phonemes`: word boundaries not counted) add up to at least
    `phonemes`, or all of it. ConfigError, naming `where` (the split), when the split holds
    fewer than `phonemes`: a smaller sample would make the comparison across corpora unequal."""
    if phonemes is None:
        return list(test[:utterances] if utterances else test)
    kept, count = [], 0
    for utterance in test:
        if count >= phonemes:
            break
        kept.append(utterance)
        count += len(utterance)  # its phonemes
    if count < phonemes:
        raise ConfigError(
            f"final.test_phonemes: {phonemes:,} phonemes (a study's eval_phonemes), but the "
            f"test split ({where}) has {count:,} in {len(kept):,} utterances; lower it or give "
            "the data a larger test split"
        )
    return kept


# --------------------------------------------------------------------------- the spec


class ExperimentSpec(Strict):
    """A validated search-space file, resolved (defaults filled) and ready for Ray Tune."""

    experiment: ExperimentSection  # every field set
    base: RunConfig  # data/model/training defaults, fixed values applied, steps = max_steps
    base_data: dict[str, Any]  # the sparse dict `base` came from; trial configs start from it
    space: dict[str, Distribution]
    scheduler: AshaScheduler | FifoScheduler  # ASHA's grace_period_steps is set
    searcher: Searcher
    resources: Resources
    failure: Failure
    checkpoints: Checkpoints  # keep is set
    wandb: Wandb  # group is set
    hub: Hub
    final: FinalSection  # enabled is set
    source_path: str
    notices: tuple[str, ...] = ()

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        """The RunConfig of one trial: base with the sampled dotted params applied.

        Built from the sparse `base_data` (not from the resolved base), so that a sampled
        model.preset still fills layers/width/heads the file did not give."""
        unknown = sorted(set(params) - set(self.space))
        if unknown:
            raise ValueError(f"parameters not in the search space: {unknown}")
        overrides = {key: self.space[key].coerce(value) for key, value in params.items()}
        # the best checkpoint of a trial is its best on the experiment's objective
        overrides["training.select_metric"] = self.experiment.metric
        overrides["training.select_mode"] = self.experiment.mode
        if rungs := self.pause_rungs():  # a trial paused at a rung resumes from that very step
            overrides["training.checkpoint_at_steps"] = rungs
        return validate(RunConfig, with_dotted(self.base_data, overrides), source=self.source_path)

    def final_config(self, run: Mapping[str, Any]) -> RunConfig:
        """The RunConfig of a final run (`seg_tune.sweep.final.FinalRun.as_params`): its search
        trial's config, retrained from scratch with the run's seed for the run's steps."""
        cfg = self.trial_config(run["params"])
        return cfg.with_overrides({"training.seed": run["seed"], "training.steps": run["steps"]})

    def data_configs(self) -> list[DataConfig]:
        """Every distinct data config a trial can get: the base one, and when the space
        searches `data.` keys, those of each combination of their corners (every choice value;
        a range's ends and an interior point), which is what the driver reads before Ray."""
        keys = [key for key in self.space if key.startswith("data.")]
        found = {self.base.data.model_dump_json(): self.base.data}
        for values in itertools.product(*(self.space[key].corners() for key in keys)):
            point = {k: self.space[k].coerce(v) for k, v in zip(keys, values, strict=True)}
            data = validate(
                RunConfig, with_dotted(self.base_data, point), source=self.source_path
            ).data
            found.setdefault(data.model_dump_json(), data)
        return list(found.values())

    def pause_rungs(self) -> list[int]:
        """The steps at which ASHA with promotion by pausing judges trials ([] otherwise)."""
        s = self.scheduler
        if not isinstance(s, AshaScheduler) or s.promotion != "pause":
            return []
        return rung_steps(s.grace_period_steps, s.reduction_factor, self.experiment.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able resolved description for summary.json. Holds no secret: none is ever read."""
        return {
            "format": FORMAT,
            "source_path": self.source_path,
            "experiment": self.experiment.model_dump(mode="json"),
            "base": self.base.model_dump(mode="json"),
            "space": {k: d.model_dump(mode="json") for k, d in self.space.items()},
            "scheduler": self.scheduler.model_dump(mode="json"),
            "searcher": self.searcher.model_dump(mode="json"),
            "resources": self.resources.model_dump(mode="json"),
            "failure": self.failure.model_dump(mode="json"),
            "checkpoints": self.checkpoints.model_dump(mode="json"),
            "wandb": self.wandb.model_dump(mode="json"),
            "hub": self.hub.model_dump(mode="json"),
            "final": self.final.model_dump(mode="json"),
            "notices": list(self.notices),
        }

    def document(self) -> dict[str, Any]:
        """The spec as a file in seg_tune's own syntax (loading it gives the same spec)."""
        training = dict(self.base_data.get("training", {}))
        training.pop("steps", None)  # experiment.max_steps says it
        return {
            "experiment": self.experiment.model_dump(),
            "data": copy.deepcopy(self.base_data.get("data", {})),
            "model": copy.deepcopy(self.base_data.get("model", {})),
            "training": training,
            "score": copy.deepcopy(self.base_data.get("score", {})),
            "space": {k: d.model_dump() for k, d in self.space.items()},
            "scheduler": self.scheduler.model_dump(),
            "searcher": self.searcher.model_dump(),
            "resources": self.resources.model_dump(),
            "failure": self.failure.model_dump(),
            "checkpoints": self.checkpoints.model_dump(),
            "wandb": self.wandb.model_dump(),
            "hub": self.hub.model_dump(),
            "final": self.final.model_dump(),
        }


# What must not change between a run and its resume (dotted prefixes of `ExperimentSpec.to_dict`):
# the rest (wandb, hub, resources, failure, checkpoints, max_concurrent, name, notices) may.
SAME_ON_RESUME = (
    "experiment.metric",
    "experiment.mode",
    "experiment.num_samples",
    "experiment.max_steps",
    "base",
    "space",
    "scheduler",
    "searcher",
    "final",
)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys of two `ExperimentSpec.to_dict()`s that differ where a resume would mix two
    experiments."""
    before, after = flatten(old), flatten(new)
    if "final" not in old:  # saved before the final phase existed: it starts with defaults
        after = {k: v for k, v in after.items() if not k.startswith("final.")}
    if "score" not in old.get("base", {}):  # saved before base.score existed: it had defaults
        defaults = flatten({"base": {"score": ScoreConfig().model_dump(mode="json")}})
        after = {k: v for k, v in after.items() if k not in defaults or v != defaults[k]}
    return sorted(
        key
        for key in set(before) | set(after)
        if key.startswith(SAME_ON_RESUME) and before.get(key) != after.get(key)
    )


def read_saved(space_json: Path) -> dict[str, Any] | None:
    """A saved `ExperimentSpec.to_dict()` (the experiment folder's space.json), or None when
    there is none or it cannot be read."""
    try:
        saved = json.loads(Path(space_json).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def saved_distribution_types(space_json: Path) -> dict[str, str]:
    """The distribution type of each searched key in a saved spec, e.g. {"training.lr":
    "loguniform"}; {} when there is none."""
    saved = read_saved(space_json) or {}
    space = saved.get("space")
    if not isinstance(space, dict):
        return {}
    return {k: str(d.get("type")) for k, d in space.items() if isinstance(d, dict)}
