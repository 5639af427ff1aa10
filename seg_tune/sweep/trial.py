"""Trials of a sweep: the training loop run by Ray Tune, one trial per sampled configuration.

Two paths, same loop (`seg_tune.train.train_loop`), same checkpoints, metrics and resume:
- a trial with several workers is a Ray Train (V2) `TorchTrainer` launched from a Tune function
  trainable; its workers run DDP, rank 0 reports to Tune through `TuneReportCallback`, and a
  stable Train run name (the trial id) makes a restarted trial resume from Train's checkpoint.
- a single-worker trial trains inside the Tune function trainable itself (`tune.report` /
  `tune.get_checkpoint`), which skips the Train controller and worker group start-up (measured in
  BENCHMARKS.md). `resources.use_ray_train: always` forces the Train path for one worker too.

The trial driver of the Train path holds the custom resource `seg_tune_trial` (one per concurrent
trial, added by `ray.init` or the SLURM script's `ray start`), leaving every CPU to the workers;
on a cluster without it the driver asks for a sliver of a CPU instead.
"""

from __future__ import annotations

import builtins
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seg_tune import checkpoint as ckpt
from seg_tune.config import RunConfig
from seg_tune.metrics import BEST_SO_FAR, NODE_ID
from seg_tune.sweep.layout import Layout
from seg_tune.train import Checkpointer, PreparedCorpus, train_loop

TRIAL_RESOURCE = "seg_tune_trial"


@dataclass(frozen=True)
class TrialSettings:
    """What every trial needs besides its sampled parameters (picklable, no secrets)."""

    spec_json: str  # the ExperimentSpec: trial configs are built by spec.trial_config
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    keep_checkpoints: int
    train_storage: str
    use_ray_train: bool
    # the final phase's runs, {key: FinalRun.as_params()} as JSON (None: a search trial); a final
    # trial's one parameter (`seg_tune.sweep.final.FINAL_KEY`) names its run
    final_runs_json: str | None = None
    # the experiment folder (`Layout.root`): each trial writes its log there
    # (`Layout.trial_log`, `seg_tune.sweep.trial_log`); None (pickled before it existed): no log
    experiment_dir: str | None = None

    def log_path(self, trial_id: str) -> Path | None:
        if self.experiment_dir is None:
            return None
        return Layout(Path(self.experiment_dir)).trial_log(trial_id)

    def config(self, params: dict[str, Any]) -> RunConfig:
        from seg_tune.sweep.final import FINAL_KEY
        from seg_tune.sweep.spec import ExperimentSpec

        spec = ExperimentSpec.model_validate_json(self.spec_json)
        if FINAL_KEY in params and self.final_runs_json is not None:
            cfg = spec.final_config(json.loads(self.final_runs_json)[params[FINAL_KEY]])
        else:
            cfg = spec.trial_config(params)
        if cfg.training.threads:
            return cfg
        # Ray sets OMP_NUM_THREADS, but torch must be told: one thread per CPU of the worker.
        return cfg.with_overrides({"training.threads": max(1, int(self.cpus_per_worker))})


def _device(gpus: float, ray_train: bool = False) -> torch.device:
    """cuda when the trial holds a GPU torch can use (on a Ray Train worker: the one Train
    assigned it), named in the trial's log; otherwise the CPU, saying why if it holds a GPU."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(
            f"seg_tune: this trial holds {gpus:g} GPU but torch {torch.__version__} cannot use "
            "CUDA (a CPU build, or no driver on this node); training on the CPU",
            file=sys.stderr,
            flush=True,
        )
        return torch.device("cpu")
    if ray_train:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cuda", torch.cuda.current_device())
    print(
        f"seg_tune: trial trains on {device} ({torch.cuda.get_device_name(device)}), "
        f"holding {gpus:g} GPU",
        flush=True,
    )
    return device


def _report_with_checkpoint(
    report: Any, checkpoint_cls: Any, metrics: dict, fill: Checkpointer
) -> None:
    with tempfile.TemporaryDirectory(prefix="seg_tune_ckpt_") as tmp:
        fill(Path(tmp))
        report(metrics, checkpoint=checkpoint_cls.from_directory(tmp))


class TuneSession:
    """The single-worker path: the Tune function trainable is the training process."""

    rank, world_size = 0, 1

    def __init__(self, gpus: float) -> None:
        self.device = _device(gpus)
        self.node_id = _node_id()  # reported with every result (`metrics.NODE_ID`)
        self.own: set[Path] = set()  # Ray's checkpoint folders offered by `restore`

    def restore(self) -> AbstractContextManager[list[Path]]:
        from ray import tune

        return _candidates(tune.get_checkpoint(), self.own)

    def set_aside(self, folder: Path) -> Path | None:
        return _set_aside(folder, self.own)

    def report(self, metrics: dict[str, Any], checkpoint: Checkpointer | None) -> None:
        from ray import tune

        metrics = {**metrics, NODE_ID: self.node_id}
        if checkpoint is None:
            tune.report(metrics)
        else:
            _report_with_checkpoint(tune.report, tune.Checkpoint, metrics, checkpoint)


class TrainSession:
    """A Ray Train worker; rank 0 writes the checkpoints, every rank reports."""

    def __init__(self, gpus: float) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = _device(gpus, ray_train=True)
        self.node_id = _node_id()
        self.own: set[Path] = set()

    def restore(self) -> AbstractContextManager[list[Path]]:
        import ray.train

        return _candidates(ray.train.get_checkpoint(), self.own)

    def set_aside(self, folder: Path) -> Path | None:
        return _set_aside(folder, self.own)

    def report(self, metrics: dict[str, Any], checkpoint: Checkpointer | None) -> None:
        import ray.train

        metrics = {**metrics, NODE_ID: self.node_id}
        if checkpoint is None or self.rank != 0:
            ray.train.report(metrics)
        else:
            _report_with_checkpoint(ray.train.report, ray.train.Checkpoint, metrics, checkpoint)


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


@contextmanager
def _candidates(checkpoint: Any, own: set[Path]) -> Iterator[list[Path]]:
    """The folders a restarted trial may resume from, newest first: Ray's latest checkpoint,
    then the older ones Ray kept beside it (on a local or shared filesystem, where the folders
    are read in place and added to `own`); elsewhere the latest, downloaded for the block."""
    if checkpoint is None:
        yield []
        return
    latest = Path(checkpoint.path)
    if latest.is_dir():
        older = [
            p
            for p in latest.parent.glob("checkpoint_*")
            if p.is_dir() and p.name < latest.name and not ckpt.is_set_aside(p)
        ]
        found = [latest, *sorted(older, key=lambda p: p.name, reverse=True)]
        own.update(found)
        yield found
        return
    with checkpoint.as_directory() as folder:
        yield [Path(folder)]


def _set_aside(folder: Path, own: set[Path]) -> Path | None:
    """Ray's own checkpoint folder moved to `<name>.corrupt`, an empty one left for Ray to prune
    (Ray fails on a missing one); a downloaded copy is left alone (None)."""
    return ckpt.set_aside(folder, placeholder=True) if folder in own else None


# The shared corpus this process last fetched, by its object's id: a reused trial process (Tune's
# reuse_actors, `Resources.reuse_processes`) fetches and unpickles it once, not once per trial.
# One entry: a process serves one sweep's trials (its Tuner's actors are its own).
_FETCHED: dict[str, PreparedCorpus] = {}


@dataclass(frozen=True)
class SharedCorpus:
    """The sweep's `PreparedCorpus` in Ray's object store, put there once by the driver
    (`put`); a trial gets it with `get`, from this process's copy when it has one."""

    ref: Any  # ray.ObjectRef of the PreparedCorpus

    @classmethod
    def put(cls, corpus: PreparedCorpus | None) -> SharedCorpus | None:
        import ray

        return None if corpus is None else cls(ray.put(corpus))

    def get(self) -> PreparedCorpus:
        key = self.ref.hex()
        if key not in _FETCHED:
            import ray

            _FETCHED.clear()
            _FETCHED[key] = ray.get(self.ref)
        return _FETCHED[key]


def _fetched(corpus: SharedCorpus | PreparedCorpus | None) -> PreparedCorpus | None:
    return corpus.get() if isinstance(corpus, SharedCorpus) else corpus


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function; every rank copies its output into the trial's log."""
    cfg = RunConfig.model_validate_json(loop_config["config"])
    log = loop_config.get("log")
    # Ray Train V2 patches `print` on its workers to write both to stdout and to its logger,
    # whose console handler writes to stderr: copying stdout too would log each print twice.
    copy_stdout = getattr(builtins.print, "__module__", "builtins") == "builtins"
    with _logged(Path(log) if log else None, "train worker", _world_rank(), copy_stdout):
        session = TrainSession(loop_config["gpus"])
        train_loop(cfg, session, progress=False, corpus=_fetched(loop_config.get("corpus")))


def _world_rank() -> int:
    import ray.train

    return ray.train.get_context().get_world_rank()


def _logged(
    path: Path | None, label: str, rank: int | None = None, stdout: bool = True
) -> AbstractContextManager:
    from contextlib import nullcontext

    from seg_tune.sweep.trial_log import captured

    return nullcontext() if path is None else captured(path, label, rank, stdout)


def run_trial(
    params: dict[str, Any],
    settings: TrialSettings,
    corpus: SharedCorpus | PreparedCorpus | None = None,
) -> None:
    """The Tune function trainable of one trial. `corpus`: the sweep's corpus, read and encoded
    once by the driver and put in Ray's object store once (`SharedCorpus`); a Ray Train trial
    hands the handle on to its workers, which fetch it themselves."""
    from ray import tune

    log = settings.log_path(tune.get_context().get_trial_id())
    with _logged(log, "trial"):
        _run_trial(settings.config(params), settings, corpus, log)


def _run_trial(
    cfg: RunConfig,
    settings: TrialSettings,
    corpus: SharedCorpus | PreparedCorpus | None,
    log: Path | None,
) -> None:
    if not settings.use_ray_train:
        session = TuneSession(settings.gpus_per_worker)
        train_loop(cfg, session, progress=False, corpus=_fetched(corpus))
        return
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {"CPU": settings.cpus_per_worker}
    if settings.gpus_per_worker:
        resources["GPU"] = settings.gpus_per_worker
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "config": cfg.model_dump_json(),
            "gpus": settings.gpus_per_worker,
            "corpus": corpus,
            "log": None if log is None else str(log),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers,
            use_gpu=settings.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        # Ray picks NCCL for GPU workers, which needs CUDA: where this node's torch has none,
        # they train on the CPU (`_device` says so in their log) and talk over gloo instead.
        torch_config=TorchConfig(backend=None if torch.cuda.is_available() else "gloo"),
        run_config=ray.train.RunConfig(
            name=tune.get_context().get_trial_id(),  # stable: a restarted trial resumes
            storage_path=settings.train_storage,
            # no retries of Train's own: a failed worker fails the attempt, and Tune retries it
            # (from Train's latest checkpoint: the run name is stable), so failure.max_retries
            # counts a trial's attempts on both paths, and a lost node is told apart (`faults`)
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(
                **checkpoint_retention(settings.keep_checkpoints)
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def checkpoint_retention(keep: int | None) -> dict[str, Any]:
    """Which checkpoints a trial keeps, for Tune's and Ray Train's CheckpointConfig alike: the
    latest (Ray always keeps it: a trial resumes from there) and the `keep` newest of those
    written at a new best of the objective (`BEST_SO_FAR` = 1)."""
    return {
        "num_to_keep": keep,
        "checkpoint_score_attribute": BEST_SO_FAR,
        "checkpoint_score_order": "max",
    }


def trial_resources(
    settings: TrialSettings, cluster_resources: dict[str, float]
) -> dict[str, float]:
    """Resources Tune reserves for a trial's function trainable."""
    if not settings.use_ray_train:
        needed = {"CPU": settings.cpus_per_worker}
        if settings.gpus_per_worker:
            needed["GPU"] = settings.gpus_per_worker
        return needed
    if cluster_resources.get(TRIAL_RESOURCE, 0) >= 1:
        return {TRIAL_RESOURCE: 1}
    return {"CPU": 0.01}


def placement_problem(settings: TrialSettings, nodes: list[dict[str, Any]]) -> str | None:
    """Why not even one trial fits on this cluster (`ray.nodes()`), or None when one does.

    Tune would otherwise wait for resources that never come. Each worker needs its CPUs and GPUs
    on one node; a trial needs all its workers placed at once.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    cpus, gpus = settings.cpus_per_worker, settings.gpus_per_worker

    def workers_on(resources: dict[str, float]) -> int:
        # Ray counts resources in units of 1e-4: round before dividing
        counts = [int(round(resources.get("CPU", 0), 4) / cpus + 1e-9)]
        if gpus:
            counts.append(int(round(resources.get("GPU", 0), 4) / gpus + 1e-9))
        return min(counts)

    placed = sum(workers_on(r) for r in alive)
    if placed >= settings.workers:
        return None
    total_cpu = sum(r.get("CPU", 0) for r in alive)
    total_gpu = sum(r.get("GPU", 0) for r in alive)
    return (
        f"resources: a trial needs {settings.workers} worker(s) of {cpus:g} CPU and {gpus:g} GPU "
        f"each (resources.workers, cpus_per_worker, gpus_per_worker), but this Ray cluster "
        f"({len(alive)} node(s), {total_cpu:g} CPUs, {total_gpu:g} GPUs) can place {placed}; "
        "lower them or run on a cluster that has the resources"
    )
