"""W&B sweep files: `from_wandb` turns one into a file in seg_tune's own syntax, which
`seg_tune.sweep.load` then validates like any other (the mapping is documented there)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from seg_tune.config import TrainingConfig
from seg_tune.errors import ConfigError
from seg_tune.sweep.keys import OUR_SECTIONS, SPACE_KEYS, check_metric, unknown_key
from seg_tune.sweep.values import is_integer, is_number, number, show

WANDB_KEYS = (
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    "program",
    "command",
    "name",
    "description",
    "project",
    "entity",
)
# The original TransformerSegmentation project's parameter and metric names.
WANDB_PARAMETER_NAMES: dict[str, str] = {
    "dropout": "model.dropout",
    "hidden_size": "model.n_embd",
    "inner_linear": "model.n_inner",
    "n_layers": "model.n_layer",
    "lr": "training.lr",
    "momentum": "training.momentum",
    "epochs": "training.epochs",
    "sequence_length": "training.block_size",
}
WANDB_METRIC_NAMES: dict[str, str] = {
    "valid.loss": "valid_loss",
    "valid.bpp": "valid_bpp",
    "train.loss": "train_loss",
}
WANDB_METHODS: dict[str, str] = {"bayes": "optuna", "random": "random", "grid": "grid"}
WANDB_NUM_SAMPLES = 20


def from_wandb(
    raw: Mapping[str, Any], source: str, notices: list[str], labels: dict[str, str]
) -> dict[str, Any]:
    """A W&B sweep file as a file in seg_tune's own syntax (labels keep the original keys)."""
    for key in raw:
        if key not in WANDB_KEYS and key not in OUR_SECTIONS:
            raise unknown_key(source, str(key), [*WANDB_KEYS, *OUR_SECTIONS])
    if "space" in raw:
        raise ConfigError(
            f"{source}: key 'space': a W&B sweep file (it has 'parameters' or 'method') gives "
            "its search space in 'parameters'; use one syntax"
        )
    doc: dict[str, Any] = {k: copy.deepcopy(raw[k]) for k in OUR_SECTIONS if k in raw}
    for name in ("experiment", "searcher", "wandb", "training"):
        if doc.get(name) is None:
            doc[name] = {}
        elif not isinstance(doc[name], Mapping):
            raise ConfigError(f"{source}: key {name!r} = {show(doc[name])}: expected a mapping")
        doc[name] = dict(doc[name])
    ignored = [k for k in ("program", "command") if k in raw]
    if ignored:
        notices.append(
            f"ignored {' and '.join(repr(k) for k in ignored)} (W&B agent launch settings): "
            "seg_tune runs its own trainer"
        )
    _wandb_method(raw, doc, source)
    _wandb_metric(raw, doc, source, notices, labels)
    _wandb_naming(raw, doc, source, notices)
    doc["space"] = _wandb_parameters(raw.get("parameters"), source, notices, labels)
    _wandb_samples(raw, doc, source, notices)
    _wandb_early_terminate(raw, doc, source, notices, labels)
    return doc


def _agree(doc: dict[str, Any], section: str, key: str, value: Any, origin: str, source: str):
    """Fill doc[section][key] from a W&B key unless our section says otherwise."""
    current = doc[section].get(key)
    if current is not None and current != value:
        raise ConfigError(
            f"{source}: key {origin!r} gives {section}.{key} = {show(value)} but "
            f"'{section}.{key}' = {show(current)}; give one of them"
        )
    doc[section][key] = value


def _wandb_method(raw: Mapping[str, Any], doc: dict[str, Any], source: str) -> None:
    method = raw.get("method")
    if method is None:
        return
    if method not in WANDB_METHODS:
        raise ConfigError(
            f"{source}: key 'method' = {show(method)}: allowed: {', '.join(WANDB_METHODS)}"
        )
    _agree(doc, "searcher", "type", WANDB_METHODS[method], "method", source)


def _wandb_metric(
    raw: Mapping[str, Any],
    doc: dict[str, Any],
    source: str,
    notices: list[str],
    labels: dict[str, str],
) -> None:
    metric = raw.get("metric")
    if metric is None:
        return
    if not isinstance(metric, Mapping) or "name" not in metric:
        raise ConfigError(f"{source}: key 'metric' = {show(metric)}: expected {{name, goal}}")
    for key in metric:
        if key not in ("name", "goal", "target"):
            raise unknown_key(source, f"metric.{key}", ["name", "goal", "target"])
    if "target" in metric:
        notices.append("ignored 'metric.target': every trial runs its full budget or to ASHA")
    name = metric["name"]
    ours = check_metric(WANDB_METRIC_NAMES.get(name, name), "metric.name", source)
    if ours != name:
        notices.append(f"metric {name} -> {ours}")
    goal = metric.get("goal", "minimize")
    goals = {"minimize": "min", "maximize": "max"}
    if goal not in goals:
        raise ConfigError(
            f"{source}: key 'metric.goal' = {show(goal)}: allowed: minimize, maximize"
        )
    _agree(doc, "experiment", "metric", ours, "metric.name", source)
    _agree(doc, "experiment", "mode", goals[goal], "metric.goal", source)
    labels.update(
        {
            "experiment.metric": "metric.name",
            "experiment.mode": "metric.goal",
            "experiment.mode.value": goal,
            "mode.min": "goal: minimize",
            "mode.max": "goal: maximize",
        }
    )


def _wandb_naming(
    raw: Mapping[str, Any], doc: dict[str, Any], source: str, notices: list[str]
) -> None:
    if raw.get("name") is not None:
        name = str(raw["name"])
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"
        if safe != name:
            notices.append(f"name {name!r} -> experiment.name {safe!r} (it names folders)")
        _agree(doc, "experiment", "name", safe, "name", source)
    if raw.get("description") is not None:
        _agree(doc, "experiment", "description", str(raw["description"]), "description", source)
    for key in ("project", "entity"):
        if raw.get(key) is not None:
            _agree(doc, "wandb", key, str(raw[key]), key, source)


def _wandb_samples(
    raw: Mapping[str, Any], doc: dict[str, Any], source: str, notices: list[str]
) -> None:
    if raw.get("run_cap") is not None:
        _agree(doc, "experiment", "num_samples", raw["run_cap"], "run_cap", source)
    elif doc["experiment"].get("num_samples") is None:
        grid = doc["searcher"].get("type") == "grid"
        n = 1 if grid else WANDB_NUM_SAMPLES
        doc["experiment"]["num_samples"] = n
        what = "1 (each grid point once)" if grid else str(n)
        notices.append(f"no 'run_cap': num_samples = {what}; set run_cap to change it")


_WANDB_PARAM_KEYS = ("distribution", "values", "value", "min", "max", "q")
_WANDB_DISTRIBUTIONS = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
)


def _wandb_name(name: str) -> str | None:
    """Our dotted key for a W&B parameter name, or None."""
    if name in WANDB_PARAMETER_NAMES:
        return WANDB_PARAMETER_NAMES[name]
    if "." in name:
        return name
    matches = [k for k in SPACE_KEYS if k.split(".")[0] in ("model", "training")]
    matches = [k for k in matches if k.split(".")[-1] == name]
    return matches[0] if len(matches) == 1 else None


def _wandb_parameters(
    params: Any, source: str, notices: list[str], labels: dict[str, str]
) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: key 'parameters' = {show(params)}: expected a mapping")
    space: dict[str, Any] = {}
    mapped: list[str] = []
    for name, spec in params.items():
        key = _wandb_name(str(name))
        if key is None:
            known = ", ".join(WANDB_PARAMETER_NAMES)
            raise ConfigError(
                f"{source}: unknown key 'parameters.{name}': not a field of seg_tune; use a "
                f"dotted name such as training.lr or one of {known}"
            )
        if key in space:
            raise ConfigError(f"{source}: key 'parameters.{name}': {key} is given twice")
        labels[f"space.{key}"] = f"parameters.{name}"
        space[key] = _wandb_distribution(spec, f"parameters.{name}", source)
        if key != name:
            mapped.append(f"{name} -> {key}")
    if mapped:
        notices.append("W&B parameters mapped: " + ", ".join(mapped))
    return space


def _wandb_distribution(spec: Any, label: str, source: str) -> dict[str, Any]:
    """A W&B parameter spec as one of our distribution mappings."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{source}: key {label!r} = {show(spec)}: {problem}")

    if not isinstance(spec, Mapping):
        raise bad("expected a mapping such as {values: [...]} or {value: ...}")
    if "parameters" in spec:
        raise bad("nested parameters are not supported; give each as its own dotted name")
    dist = spec.get("distribution")
    if dist is not None and dist not in _WANDB_DISTRIBUTIONS:
        supported = ", ".join(_WANDB_DISTRIBUTIONS)
        raise bad(f"distribution {dist!r} is not supported; supported: {supported}")
    if "probabilities" in spec:
        raise bad("'probabilities' is not supported (Ray Tune's choice is uniform)")
    for key in spec:
        if key not in _WANDB_PARAM_KEYS:
            raise bad(f"unknown key {key!r}; allowed: {', '.join(_WANDB_PARAM_KEYS)}")
    lo, hi = number(spec.get("min")), number(spec.get("max"))
    if dist is None:
        if "values" in spec:
            dist = "categorical"
        elif "value" in spec:
            dist = "constant"
        elif lo is not None and hi is not None:
            dist = "int_uniform" if is_integer(lo) and is_integer(hi) else "uniform"
        else:
            raise bad("give values, value, or min and max")
    needs = {"constant": ("value",), "categorical": ("values",)}.get(dist, ("min", "max"))
    allowed = {*needs, "distribution", *(("q",) if dist.startswith("q_") else ())}
    for key in spec:
        if key not in allowed:
            raise bad(f"key {key!r} does not apply to distribution {dist}")
    for key in needs:
        if key not in spec:
            raise bad(f"distribution {dist} needs {key!r}")
    if dist == "constant":
        return {"type": "fixed", "value": spec["value"]}
    if dist == "categorical":
        return {"type": "choice", "values": spec["values"]}
    q = number(spec.get("q", 1))
    if dist in ("log_uniform", "q_log_uniform"):  # bounds are natural logarithms
        if not (is_number(lo) and is_number(hi)):
            raise bad("min and max must be numbers (natural logarithms of the bounds)")
        lo, hi = math.exp(lo), math.exp(hi)
    simple = {"int_uniform": "int", "uniform": "uniform", "log_uniform": "loguniform"}
    simple["log_uniform_values"] = "loguniform"
    if dist in simple:
        return {"type": simple[dist], "min": lo, "max": hi}
    kind = "quniform" if dist == "q_uniform" else "qloguniform"
    return {"type": kind, "min": lo, "max": hi, "q": q}


def _wandb_early_terminate(
    raw: Mapping[str, Any],
    doc: dict[str, Any],
    source: str,
    notices: list[str],
    labels: dict[str, str],
) -> None:
    et = raw.get("early_terminate")
    if et is None:
        if doc.get("scheduler") is None:
            doc["scheduler"] = {"type": "fifo"}  # W&B stops no run early without early_terminate
        return
    if doc.get("scheduler") is not None:
        raise ConfigError(f"{source}: key 'early_terminate' and key 'scheduler': give one of them")
    if not isinstance(et, Mapping) or et.get("type") != "hyperband":
        shown = et.get("type") if isinstance(et, Mapping) else et
        raise ConfigError(
            f"{source}: key 'early_terminate.type' = {show(shown)}: only hyperband is supported"
        )
    allowed = ("type", "min_iter", "max_iter", "s", "eta", "strict")
    for key in et:
        if key not in allowed:
            raise unknown_key(
                source, f"early_terminate.{key}", [f"early_terminate.{k}" for k in allowed]
            )
    eta = number(et.get("eta", 3))
    if not is_number(eta) or eta <= 1:
        raise ConfigError(f"{source}: key 'early_terminate.eta' = {show(eta)}: must be > 1")
    if et.get("min_iter") is not None:
        min_iter, origin = et["min_iter"], "early_terminate.min_iter"
    elif et.get("max_iter") is not None and et.get("s") is not None:
        min_iter, origin = (
            max(1, round(et["max_iter"] / eta ** et["s"])),
            "early_terminate.max_iter",
        )
    else:
        raise ConfigError(f"{source}: key 'early_terminate': give min_iter, or max_iter and s")
    if not is_integer(min_iter) or min_iter < 1:
        raise ConfigError(f"{source}: key {origin!r} = {show(min_iter)}: must be an integer >= 1")
    every = doc["training"].get("eval_every_steps")
    if not is_integer(every) or every < 1:
        every = int(TrainingConfig.model_fields["eval_every_steps"].default)
    grace = min_iter * every
    doc["scheduler"] = {"type": "asha", "grace_period_steps": grace, "reduction_factor": eta}
    labels["scheduler.grace_period_steps"] = origin
    notices.append(
        f"early_terminate hyperband: {min_iter} evaluation(s) x eval every {every} steps -> "
        f"ASHA grace_period_steps {grace}, reduction_factor {eta}"
    )
