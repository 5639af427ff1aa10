"""Space files -> `ExperimentSpec`: reading, validation, corner checks and smoke runs.

The file format is documented in `search_spaces/README.md` (seg_tune's own syntax, the
distributions, the W&B sweep syntax and what `--smoke` shrinks).

`python -m seg_tune.run SPACE.yaml` reads one YAML file. Everything is checked here, in well under
a second and before Ray starts, so that a bad file fails at once with one line naming the key, the
value and what is allowed (`ConfigError`, exit status 2) instead of failing trials an hour later.
Every corner of the space (each choice value; each range's ends, their neighbours and a non-round
interior point) is validated against RunConfig: each key alone, every pair of keys, and every
combination when there are at most 4096, so no trial can fail on a bad sample.

The distributions (a `space` value each) are in `seg_tune.sweep.distributions`, the conversion of W&B
sweep files in `seg_tune.sweep.wandb`; this module reads files, builds and checks the spec and
shrinks it for smoke runs; `seg_tune.sweep.tuner` makes the Ray Tune objects.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from seg_tune.config import (
    RunConfig,
    TrainingConfig,
    read_yaml,
    set_dotted,
    validate,
    with_dotted,
)
from seg_tune.errors import ConfigError, FieldError
from seg_tune.metrics import REPORTED_METRICS
from seg_tune.model import PRESETS
from seg_tune.sweep.distributions import (
    Choice,
    DistError,
    Fixed,
    _Distribution,
    parse_distribution,
)
from seg_tune.sweep.keys import (
    OUR_SECTIONS,
    SPACE_KEYS,
    STUDY_SECTION,
    check_metric,
    unknown_key,
)
from seg_tune.sweep.spec import (
    AshaScheduler,
    Checkpoints,
    ExperimentSection,
    ExperimentSpec,
    Failure,
    FifoScheduler,
    FinalSection,
    Hub,
    Resources,
    Searcher,
    Wandb,
)
from seg_tune.sweep.values import show
from seg_tune.sweep.wandb import WANDB_KEYS, from_wandb

DEFAULT_NUM_SAMPLES = 10
FULL_PRODUCT_LIMIT = 4096  # corner combinations checked exhaustively; beyond, every pair
GRID_LIMIT = 1000  # values one int distribution may expand to under the grid searcher
_SECRET_KEYS = ("token", "api_key", "key", "hf_token", "wandb_api_key", "password")
M = typing.TypeVar("M", bound=BaseModel)


def _section(cls: type[M], data: Any, prefix: str, source: str) -> M:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key {prefix!r} = {show(data)}: expected a mapping")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(
            FieldError.first(exc, prefix).line(source, allowed=cls.model_fields, show=show)
        ) from None


def read_space_doc(path: str | Path) -> dict[str, Any]:
    """A space (or study) file's mapping of sections. Raises ConfigError."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections ({', '.join(OUR_SECTIONS[:5])}, ...), "
            f"got {type(raw).__name__}"
        )
    return raw


def load_space(path: str | Path) -> ExperimentSpec:
    """Read, validate and resolve a search-space file (either syntax). Raises ConfigError (a
    study file too: its cells are `seg_tune.sweep.study`'s)."""
    raw = read_space_doc(path)
    if STUDY_SECTION in raw:
        raise ConfigError(
            f"{path}: a study file (it has a `{STUDY_SECTION}` section): "
            "`python -m seg_tune.run` runs its cells; read one with seg_tune.sweep.study"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "experiment"
    return load_doc(raw, source=str(path), default_name=stem)


def load_doc(raw: Mapping[str, Any], *, source: str, default_name: str) -> ExperimentSpec:
    """Validate and resolve a space file's mapping (either syntax); `source` names it in
    errors. Raises ConfigError."""
    notices: list[str] = []
    labels: dict[str, str] = {}
    if "parameters" in raw or "method" in raw:
        doc = from_wandb(raw, source, notices, labels)
    else:
        doc = raw
    return _build(doc, source=source, default_name=default_name, notices=notices, labels=labels)


# --------------------------------------------------------------------------- building a spec


def _build(
    doc: Mapping[str, Any],
    *,
    source: str,
    default_name: str,
    notices: list[str],
    labels: dict[str, str],
) -> ExperimentSpec:
    for key in doc:
        if key not in OUR_SECTIONS:
            hint = "; W&B sweep keys need 'parameters' or 'method'" if key in WANDB_KEYS else ""
            raise unknown_key(source, str(key), OUR_SECTIONS, hint)
    _refuse_secrets(doc, source)
    exp = _section(ExperimentSection, doc.get("experiment"), "experiment", source)
    searcher = _section(Searcher, doc.get("searcher"), "searcher", source)
    sched = _scheduler_section(doc.get("scheduler"), source)
    resources = _section(Resources, doc.get("resources"), "resources", source)
    failure = _section(Failure, doc.get("failure"), "failure", source)
    checkpoints = _section(Checkpoints, doc.get("checkpoints"), "checkpoints", source)
    wandb = _section(Wandb, doc.get("wandb"), "wandb", source)
    hub = _section(Hub, doc.get("hub"), "hub", source)
    final = _section(FinalSection, doc.get("final"), "final", source)
    run_doc = _run_doc(doc, source)
    for key in ("select_metric", "select_mode"):
        if key in run_doc["training"]:
            raise ConfigError(
                f"{source}: key 'training.{key}': a sweep selects each trial's best checkpoint on "
                "its objective; set experiment.metric (and experiment.mode) instead"
            )
    space = _parse_space(doc.get("space"), source, labels)

    max_steps = _max_steps(exp, run_doc, notices)
    run_doc["training"]["steps"] = max_steps
    keep = _keep(checkpoints, run_doc, source)
    run_doc["training"]["keep_checkpoints"] = keep
    _momentum_rule(space, run_doc, notices)
    validate(RunConfig, run_doc, source=source)  # the file's own defaults, before any sample
    _absolute_paths(run_doc)
    _refuse_moving_test(space, run_doc, source, labels)

    metric, mode = _objective(exp, source, labels)
    _check_grid(space, searcher, source, labels)
    _check_corners(run_doc, space, source, labels, notices)
    for key, dist in space.items():
        if isinstance(dist, Fixed):
            set_dotted(run_doc, key, dist.value)
    base = validate(RunConfig, run_doc, source=source)
    if space and not any(d.searchable() for d in space.values()):
        notices.append("space: nothing is searched; every trial runs the same configuration")

    name = exp.name or default_name
    num_samples = exp.num_samples or (1 if searcher.type == "grid" else DEFAULT_NUM_SAMPLES)
    experiment = exp.model_copy(
        update={
            "name": name,
            "metric": metric,
            "mode": mode,
            "num_samples": num_samples,
            "max_steps": max_steps,
        }
    )
    return ExperimentSpec(
        experiment=experiment,
        base=base,
        base_data=run_doc,
        space=space,
        scheduler=_resolve_scheduler(sched, max_steps, resources, source, labels),
        searcher=searcher,
        resources=resources,
        failure=failure,
        checkpoints=checkpoints.model_copy(update={"keep": keep}),
        wandb=wandb.model_copy(update={"group": wandb.group or name}),
        hub=hub,
        final=_resolve_final(final, base, source),
        source_path=source,
        notices=tuple(dict.fromkeys(notices)),
    )


def _resolve_final(final: FinalSection, base: RunConfig, source: str) -> FinalSection:
    """`final.enabled` set: on by default when the data has a test split; asked for without
    one, refused (the final phase scores on test)."""
    if final.enabled is None:
        return final.model_copy(update={"enabled": base.data.has_test})
    if final.enabled and not base.data.has_test:
        raise ConfigError(
            f"{source}: key 'final.enabled' = true: the final phase scores its models on a test "
            "split, and the data has none; give data.test (a source) or data.test_fraction"
        )
    return final


def _refuse_secrets(doc: Mapping[str, Any], source: str) -> None:
    env = {"wandb": "WANDB_API_KEY", "hub": "HF_TOKEN"}
    for section, variable in env.items():
        data = doc.get(section)
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in _SECRET_KEYS:
                    raise ConfigError(
                        f"{source}: key '{section}.{key}': secrets are never read from a space "
                        f"file (it is copied into results); set {variable} in the environment"
                    )


def _scheduler_section(data: Any, source: str) -> AshaScheduler | FifoScheduler:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key 'scheduler' = {show(data)}: expected a mapping")
    kind = data.get("type", "asha")
    classes: dict[str, type[AshaScheduler] | type[FifoScheduler]] = {
        "asha": AshaScheduler,
        "fifo": FifoScheduler,
    }
    if kind not in classes:
        raise ConfigError(
            f"{source}: key 'scheduler.type' = {show(kind)}: allowed: {', '.join(classes)}"
        )
    return _section(classes[kind], data, "scheduler", source)


def _run_doc(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The data/model/training/score sections as given (sparse), for RunConfig."""
    out: dict[str, Any] = {}
    for name in ("data", "model", "training", "score"):
        value = doc.get(name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: key {name!r} = {show(value)}: expected a mapping")
        out[name] = copy.deepcopy(dict(value))
    return out


_FORBIDDEN_SPACE_KEYS = {
    "training.steps": "set experiment.max_steps (every trial's budget and ASHA's max_t)",
    "training.keep_checkpoints": "set checkpoints.keep",
    "training.select_metric": "a trial's best checkpoint is its best on experiment.metric",
    "training.select_mode": "a trial's best checkpoint is its best on experiment.metric",
    "score.type_key": "it defines the scores trials are compared on; set score.type_key",
    "data.test_fraction": "the test split is the same for every trial; set data.test_fraction",
}


def _parse_space(data: Any, source: str, labels: dict[str, str]) -> dict[str, _Distribution]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key 'space' = {show(data)}: expected a mapping")
    space: dict[str, _Distribution] = {}
    for key, raw in data.items():
        label = labels.get(f"space.{key}", f"space.{key}")
        if key in _FORBIDDEN_SPACE_KEYS:
            raise ConfigError(
                f"{source}: key {label!r} cannot be searched; {_FORBIDDEN_SPACE_KEYS[key]}"
            )
        if str(key).startswith("data.test."):
            raise ConfigError(
                f"{source}: key {label!r} cannot be searched; the test split is the same for "
                "every trial: set data.test"
            )
        if key not in SPACE_KEYS:
            close = difflib.get_close_matches(str(key), sorted(SPACE_KEYS), n=1)
            maybe = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {label!r}{maybe}; space keys are dotted fields of "
                "model., training. or data., e.g. training.lr, model.n_embd, model.dropout"
            )
        try:
            space[key] = parse_distribution(raw)
        except DistError as exc:
            raise ConfigError(f"{source}: key {label!r} = {show(raw)}: {exc}") from None
    return space


def _max_steps(exp: ExperimentSection, run_doc: dict[str, Any], notices: list[str]) -> int:
    given = run_doc["training"].get("steps")
    if exp.max_steps is None:
        if isinstance(given, int) and not isinstance(given, bool) and given >= 1:
            return given
        return int(TrainingConfig.model_fields["steps"].default)
    if given is not None and given != exp.max_steps:
        notices.append(
            f"training.steps {given} is replaced by experiment.max_steps {exp.max_steps}"
        )
    return exp.max_steps


def _keep(checkpoints: Checkpoints, run_doc: dict[str, Any], source: str) -> int:
    given = run_doc["training"].get("keep_checkpoints")
    if checkpoints.keep is None:
        if isinstance(given, int) and not isinstance(given, bool) and given >= 1:
            return given
        return int(TrainingConfig.model_fields["keep_checkpoints"].default)
    if given is not None and given != checkpoints.keep:
        raise ConfigError(
            f"{source}: key 'checkpoints.keep' = {checkpoints.keep} disagrees with "
            f"training.keep_checkpoints = {show(given)}; give one of them"
        )
    return checkpoints.keep


def _momentum_rule(
    space: Mapping[str, _Distribution], run_doc: dict[str, Any], notices: list[str]
) -> None:
    """Momentum is SGD's: searching it with no optimizer fixed means SGD (as the original)."""
    if "training.momentum" not in space:
        return
    fixed = run_doc["training"].get("optimizer")
    if fixed is None and "training.optimizer" not in space:
        run_doc["training"]["optimizer"] = "sgd"
        notices.append(
            "training.momentum is searched and no optimizer is fixed: training.optimizer = sgd "
            "(the original project trained with SGD and momentum)"
        )
    elif fixed == "adamw" and "training.optimizer" not in space:
        notices.append(
            "training.momentum is searched but training.optimizer is adamw, which ignores it"
        )


def _refuse_moving_test(
    space: Mapping[str, _Distribution],
    run_doc: Mapping[str, Any],
    source: str,
    labels: dict[str, str],
) -> None:
    """A test split cut from train (data.test_fraction) moves when a searched key changes train
    or, without data.valid, the validation tail behind it: every trial (and every final run) must
    be held out from, and scored on, the same test utterances."""
    data = run_doc.get("data", {})
    if data.get("test_fraction") is None:
        return
    moving = ["data.train."] + (["data.valid_fraction"] if data.get("valid") is None else [])
    for key in space:
        if key.startswith(tuple(moving)):
            label = labels.get(f"space.{key}", f"space.{key}")
            raise ConfigError(
                f"{source}: key {label!r} cannot be searched with data.test_fraction: it would "
                "move the test block of train from trial to trial; fix it, or give data.test "
                "(a source)"
            )


def _absolute_paths(run_doc: dict[str, Any]) -> None:
    """Ray runs trials in other directories: make relative corpus paths absolute."""
    data = run_doc.get("data", {})
    for part in ("train", "valid", "test"):
        src = data.get(part)
        if not isinstance(src, dict):
            continue
        if src.get("kind") in ("tagged", "text") and isinstance(src.get("path"), str):
            src["path"] = str(Path(src["path"]).resolve())
        name = src.get("name")
        if src.get("kind") == "hf" and isinstance(name, str) and Path(name).is_dir():
            src["name"] = str(Path(src["name"]).resolve())


def _objective(exp: ExperimentSection, source: str, labels: dict[str, str]) -> tuple[str, str]:
    metric = check_metric(exp.metric, labels.get("experiment.metric", "experiment.metric"), source)
    better = REPORTED_METRICS[metric]
    mode = exp.mode or better
    if mode != better:
        label = labels.get("experiment.mode", "experiment.mode")
        shown = labels.get("experiment.mode.value", mode)
        word = "lower" if better == "min" else "higher"
        raise ConfigError(
            f"{source}: key {label!r} = {shown!r}: {metric} is better when {word}; "
            f"use {labels.get('mode.' + better, better)}"
        )
    return metric, mode


def _check_grid(
    space: Mapping[str, _Distribution], searcher: Searcher, source: str, labels: dict[str, str]
) -> None:
    if searcher.type != "grid":
        return
    for key, dist in space.items():
        label = labels.get(f"space.{key}", f"space.{key}")
        values = dist.grid_values()
        if values is None:
            raise ConfigError(
                f"{source}: key {label!r} = {show(dist.model_dump())}: the grid searcher needs "
                f"a finite set of values (choice, int or fixed), not {dist.type}"
            )
        if len(values) > GRID_LIMIT:
            raise ConfigError(
                f"{source}: key {label!r} = {show(dist.model_dump())}: {len(values)} grid values "
                f"(at most {GRID_LIMIT}); raise step or use another searcher"
            )


def _check_corners(
    run_doc: Mapping[str, Any],
    space: Mapping[str, _Distribution],
    source: str,
    labels: dict[str, str],
    notices: list[str],
) -> None:
    """Every corner of the space must give a valid RunConfig, so no trial fails late on a bad
    sample: each key's corners alone, then every pair, then (when small) every combination."""
    corners = [(key, space[key].corners()) for key in space]

    def fail(point: dict[str, Any], exc: ValidationError) -> ConfigError:
        (key, value), *others = point.items()
        label = labels.get(f"space.{key}", f"space.{key}")
        more = "".join(
            f" with {labels.get(f'space.{k}', f'space.{k}')!r} = {show(v)}" for k, v in others
        )
        return ConfigError(
            f"{source}: key {label!r} = {show(value)}{more}: {FieldError.first(exc).short()}"
        )

    def check(point: dict[str, Any]) -> None:
        try:
            RunConfig.model_validate(with_dotted(run_doc, point))
        except ValidationError as exc:
            raise fail(point, exc) from None

    for key, values in corners:
        for value in values:
            check({key: value})
    for (k1, v1s), (k2, v2s) in itertools.combinations(corners, 2):
        for v1, v2 in itertools.product(v1s, v2s):
            check({k1: v1, k2: v2})
    if len(corners) < 3:
        return
    combos = math.prod(len(values) for _, values in corners)
    if combos > FULL_PRODUCT_LIMIT:
        notices.append(
            f"space: {combos} corner combinations; checked each key and every pair of keys"
        )
        return
    keys = [key for key, _ in corners]
    for values in itertools.product(*(values for _, values in corners)):
        check(dict(zip(keys, values, strict=True)))


def _resolve_scheduler(
    sched: AshaScheduler | FifoScheduler,
    max_steps: int,
    resources: Resources,
    source: str,
    labels: dict[str, str],
) -> AshaScheduler | FifoScheduler:
    if isinstance(sched, FifoScheduler):
        return sched
    grace = sched.grace_period_steps or max(1, max_steps // 10)
    if grace > max_steps:
        label = labels.get("scheduler.grace_period_steps", "scheduler.grace_period_steps")
        raise ConfigError(
            f"{source}: key {label!r} = {grace}: must be <= experiment.max_steps {max_steps}"
        )
    ray_train = resources.ray_train
    promotion = sched.promotion
    if promotion == "auto":
        promotion = "continue" if ray_train or sched.brackets > 1 else "pause"
    elif promotion == "pause" and ray_train:
        raise ConfigError(
            f"{source}: key 'scheduler.promotion' = 'pause': needs one-worker trials "
            f"(resources.workers {resources.workers}, use_ray_train {resources.use_ray_train!r}); "
            "pausing a Ray Train trial can leak its worker group (ray issue 54305): use 'continue'"
        )
    elif promotion == "pause" and sched.brackets > 1:
        raise ConfigError(
            f"{source}: key 'scheduler.promotion' = 'pause': works with brackets 1, not "
            f"{sched.brackets}; use 'continue' for several brackets"
        )
    return sched.model_copy(update={"grace_period_steps": grace, "promotion": promotion})


# --------------------------------------------------------------------------- smoke


SMOKE_STEPS = 40
SMOKE_SUFFIX = "-smoke"  # of a smoke run's experiment name
SMOKE_UTTERANCES = 1500
SMOKE_VALID_UTTERANCES = 300
# the final phase of a smoke run: 2 configurations x 2 seeds, scored on few utterances
SMOKE_FINAL = {
    "top_k": 2,
    "seeds": 2,
    "valid_utterances": 200,
    "test_utterances": 200,
    "test_phonemes": 1000,  # a sample by phonemes stays one (about 80 utterances)
}
# Caps on searched values in a smoke run (small model, short context, small evaluations).
SMOKE_CAPS: dict[str, float] = {
    "model.n_layer": 2,
    "model.n_embd": 128,
    "model.n_head": 8,
    "model.n_inner": 512,
    "model.n_positions": 64,
    "training.block_size": 64,
    "training.batch_size": 32,
    "training.warmup_steps": 5,
    "training.eval_every_steps": 10,
    "training.segment_every_steps": 10,
    "training.segment_utterances": 100,
    "training.checkpoint_every_steps": 20,
    "training.log_every_steps": 5,
    "training.eval_max_batches": 8,
    "data.train.n_utterances": SMOKE_UTTERANCES,
    "data.train.max_utterances": SMOKE_UTTERANCES,
    "data.valid.n_utterances": SMOKE_VALID_UTTERANCES,
    "data.valid.max_utterances": SMOKE_VALID_UTTERANCES,
}
_SMALL_PRESETS = tuple(PRESETS)[:2]


def smoke(spec: ExperimentSpec) -> ExperimentSpec:
    """The same experiment shrunk to about a minute on a laptop (validated again), named
    `<name>-smoke`: its folder and wandb group are its own, so that the real run never resumes
    (or mixes its runs with) the smoke run."""
    doc = spec.document()
    grid = spec.searcher.type == "grid"
    exp = doc["experiment"]
    if doc["wandb"]["group"] == exp["name"]:  # the default group: it follows the new name
        doc["wandb"]["group"] = None
    exp["name"] = f"{exp['name']}{SMOKE_SUFFIX}"
    exp["num_samples"] = 1 if grid else min(exp["num_samples"], 3)
    exp["max_concurrent"] = min(exp["max_concurrent"], 2)
    exp["max_steps"] = SMOKE_STEPS
    if doc["scheduler"]["type"] == "asha":
        doc["scheduler"]["grace_period_steps"] = min(doc["scheduler"]["grace_period_steps"], 10)
    training = doc["training"]
    training.pop("epochs", None)
    for key in ("segment_utterances", "warmup_steps", "block_size", "batch_size"):
        default = TrainingConfig.model_fields[key].default
        training[key] = min(training.get(key, default), int(SMOKE_CAPS[f"training.{key}"]))
    training.update(eval_every_steps=10, segment_every_steps=0, checkpoint_every_steps=20)
    training.update(
        log_every_steps=5, eval_max_batches=min(training.get("eval_max_batches") or 8, 8)
    )
    model = {"preset": _SMALL_PRESETS[0], "n_positions": 64}
    if "dropout" in doc["model"]:
        model["dropout"] = doc["model"]["dropout"]
    doc["model"] = model
    doc["data"] = _smoke_data(doc["data"])
    final = doc["final"]
    final.update(
        top_k=min(final["top_k"], SMOKE_FINAL["top_k"]),
        seeds=min(final["seeds"], SMOKE_FINAL["seeds"]),
        valid_utterances=min(final["valid_utterances"], SMOKE_FINAL["valid_utterances"]),
    )
    if final.get("test_phonemes") is not None:
        final["test_phonemes"] = min(final["test_phonemes"], SMOKE_FINAL["test_phonemes"])
    else:
        final["test_utterances"] = min(
            final["test_utterances"] or SMOKE_FINAL["test_utterances"],
            SMOKE_FINAL["test_utterances"],
        )
    if final["steps"] is not None:
        final["steps"] = min(final["steps"], SMOKE_STEPS)
    doc["space"] = _smoke_space(spec.space, grid)
    shrunk = spec.space.keys() - doc["space"].keys()
    notices = list(spec.notices)
    if shrunk:
        notices.append(f"smoke: not searched: {', '.join(sorted(shrunk))}")
    notices.append(
        f"smoke: {exp['num_samples']} sample(s), {exp['max_concurrent']} at a time, "
        f"{SMOKE_STEPS} steps, preset {model['preset']} (64 positions), "
        f"at most {SMOKE_UTTERANCES} utterances"
        + (
            f"; final phase: {final['top_k']} x {final['seeds']} runs"
            if final["enabled"] is not False
            else ""
        )
    )
    return _build(
        doc, source=spec.source_path, default_name=exp["name"], notices=notices, labels={}
    )


def _smoke_data(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    # the corpus shrinks below any realistic training-set size: a smoke run trains on all of it
    data.pop("train_size", None)
    train = data.setdefault("train", {})
    if train.get("kind", "synthetic") == "synthetic":
        train["n_utterances"] = min(train.get("n_utterances", 6000), SMOKE_UTTERANCES)
    else:
        train["max_utterances"] = min(
            train.get("max_utterances") or SMOKE_UTTERANCES, SMOKE_UTTERANCES
        )
    for part in ("valid", "test"):  # a test source shrinks like valid
        held = data.get(part)
        if isinstance(held, dict):
            synthetic = held.get("kind", "synthetic") == "synthetic"
            key = "n_utterances" if synthetic else "max_utterances"
            held[key] = min(held.get(key) or SMOKE_VALID_UTTERANCES, SMOKE_VALID_UTTERANCES)
    return data


def _smoke_space(space: Mapping[str, _Distribution], grid: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    widened = False  # under grid, one key keeps up to 3 values, the others their first
    for key, dist in space.items():
        if key == "training.epochs":
            continue
        if key == "model.preset" and isinstance(dist, Choice):
            small = [v for v in dist.values if v in _SMALL_PRESETS or v is None]
            dist = Choice(values=tuple(small or [_SMALL_PRESETS[0]]))
        elif key in SMOKE_CAPS:
            dist = dist.clamp(SMOKE_CAPS[key])
        if grid and dist.grid_values() is not None and len(dist.grid_values() or []) > 1:
            keep = 1 if widened else 3
            widened = True
            dist = Choice(values=tuple((dist.grid_values() or [])[:keep]))
        out[key] = dist.model_dump()
    return out
