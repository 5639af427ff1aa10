"""The only place a Ray Tune `Tuner` is built or restored: the whole sweep (space, searcher,
scheduler, trainable, callbacks) can be read in `build_tuner`.

Metric and mode go to TuneConfig ONLY: the searcher and scheduler built here carry none (Ray
refuses a metric given both to a scheduler and to TuneConfig, and ResultGrid's best-result
defaults come from TuneConfig). `max_concurrent_trials` is not passed: the search algorithm
already limits concurrency to experiment.max_concurrent (and, with promotion by pausing, does not
count paused trials). Ray is imported here only inside functions: loading a space stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from seg_tune.metrics import STEP
from seg_tune.sweep.distributions import (
    Choice,
    Fixed,
    IntRange,
    LogUniform,
    QLogUniform,
    QUniform,
    Uniform,
    _Distribution,
)
from seg_tune.sweep.layout import TUNE_DIR, Layout, trial_dirname
from seg_tune.sweep.spec import ExperimentSpec, FifoScheduler
from seg_tune.sweep.trial import TrialSettings, checkpoint_retention

# --------------------------------------------------------------------------- the space


def tune_domain(dist: _Distribution, *, grid: bool, optuna: bool) -> Any:
    """A distribution as Ray Tune samples it (a constant for a fixed value)."""
    from ray import tune

    if isinstance(dist, Fixed):
        return dist.value
    if isinstance(dist, Choice):
        return tune.grid_search(list(dist.values)) if grid else tune.choice(list(dist.values))
    if isinstance(dist, Uniform):
        return tune.uniform(dist.min, dist.max)
    if isinstance(dist, LogUniform):
        return tune.loguniform(dist.min, dist.max)
    if isinstance(dist, IntRange):
        if grid:
            return tune.grid_search(dist.values())
        if dist.step == 1:  # randint's upper bound is exclusive
            return tune.randint(dist.min, dist.max + 1)
        return tune.qrandint(dist.min, dist.top, dist.step)
    if isinstance(dist, QUniform | QLogUniform) and dist.lo == dist.hi:
        return dist.lo
    if isinstance(dist, QUniform):
        return tune.quniform(dist.lo, dist.hi, dist.q)
    if isinstance(dist, QLogUniform):
        if optuna:  # Optuna drops quantization of log domains (with a warning); coerce() rounds
            return tune.loguniform(dist.lo, dist.hi)
        return tune.qloguniform(dist.lo, dist.hi, dist.q)
    raise TypeError(f"no Ray Tune domain for {type(dist).__name__}")


def param_space(spec: ExperimentSpec) -> dict[str, Any]:
    """`tune.Tuner(param_space=...)`: one entry per dotted key (fixed values as constants)."""
    grid = spec.searcher.type == "grid"
    optuna = spec.searcher.type == "optuna"
    return {key: tune_domain(d, grid=grid, optuna=optuna) for key, d in spec.space.items()}


# --------------------------------------------------------------------------- searcher, scheduler


def search_algorithm(spec: ExperimentSpec, state_path: Any) -> Any:
    """OptunaSearch (seeded TPE) behind a concurrency limit, or a seeded BasicVariantGenerator
    for random/grid (and for a space with nothing to search, which Optuna refuses). No metric or
    mode: TuneConfig gives them. With ASHA promotion by pausing, the limit does not count paused
    trials (`seg_tune.sweep.asha`, which reads the scheduler's state at `state_path`)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from seg_tune.sweep.asha import PauseAwareLimiter, PauseAwareVariantGenerator

    limit = spec.experiment.max_concurrent
    pausing = bool(spec.pause_rungs())
    searchable = any(d.searchable() for d in spec.space.values())
    if spec.searcher.type == "optuna" and searchable:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        startup = {"n_startup_trials": spec.searcher.startup_trials}
        sampler = optuna.samplers.TPESampler(
            seed=spec.searcher.seed, **(startup if spec.searcher.startup_trials else {})
        )
        if pausing:
            return PauseAwareLimiter(OptunaSearch(sampler=sampler), limit, state_path)
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=limit)
    if pausing:
        return PauseAwareVariantGenerator(
            state_path=state_path, max_concurrent=limit, random_state=spec.searcher.seed
        )
    return BasicVariantGenerator(max_concurrent=limit, random_state=spec.searcher.seed)


def scheduler(spec: ExperimentSpec, state_path: Any) -> Any:
    """ASHA on the reported `step` (max_t = max_steps) whose state survives restores in the JSON
    file `state_path` (`seg_tune.sweep.asha`: promotion by pausing, or Ray's stop-or-continue),
    or FIFO. No metric or mode: TuneConfig gives them (Ray refuses them in both places)."""
    from ray.tune.schedulers import FIFOScheduler

    from seg_tune.sweep.asha import PersistentASHA, PromotingASHA

    sched, e = spec.scheduler, spec.experiment
    if isinstance(sched, FifoScheduler):
        return FIFOScheduler()
    common = {
        "state_path": state_path,
        "time_attr": STEP,
        "max_t": e.max_steps,
        "grace_period": sched.grace_period_steps,
        "reduction_factor": sched.reduction_factor,
    }
    if sched.promotion == "pause":
        return PromotingASHA(max_concurrent=e.max_concurrent, **common)
    return PersistentASHA(brackets=sched.brackets, **common)


# --------------------------------------------------------------------------- the Tuner


def tune_config(spec: ExperimentSpec, state_path: Any) -> Any:
    """`TuneConfig`: the objective, the budget, the searcher and the scheduler (whose state file
    is `state_path`), and trial folders named `trial_<id>`. A pause-aware Optuna searcher goes
    into the `PauseAwareGenerator` Tune would otherwise wrap it in."""
    from ray import tune

    from seg_tune.sweep.asha import PauseAwareGenerator, PauseAwareLimiter

    e = spec.experiment
    search = search_algorithm(spec, state_path)
    return tune.TuneConfig(
        metric=e.metric,
        mode=e.mode,
        search_alg=PauseAwareGenerator(search) if isinstance(search, PauseAwareLimiter) else search,
        scheduler=scheduler(spec, state_path),
        num_samples=e.num_samples,
        trial_dirname_creator=lambda trial: trial_dirname(trial.trial_id),
        reuse_actors=spec.resources.reuse_actors,  # safe as nodes join: keep_starting_actors
    )


def keep_starting_actors() -> None:
    """Patch Tune's controller (Ray 2.60, `asha.TESTED_RAY`) so that a trial whose own new
    actor already holds its resources keeps it rather than take a cached one.

    With reuse_actors, Tune gives a staged trial a cached (free) actor whenever there is one, and
    kills the actor it had requested for the trial, even one that got its resources and is
    starting. Where trials pause sooner than a process starts (short rungs), every actor
    starting on a node that joined later (a worker job's) was killed so, and no trial ever ran
    there (measured: the SLURM worker-job test, one trial at a time on the head). An actor still
    waiting for resources is given up as before: that is the reuse that saves a process start.
    The cached actor goes to the next trial staged, or Tune lets it go."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._maybe_reuse_cached_actor
    if getattr(original, "_seg_tune", False):
        return

    @functools.wraps(original)
    def _maybe_reuse_cached_actor(self: Any, trial: Any) -> bool:
        own = self._trial_to_actor.get(trial)
        if (
            own is not None
            and trial not in self._resetting_trials
            and own in self._actor_manager._live_actors_to_ray_actors_resources
        ):
            return False  # its own process has its resources: let it start
        return original(self, trial)

    _maybe_reuse_cached_actor._seg_tune = True  # type: ignore[attr-defined]
    TuneController._maybe_reuse_cached_actor = _maybe_reuse_cached_actor


def build_tuner(
    spec: ExperimentSpec,
    layout: Layout,
    trainable: Callable[..., Any],
    callbacks: Sequence[Any] = (),
    *,
    restore: bool = False,
    keep_checkpoints: int | None = None,
) -> Any:
    """A new Tuner for the experiment in `layout`, or (`restore`) the one saved there, resumed:
    unfinished and errored trials go on from their checkpoints."""
    from ray import tune

    keep_starting_actors()
    if restore:
        # The same param_space again (resuming a changed space is refused before this): without
        # it Tune's status table loses its hyperparameter columns after a restore.
        return _restored(layout, trainable, param_space(spec))
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune_config(spec, layout.scheduler_state),
        run_config=run_config(spec, layout, callbacks, keep_checkpoints),
    )


def _restored(layout: Layout, trainable: Callable[..., Any], space: dict[str, Any]) -> Any:
    """The Tuner saved in `layout`, resumed: unfinished and errored trials go on."""
    from ray import tune

    own_staging_folder()
    return tune.Tuner.restore(
        str(layout.tune),
        trainable=trainable,
        param_space=space,
        resume_unfinished=True,
        resume_errored=True,
    )


def run_config(
    spec: ExperimentSpec, layout: Layout, callbacks: Sequence[Any], keep: int | None
) -> Any:
    """Tune's RunConfig of a Tuner in `layout`: its folder, retries (a lost node is not
    counted: `faults`), checkpoints, callbacks."""
    from ray import tune

    from seg_tune.sweep.faults import count_node_losses_apart

    count_node_losses_apart(spec.failure.max_node_losses)
    own_staging_folder()

    return tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(layout.root),
        failure_config=tune.FailureConfig(max_failures=spec.failure.max_retries),
        checkpoint_config=checkpoint_config(keep or spec.checkpoints.keep),
        callbacks=list(callbacks),
        verbose=1,
    )


def own_staging_folder() -> None:
    """Give this driver's Tuners a staging folder of their own (idempotent).

    Tune stages a driver's files (experiment state, searcher state, trial results) in
    `<Ray session>/artifacts/<timestamp>/<experiment folder name>/` on the driver's node and
    copies that whole folder to the experiment's storage (`StorageContext._timestamp` in
    ray/train/_internal/storage.py, taken to the second). Every seg_tune experiment's folder is
    named `tune` (TUNE_DIR), so two drivers on one Ray cluster (a study's cells; two
    `seg-tune run --address`) whose Tuners start within the same second shared it: each copied
    the other's experiment state into its own folder, and a resumed cell restored the other
    cell's trials. The process id is appended to the timestamp: drivers on one node differ, and
    drivers on other nodes stage on their own disks. A restored Tuner still reuses the staging
    folder recorded in its trials (Tune sets it from them), which was unique when made.
    """
    import os

    from ray.train._internal import storage

    context = storage.StorageContext
    if getattr(context, "_seg_tune_own_staging", False):
        return
    made = context.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        self._timestamp = f"{self._timestamp}_pid{os.getpid()}"

    context.__init__ = __init__
    context._seg_tune_own_staging = True


def build_final_tuner(
    spec: ExperimentSpec,
    layout: Layout,
    trainable: Callable[..., Any],
    run_keys: Sequence[str],
    callbacks: Sequence[Any] = (),
    *,
    restore: bool = False,
    keep_checkpoints: int | None = None,
) -> Any:
    """The final phase's Tuner in `layout` (the experiment's `final/`): a grid of one trial per
    run key, FIFO (every run trains its steps), at most experiment.max_concurrent at once; or
    the one saved there, resumed (finished runs stay finished)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from seg_tune.sweep.final import FINAL_KEY

    space = {FINAL_KEY: tune.grid_search(list(run_keys))}
    keep_starting_actors()
    if restore:
        return _restored(layout, trainable, space)
    e = spec.experiment
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=e.metric,
            mode=e.mode,
            search_alg=BasicVariantGenerator(max_concurrent=e.max_concurrent),
            scheduler=FIFOScheduler(),
            num_samples=1,
            trial_dirname_creator=lambda trial: trial_dirname(trial.trial_id),
            reuse_actors=spec.resources.reuse_actors,
        ),
        run_config=run_config(spec, layout, callbacks, keep_checkpoints),
    )


def checkpoint_config(keep: int | None) -> Any:
    """Tune's CheckpointConfig: `trial.checkpoint_retention`, so that the best model survives
    however long the trial goes on after it."""
    from ray import tune

    return tune.CheckpointConfig(**checkpoint_retention(keep))


def can_restore(layout: Layout) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(str(layout.tune))


class Sweep:
    """One experiment's trials on Ray Tune: their settings, trainable and callbacks, and the
    Tuner that runs them (`build_tuner`)."""

    def __init__(self, spec: ExperimentSpec, layout: Layout, corpus: Any = None) -> None:
        self.spec, self.layout, self.corpus = spec, layout, corpus
        self._shared: Any = None  # the corpus in Ray's object store (`SharedCorpus`), put once
        r = spec.resources
        self.settings = TrialSettings(
            spec_json=spec.model_dump_json(),
            workers=r.workers,
            cpus_per_worker=r.cpus_per_worker,
            gpus_per_worker=r.gpus_per_worker,
            keep_checkpoints=spec.checkpoints.keep or spec.base.training.keep_checkpoints,
            train_storage=str(layout.train_runs),
            experiment_dir=str(layout.root),
            use_ray_train=r.ray_train,
        )

    def trainable(self, settings: TrialSettings | None = None) -> Any:
        import ray
        from ray import tune

        from seg_tune.sweep.trial import SharedCorpus, run_trial, trial_resources

        settings = settings or self.settings
        needed = trial_resources(settings, ray.cluster_resources())
        if self._shared is None:
            self._shared = SharedCorpus.put(self.corpus)
        trainable = tune.with_parameters(run_trial, settings=settings, corpus=self._shared)
        return tune.with_resources(trainable, needed)

    def callbacks(self, layout: Layout | None = None, suffix: str = "") -> list[Any]:
        """Tune's logs kept whole, and the wandb runs of `layout`'s trials (default: the
        search's), grouped as the experiment (+ `suffix`: "-final" for the final phase)."""
        from seg_tune.sweep.tracking import (
            KeepTrialLogs,
            ResumeFromAKeptCheckpoint,
            TrialWarnings,
            WandbTrialRuns,
            resolve_mode,
        )

        w = self.spec.wandb
        mode = resolve_mode(w.mode)
        always = [KeepTrialLogs(), ResumeFromAKeptCheckpoint(), TrialWarnings()]
        if mode == "disabled":
            return always
        return [
            *always,
            WandbTrialRuns(
                project=w.project,
                group=(w.group or self.spec.experiment.name) + suffix,
                entity=w.entity,
                mode=mode,
                layout=layout or self.layout,
            ),
        ]

    def final_tuner(self, runs: Sequence[Any], restore: bool) -> Any:
        """The final phase's Tuner (`seg_tune.sweep.final`) for `runs`, in `final/`."""
        import json
        from dataclasses import replace

        final = self.layout.final
        settings = replace(
            self.settings,
            train_storage=str(final.train_runs),
            final_runs_json=json.dumps({r.key: r.as_params() for r in runs}),
        )
        return build_final_tuner(
            self.spec,
            final,
            self.trainable(settings),
            [r.key for r in runs],
            self.callbacks(final, suffix="-final"),
            restore=restore,
            keep_checkpoints=settings.keep_checkpoints,
        )

    def tuner(self, restore: bool) -> Any:
        return build_tuner(
            self.spec,
            self.layout,
            self.trainable(),
            self.callbacks(),
            restore=restore,
            keep_checkpoints=self.settings.keep_checkpoints,
        )
