"""Search-space files: every refusal names its key and value on one line; the shipped files load;
W&B sweep syntax maps onto our fields; smoke() shrinks; Ray objects construct and are seeded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seg_tune.errors import ConfigError
from seg_tune.metrics import REPORTED_METRICS
from seg_tune.sweep.cluster import HEAD_FILE_ENV
from seg_tune.sweep.distributions import (
    Choice,
    Fixed,
    IntRange,
    LogUniform,
    QLogUniform,
    QUniform,
    Uniform,
    parse_distribution,
)
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.load import load_space, smoke
from seg_tune.sweep.spec import ExperimentSpec
from seg_tune.sweep.tuner import (
    build_tuner,
    param_space,
    scheduler,
    search_algorithm,
    tune_config,
)

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
CHILDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "childes-en"


def write(tmp_path: Path, doc: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def refusal(tmp_path: Path, doc: object) -> str:
    """The one-line message of the ConfigError that loading `doc` raises."""
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


# --------------------------------------------------------------------------- refusals

TINY_MODEL = {"preset": None, "n_layer": 2, "n_embd": 96, "n_head": 4, "n_positions": 128}

REFUSALS = {
    "unknown section": ({"experimnt": {"name": "x"}}, ["'experimnt'", "'experiment'"]),
    "unknown experiment key": ({"experiment": {"nmae": "x"}}, ["'experiment.nmae'", "name"]),
    "unknown space key": (
        {"space": {"training.lrr": 0.1}},
        ["'space.training.lrr'", "did you mean 'training.lr'"],
    ),
    "space key is a whole section": ({"space": {"model": 3}}, ["'space.model'"]),
    "space key outside run config": ({"space": {"experiment.max_steps": 3}}, ["experiment"]),
    "wrong type": ({"experiment": {"num_samples": "ten"}}, ["experiment.num_samples", "'ten'"]),
    "wrong type in training": ({"training": {"lr": "fast"}}, ["training.lr", "'fast'"]),
    "empty choice": (
        {"space": {"model.dropout": {"type": "choice", "values": []}}},
        ["'space.model.dropout'", "values: []", "empty"],
    ),
    "uniform min > max": (
        {"space": {"model.dropout": {"type": "uniform", "min": 0.3, "max": 0.1}}},
        ["'space.model.dropout'", "min: 0.3", "min must be < max"],
    ),
    "int min > max": (
        {"space": {"model.n_layer": {"type": "int", "min": 6, "max": 2}}},
        ["'space.model.n_layer'", "min: 6", "min must be <= max"],
    ),
    "int min off the step grid": (
        {"space": {"model.n_layer": {"type": "int", "min": 3, "max": 9, "step": 2}}},
        ["'space.model.n_layer'", "multiple of step"],
    ),
    "log range through zero": (
        {"space": {"training.lr": {"type": "qloguniform", "min": -1, "max": 1, "q": 0.1}}},
        ["'space.training.lr'", "min must be > 0"],
    ),
    "unknown distribution key": (
        {"space": {"training.lr": {"type": "loguniform", "min": 1e-4, "max": 1e-2, "stp": 2}}},
        ["'space.training.lr'", "'stp'"],
    ),
    "unknown distribution type": (
        {"space": {"training.lr": {"type": "gaussian", "min": 1, "max": 2}}},
        ["'space.training.lr'", "'gaussian'", "loguniform"],
    ),
    "W&B log_uniform in our space": (
        {"space": {"training.lr": {"type": "log_uniform", "min": -9, "max": -4}}},
        ["'space.training.lr'", "log space"],
    ),
    "bare list": ({"space": {"model.dropout": [0.1, 0.2]}}, ["'space.model.dropout'", "choice"]),
    "steps searched": (
        {"space": {"training.steps": {"type": "choice", "values": [10, 20]}}},
        ["'space.training.steps'", "experiment.max_steps"],
    ),
    "unknown metric": (
        {"experiment": {"metric": "valid_los"}},
        ["'experiment.metric'", "'valid_los'", "valid_loss", "seg_boundary_noedge_fscore"],
    ),
    "mode not min/max": ({"experiment": {"mode": "minimize"}}, ["'experiment.mode'", "minimize"]),
    "mode against the metric": (
        {"experiment": {"metric": "valid_loss", "mode": "max"}},
        ["'experiment.mode'", "'max'", "lower"],
    ),
    "missing data file": (
        {"data": {"train": {"kind": "tagged", "path": "no/such/corpus.txt"}}},
        ["'data.train'", "no/such/corpus.txt", "no such file"],
    ),
    "grid with a continuous distribution": (
        {
            "searcher": {"type": "grid"},
            "space": {"training.lr": {"type": "loguniform", "min": 1e-4, "max": 1e-2}},
        },
        ["'space.training.lr'", "grid", "loguniform"],
    ),
    "max_concurrent < 1": (
        {"experiment": {"max_concurrent": 0}},
        ["'experiment.max_concurrent'", "= 0"],
    ),
    "scheduler type": ({"scheduler": {"type": "hyperband"}}, ["'scheduler.type'", "'hyperband'"]),
    "grace beyond max_steps": (
        {"experiment": {"max_steps": 100}, "scheduler": {"grace_period_steps": 500}},
        ["'scheduler.grace_period_steps'", "500", "100"],
    ),
    "reduction factor": (
        {"scheduler": {"reduction_factor": 1}},
        ["'scheduler.reduction_factor'", "= 1"],
    ),
    "startup trials for the random searcher": (
        {"searcher": {"type": "random", "startup_trials": 5}},
        ["'searcher'", "startup_trials", "'random'"],
    ),
    "fractional GPUs above one": (
        {"resources": {"gpus_per_worker": 1.5}},
        ["'resources'", "whole number"],
    ),
    "DDP workers sharing a GPU": (
        {"resources": {"workers": 2, "gpus_per_worker": 0.5}},
        ["'resources'", "gpus_per_worker 0.5", "workers 2", "cannot share a GPU"],
    ),
    "pausing Ray Train trials": (
        {
            "resources": {"workers": 2},
            "scheduler": {"type": "asha", "promotion": "pause"},
        },
        ["'scheduler.promotion' = 'pause'", "workers 2", "use 'continue'"],
    ),
    "pausing with several brackets": (
        {"scheduler": {"type": "asha", "promotion": "pause", "brackets": 2}},
        ["'scheduler.promotion' = 'pause'", "brackets 1, not 2"],
    ),
    "unknown promotion": (
        {"scheduler": {"type": "asha", "promotion": "sometimes"}},
        ["scheduler.promotion", "'sometimes'"],
    ),
    "corner: n_embd not divisible by n_head": (
        {"model": {"n_head": 8}, "space": {"model.n_embd": {"values": [64, 100]}}},
        ["'space.model.n_embd' = 100", "divisible"],
    ),
    "corner: a pair of keys": (
        {
            "model": TINY_MODEL,
            "space": {
                "model.n_embd": {"type": "choice", "values": [96, 64]},
                "model.n_head": {"type": "choice", "values": [4, 6]},
            },
        },
        ["'space.model.n_embd' = 64", "'space.model.n_head' = 6", "divisible"],
    ),
    "corner: block_size beyond n_positions": (
        {"model": {"n_positions": 128}, "space": {"training.block_size": {"values": [64, 256]}}},
        ["'space.training.block_size' = 256", "n_positions"],
    ),
    "corner: float range on an int field": (
        {"space": {"training.batch_size": {"type": "uniform", "min": 16, "max": 64}}},
        ["'space.training.batch_size'", "integer"],
    ),
    "corner: the top of a quantized range": (
        {"space": {"model.dropout": {"type": "quniform", "min": 0.0, "max": 1.0, "q": 0.25}}},
        ["'space.model.dropout' = 1.0", "model.dropout"],
    ),
    "hub token in the file": ({"hub": {"token": "hf_SECRET"}}, ["'hub.token'", "HF_TOKEN"]),
    "wandb key in the file": ({"wandb": {"api_key": "abc"}}, ["'wandb.api_key'", "WANDB_API_KEY"]),
    "section not a mapping": ({"model": [1, 2]}, ["'model'", "mapping"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_key_and_value_on_one_line(tmp_path: Path, case: str) -> None:
    doc, expected = REFUSALS[case]
    message = refusal(tmp_path, doc)
    for part in expected:
        assert part in message, (part, message)


def test_loguniform_message_has_the_documented_form(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"space": {"training.lr": {"type": "loguniform", "min": 0.0, "max": 0.01}}}
    )
    with pytest.raises(ConfigError) as info:
        load_space(path)
    expected = (
        f"{path}: key 'space.training.lr' = {{type: loguniform, min: 0.0, max: 0.01}}: "
        "min must be > 0 for loguniform"
    )
    assert str(info.value) == expected


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"hub": {"token": "hf_SECRET"}})
    assert "hf_SECRET" not in message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {training.lr: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)
    assert "mapping" in refusal(tmp_path, [1, 2, 3])


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", ["base", "smoke", "wandb_sweep"])
def test_shipped_files_load(name: str) -> None:
    spec = load_space(SPACES / f"{name}.yaml")
    assert spec.experiment.metric in REPORTED_METRICS
    assert spec.experiment.mode == REPORTED_METRICS[spec.experiment.metric]
    assert spec.base.training.steps == spec.experiment.max_steps
    json.dumps(spec.to_dict())


def test_base_fits_a_laptop() -> None:
    spec = load_space(SPACES / "base.yaml")
    assert spec.experiment.metric == "seg_boundary_noedge_fscore"
    assert spec.experiment.max_concurrent * spec.resources.cpus_per_worker <= 2
    assert spec.resources.gpus_per_worker == 0
    assert spec.base.data.train.kind == "synthetic"
    assert spec.scheduler.type == "asha"


def _childes_local(tmp_path: Path, corpus: Path) -> Path:
    """childes.yaml with the local data block of its header comment in place of the hub's."""
    text = (SPACES / "childes.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("# local data:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[2:])
    local = yaml.safe_load("\n".join(block).replace("data/childes-en/", f"{corpus}/"))
    doc = yaml.safe_load(text)
    doc["data"] = local["data"]
    copy = tmp_path / "childes.yaml"
    copy.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return copy


def test_childes_reads_ipa_childes_adult_speech_with_early_stopping() -> None:
    """As shipped (issue 17): IPA-CHILDES from the hub, children's speech left out; checking the
    file needs no network (the dataset is loaded when the sweep starts)."""
    spec = load_space(SPACES / "childes.yaml")
    train = spec.base.data.train
    assert (train.kind, train.name, train.config) == (
        "hf",
        "phonemetransformers/IPA-CHILDES",
        "EnglishNA",
    )
    assert (train.column, train.where) == ("phonemized_utterance", {"is_child": False})
    assert spec.base.data.valid is None and spec.base.training.early_stopping is not None
    assert spec.experiment.scope == "best"
    dropout = spec.space["model.dropout"].values
    decay = spec.space["training.weight_decay"]
    assert min(dropout) >= 0.1 and decay.min >= 0.01


def test_childes_with_the_shared_corpus(tmp_path: Path) -> None:
    if not (CHILDES / "train.txt").is_file():
        pytest.skip(f"no shared corpus at {CHILDES}")
    spec = load_space(_childes_local(tmp_path, CHILDES))
    assert Path(spec.base.data.train.path).resolve() == (CHILDES / "train.txt").resolve()
    assert spec.resources.gpus_per_worker == 0.25
    # a sampled preset still decides the shape: the base's resolved shape must not stick
    big = spec.trial_config({"model.preset": "19M"}).model
    small = spec.trial_config({"model.preset": "800k"}).model
    assert (big.n_layer, big.n_embd, big.n_head) == (6, 512, 16)
    assert (small.n_layer, small.n_embd, small.n_head) == (4, 128, 4)
    shrunk = smoke(spec)
    assert shrunk.base.data.train.path == spec.base.data.train.path
    assert shrunk.base.data.train.max_utterances == 1500
    assert set(shrunk.space["model.preset"].values) <= {"400k", "800k"}


def test_childes_without_the_corpus_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_space(_childes_local(tmp_path, Path("data/childes-en")))
    message = str(info.value)
    assert "'data.train'" in message and "data/childes-en/train.txt" in message
    assert "no such file" in message and "\n" not in message


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "corpus.txt").write_text("a b ;eword c ;eword\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec = load_space(
        write(tmp_path, {"data": {"train": {"kind": "tagged", "path": "corpus.txt"}}})
    )
    assert spec.base.data.train.path == str(tmp_path / "corpus.txt")


# --------------------------------------------------------------------------- W&B sweep syntax

ORIGINAL = {  # the original project's configs/sweep.yaml, by hand
    "model.dropout": [0.05, 0.1, 0.2, 0.3],
    "model.n_embd": [64, 128, 256, 512],
    "model.n_inner": [512, 1024, 2048],
    "model.n_layer": [8, 10, 12, 14],
    "training.epochs": [300],
    "training.lr": [0.003, 0.001, 0.03, 0.01, 0.3, 0.1],
    "training.momentum": [0.99, 0.9, 0],
}


def test_wandb_sweep_maps_onto_our_fields() -> None:
    spec = load_space(SPACES / "wandb_sweep.yaml")
    assert set(spec.space) == set(ORIGINAL)
    for key, values in ORIGINAL.items():
        assert isinstance(spec.space[key], Choice)
        assert list(spec.space[key].values) == values
    assert spec.base.training.optimizer == "sgd"
    assert spec.searcher.type == "optuna"
    assert (spec.experiment.metric, spec.experiment.mode) == ("valid_loss", "min")
    assert spec.experiment.num_samples == 20
    assert spec.scheduler.type == "fifo"  # the original has no early_terminate
    assert spec.base.training.batch_size == 128
    assert any("'program'" in n and "ignored" in n for n in spec.notices)
    assert any("sgd" in n for n in spec.notices)
    assert any("20" in n and "run_cap" in n for n in spec.notices)
    trial = spec.trial_config({"model.n_embd": 512, "model.n_layer": 14, "training.epochs": 300})
    assert (trial.model.n_embd, trial.model.n_layer, trial.training.epochs) == (512, 14, 300)


def test_wandb_distributions(tmp_path: Path) -> None:
    doc = {
        "method": "random",
        "metric": {"name": "seg_boundary_noedge_fscore", "goal": "maximize"},
        "run_cap": 7,
        "name": "my sweep",
        "project": "proj",
        "parameters": {
            "lr": {"distribution": "log_uniform", "min": math.log(1e-4), "max": math.log(1e-2)},
            "weight_decay": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1},
            "batch_size": {"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 8},
            "n_layers": {"min": 2, "max": 4},
            "dropout": {"min": 0.0, "max": 0.3},
            "training.warmup_steps": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
            "hidden_size": {"values": [64, 128]},
            "n_positions": {"value": 128},
        },
    }
    spec = load_space(write(tmp_path, doc))
    lr = spec.space["training.lr"]
    assert isinstance(lr, LogUniform)
    assert lr.min == pytest.approx(1e-4) and lr.max == pytest.approx(1e-2)
    assert spec.space["training.weight_decay"] == LogUniform(min=1e-3, max=1e-1)
    assert isinstance(spec.space["training.batch_size"], QLogUniform)
    assert spec.space["model.n_layer"] == IntRange(min=2, max=4)
    assert spec.space["model.dropout"] == Uniform(min=0.0, max=0.3)
    assert isinstance(spec.space["training.warmup_steps"], QUniform)
    assert spec.space["model.n_embd"] == Choice(values=(64, 128))
    assert spec.space["model.n_positions"] == Fixed(value=128)
    assert spec.base.model.n_positions == 128  # fixed values are in the base too
    assert (spec.searcher.type, spec.experiment.num_samples) == ("random", 7)
    assert (spec.experiment.metric, spec.experiment.mode) == ("seg_boundary_noedge_fscore", "max")
    assert spec.experiment.name == "my-sweep" and spec.wandb.project == "proj"
    assert spec.wandb.group == "my-sweep"
    assert spec.base.training.optimizer == "adamw"  # no momentum searched: unchanged


def test_wandb_early_terminate_becomes_asha(tmp_path: Path) -> None:
    doc = {
        "method": "bayes",
        "parameters": {"lr": {"values": [0.001, 0.002]}},
        "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 2},
        "training": {"eval_every_steps": 50},
    }
    spec = load_space(write(tmp_path, doc))
    assert spec.scheduler.type == "asha"
    assert spec.scheduler.grace_period_steps == 150  # 3 evaluations x 50 steps
    assert spec.scheduler.reduction_factor == 2
    doc["early_terminate"] = {"type": "hyperband", "max_iter": 27, "s": 2}  # first bracket 27/3^2
    assert load_space(write(tmp_path, doc)).scheduler.grace_period_steps == 3 * 50


WANDB_REFUSALS = {
    "unsupported distribution": (
        {"lr": {"distribution": "normal", "mu": 0, "sigma": 1}},
        ["'parameters.lr'", "'normal' is not supported", "log_uniform_values"],
    ),
    "probabilities": (
        {"lr": {"values": [0.1, 0.2], "probabilities": [0.5, 0.5]}},
        ["'parameters.lr'", "probabilities"],
    ),
    "unknown name": ({"learning_rate": {"values": [0.1]}}, ["'parameters.learning_rate'"]),
    "bad bounds after mapping": (
        {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}},
        ["'parameters.lr'", "min must be > 0"],
    ),
    "corner after mapping": (
        {"hidden_size": {"values": [64, 66]}},
        ["'parameters.hidden_size' = 66", "divisible"],
    ),
}


@pytest.mark.parametrize("case", list(WANDB_REFUSALS))
def test_wandb_refusals(tmp_path: Path, case: str) -> None:
    params, expected = WANDB_REFUSALS[case]
    message = refusal(tmp_path, {"method": "bayes", "parameters": params})
    for part in expected:
        assert part in message, (part, message)


def test_wandb_goal_and_conflicts(tmp_path: Path) -> None:
    base = {"method": "bayes", "parameters": {"lr": {"values": [0.1]}}}
    message = refusal(tmp_path, {**base, "metric": {"name": "valid.loss", "goal": "maximize"}})
    assert "'metric.goal'" in message and "maximize" in message and "minimize" in message
    message = refusal(tmp_path, {**base, "metric": {"name": "valid.loss", "goal": "lowest"}})
    assert "'metric.goal'" in message and "'lowest'" in message
    message = refusal(tmp_path, {**base, "searcher": {"type": "random"}})
    assert "'method'" in message and "searcher.type" in message
    message = refusal(tmp_path, {**base, "space": {"training.lr": 0.1}})
    assert "'space'" in message and "parameters" in message


def test_momentum_with_a_fixed_optimizer_keeps_it(tmp_path: Path) -> None:
    doc = {
        "method": "random",
        "parameters": {"momentum": {"values": [0.9, 0.99]}},
        "training": {"optimizer": "adamw"},
    }
    spec = load_space(write(tmp_path, doc))
    assert spec.base.training.optimizer == "adamw"
    assert any("ignores it" in n for n in spec.notices)


def test_wandb_grid_method_with_explicit_int_uniform_and_constant(tmp_path: Path) -> None:
    from ray.tune.search import BasicVariantGenerator

    from seg_tune.sweep.asha import PauseAwareVariantGenerator

    doc = {
        "method": "grid",
        "parameters": {
            "n_layers": {"distribution": "int_uniform", "min": 1, "max": 3},
            "dropout": {"distribution": "categorical", "values": [0.0, 0.1]},
            "batch_size": {"distribution": "constant", "value": 16},
        },
    }
    spec = load_space(write(tmp_path, doc))
    assert spec.searcher.type == "grid"
    assert spec.experiment.num_samples == 1  # each grid point once
    assert "no 'run_cap': num_samples = 1 (each grid point once); set run_cap to change it" in (
        spec.notices
    )
    assert spec.space == {
        "model.n_layer": IntRange(min=1, max=3, step=1),
        "model.dropout": Choice(values=(0.0, 0.1)),
        "training.batch_size": Fixed(value=16),
    }
    assert spec.base.training.batch_size == 16
    assert param_space(spec) == {
        "model.n_layer": {"grid_search": [1, 2, 3]},
        "model.dropout": {"grid_search": [0.0, 0.1]},
        "training.batch_size": 16,
    }
    assert spec.scheduler.type == "fifo"  # no early_terminate
    searcher = search_algorithm(spec, tmp_path / "state.json")
    assert type(searcher) is BasicVariantGenerator and searcher.max_concurrent == 2
    # with early_terminate the grid runs under pausing ASHA: the pause-aware generator
    doc["early_terminate"] = {"type": "hyperband", "min_iter": 2}
    spec = load_space(write(tmp_path, doc))
    assert (spec.scheduler.type, spec.scheduler.promotion) == ("asha", "pause")
    searcher = search_algorithm(spec, tmp_path / "state.json")
    assert type(searcher) is PauseAwareVariantGenerator
    assert searcher.state_path == str(tmp_path / "state.json") and searcher.max_concurrent == 2


def test_wandb_explicit_uniform_and_q_log_uniform(tmp_path: Path) -> None:
    from ray.tune.search.sample import Float, Quantized

    doc = {
        "method": "random",
        "parameters": {
            # q_log_uniform: bounds are natural logs, the range is exp(min)..exp(max)
            "lr": {
                "distribution": "q_log_uniform",
                "min": math.log(1e-4),
                "max": math.log(1e-2),
                "q": 1e-4,
            },
            "hidden_size": {
                "distribution": "q_log_uniform",
                "min": math.log(64),
                "max": math.log(256),
                "q": 64,
            },
            "batch_size": {"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 8},
            "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.2},
            "n_layers": {"distribution": "int_uniform", "min": 2, "max": 4},
        },
    }
    spec = load_space(write(tmp_path, doc))
    lr = spec.space["training.lr"]
    assert isinstance(lr, QLogUniform) and lr.q == 1e-4
    assert lr.min == pytest.approx(1e-4, rel=1e-12) and lr.max == pytest.approx(1e-2, rel=1e-12)
    assert (lr.lo, lr.hi) == (1e-4, 0.01)  # exp() of the logs rounds back onto the q grid
    width = spec.space["model.n_embd"]
    assert isinstance(width, QLogUniform) and width.q == 64
    assert width.min == pytest.approx(64, rel=1e-12) and width.max == pytest.approx(256, rel=1e-12)
    assert width.corners() == [64, 128, 192, 256]  # the top is not lost to exp(log(256)) < 256
    assert spec.space["training.batch_size"] == QLogUniform(min=8, max=64, q=8)
    assert spec.space["model.dropout"] == Uniform(min=0.0, max=0.2)
    assert spec.space["model.n_layer"] == IntRange(min=2, max=4, step=1)
    domains = param_space(spec)
    lr_domain = domains["training.lr"]
    assert isinstance(lr_domain, Float) and isinstance(lr_domain.sampler, Quantized)
    assert (lr_domain.lower, lr_domain.upper, lr_domain.sampler.q) == (1e-4, 0.01, 1e-4)
    assert (domains["model.dropout"].lower, domains["model.dropout"].upper) == (0.0, 0.2)
    sizes = {domains["training.batch_size"].sample(random_state=i) for i in range(300)}
    assert sizes <= {8, 16, 24, 32, 40, 48, 56, 64} and {8, 64} <= sizes


@pytest.mark.parametrize(
    ("name", "ours"),
    [("valid.loss", "valid_loss"), ("valid.bpp", "valid_bpp"), ("train.loss", "train_loss")],
)
def test_wandb_metric_names_map_onto_ours(tmp_path: Path, name: str, ours: str) -> None:
    doc = {"method": "random", "metric": {"name": name}, "parameters": {"lr": {"values": [0.1]}}}
    spec = load_space(write(tmp_path, doc))
    assert (spec.experiment.metric, spec.experiment.mode) == (ours, "min")  # goal: minimize
    assert f"metric {name} -> {ours}" in spec.notices
    assert tune_config(spec, tmp_path / "state.json").metric == ours


EARLY_TERMINATE_REFUSALS = {
    "not hyperband": (
        {"early_terminate": {"type": "envelope"}},
        "key 'early_terminate.type' = 'envelope': only hyperband is supported",
    ),
    "with a scheduler": (
        {"early_terminate": {"type": "hyperband", "min_iter": 3}, "scheduler": {"type": "fifo"}},
        "key 'early_terminate' and key 'scheduler': give one of them",
    ),
    "unknown key": (
        {"early_terminate": {"type": "hyperband", "min_iter": 3, "max_iters": 9}},
        "unknown key 'early_terminate.max_iters' (did you mean 'early_terminate.max_iter'?); "
        "allowed: early_terminate.type, early_terminate.min_iter, early_terminate.max_iter, "
        "early_terminate.s, early_terminate.eta, early_terminate.strict",
    ),
    "eta not above 1": (
        {"early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 1}},
        "key 'early_terminate.eta' = 1: must be > 1",
    ),
    "max_iter without s": (
        {"early_terminate": {"type": "hyperband", "max_iter": 27}},
        "key 'early_terminate': give min_iter, or max_iter and s",
    ),
    "min_iter 0": (
        {"early_terminate": {"type": "hyperband", "min_iter": 0}},
        "key 'early_terminate.min_iter' = 0: must be an integer >= 1",
    ),
    "min_iter not an integer": (
        {"early_terminate": {"type": "hyperband", "min_iter": 1.5}},
        "key 'early_terminate.min_iter' = 1.5: must be an integer >= 1",
    ),
}


@pytest.mark.parametrize("case", list(EARLY_TERMINATE_REFUSALS))
def test_wandb_early_terminate_refusals(tmp_path: Path, case: str) -> None:
    extra, expected = EARLY_TERMINATE_REFUSALS[case]
    doc = {"method": "bayes", "parameters": {"lr": {"values": [0.001, 0.002]}}, **extra}
    assert refusal(tmp_path, doc) == f"{tmp_path / 'space.yaml'}: {expected}"


# --------------------------------------------------------------------------- our own syntax


def test_defaults_and_short_forms(tmp_path: Path) -> None:
    doc = {
        "space": {
            "training.lr": {"type": "loguniform", "min": "1e-4", "max": "1e-2"},  # YAML 1.1 str
            "model.n_layer": {"type": "randint", "min": 2, "max": 6, "step": 2},
            "model.dropout": {"values": [0.0, 0.1]},
            "training.batch_size": 16,
        }
    }
    spec = load_space(write(tmp_path, doc, "my-space.yaml"))
    assert spec.experiment.name == "my-space"
    assert (spec.experiment.metric, spec.experiment.mode) == ("valid_loss", "min")
    assert spec.experiment.num_samples == 10 and spec.experiment.max_steps == 2000
    assert spec.scheduler.grace_period_steps == 200  # max_steps // 10
    assert spec.space["training.lr"] == LogUniform(min=1e-4, max=1e-2)
    assert spec.space["model.n_layer"].values() == [2, 4, 6]
    assert spec.base.training.batch_size == 16
    assert spec.wandb.group == "my-space" and spec.checkpoints.keep == 2


def test_trial_config_applies_and_coerces(tmp_path: Path) -> None:
    doc = {
        "model": {"preset": "400k"},
        "space": {
            "training.lr": {"type": "loguniform", "min": 1e-4, "max": 1e-2},
            "model.n_layer": {"type": "int", "min": 1, "max": 3},
            "training.batch_size": {"type": "qloguniform", "min": 8, "max": 64, "q": 8},
            "model.dropout": {"type": "quniform", "min": 0.0, "max": 0.3, "q": 0.1},
        },
    }
    spec = load_space(write(tmp_path, doc))
    cfg = spec.trial_config(
        {
            "training.lr": 0.002,
            "model.n_layer": 3.0,
            "training.batch_size": 37.2,
            "model.dropout": 0.17,
        }
    )
    assert cfg.training.lr == 0.002
    assert cfg.model.n_layer == 3 and cfg.model.n_embd == 128  # the rest from the preset
    assert cfg.training.batch_size == 40 and isinstance(cfg.training.batch_size, int)
    assert cfg.model.dropout == pytest.approx(0.2)
    assert spec.trial_config({}).training.lr == spec.base.training.lr
    with pytest.raises(ValueError, match="not in the search space"):
        spec.trial_config({"training.momentum": 0.5})


def test_distribution_values() -> None:
    q = parse_distribution({"type": "quniform", "min": 0.05, "max": 0.42, "q": 0.1})
    assert (q.lo, q.hi) == (0.1, 0.4)  # the multiples of q inside [min, max]
    assert q.coerce(0.44) == 0.4 and q.coerce(0.0) == 0.1
    ints = parse_distribution({"type": "int", "min": 4, "max": 11, "step": 4})
    assert ints.values() == [4, 8]
    assert parse_distribution(0.5) == Fixed(value=0.5)


def test_smoke_shrinks(tmp_path: Path) -> None:
    spec = load_space(SPACES / "base.yaml")
    small = smoke(spec)
    assert isinstance(small, ExperimentSpec)
    assert small.experiment.num_samples == 3 and small.experiment.max_concurrent <= 2
    assert 30 <= small.experiment.max_steps <= 60
    assert small.scheduler.grace_period_steps <= small.experiment.max_steps // 2
    assert small.base.model.n_positions == 64 and small.base.training.block_size <= 64
    assert small.base.training.eval_every_steps <= 10
    assert small.base.training.segment_utterances <= 100
    assert small.base.data.train.kind == "synthetic" and small.base.data.train.n_utterances == 1500
    assert max(small.space["model.n_layer"].values) <= 2
    assert small.checkpoints == spec.checkpoints
    # its own folder and wandb group: the real run never resumes it or mixes runs with it
    assert small.experiment.name == f"{spec.experiment.name}-smoke" == small.wandb.group
    assert small.wandb.model_copy(update={"group": spec.wandb.group}) == spec.wandb
    assert small.experiment.metric == spec.experiment.metric
    sweep = smoke(load_space(SPACES / "wandb_sweep.yaml"))
    assert "training.epochs" not in sweep.space and sweep.base.training.epochs is None
    assert max(sweep.space["model.n_layer"].values) <= 2
    assert max(sweep.space["model.n_embd"].values) <= 128
    assert sweep.base.training.batch_size <= 32
    assert sweep.base.training.optimizer == "sgd"


def test_smoke_of_a_grid_runs_at_most_three(tmp_path: Path) -> None:
    doc = {
        "searcher": {"type": "grid"},
        "space": {
            "model.dropout": {"values": [0.0, 0.1, 0.2, 0.3]},
            "training.lr": {"values": [0.001, 0.002]},
            "model.n_layer": {"type": "int", "min": 1, "max": 4},
        },
    }
    spec = load_space(write(tmp_path, doc))
    assert spec.experiment.num_samples == 1
    small = smoke(spec)
    sizes = [len(d.grid_values()) for d in small.space.values()]
    assert small.experiment.num_samples == 1 and math.prod(sizes) <= 3


def test_to_dict_is_json_and_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "sentinel-wandb-1234")
    monkeypatch.setenv("HF_TOKEN", "sentinel-hf-5678")
    text = json.dumps(load_space(SPACES / "wandb_sweep.yaml").to_dict())
    assert "sentinel" not in text
    data = json.loads(text)
    assert data["experiment"]["metric"] == "valid_loss"
    assert data["space"]["model.n_embd"]["values"] == [64, 128, 256, 512]
    assert data["base"]["training"]["optimizer"] == "sgd"


def test_load_does_not_import_ray() -> None:
    """Its speed is a benchmark: bench/speed_targets.py (BENCHMARKS.md)."""
    code = (
        "import sys\n"
        "from seg_tune.sweep.load import load_space\n"
        f"spec = load_space({str(SPACES / 'wandb_sweep.yaml')!r})\n"
        "print(spec.searcher.type, 'ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.split() == ["optuna", "False"]


# --------------------------------------------------------------------------- Ray objects


def test_param_space_domains(tmp_path: Path) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    doc = {
        "space": {
            "training.lr": {"type": "loguniform", "min": 1e-4, "max": 1e-2},
            "model.dropout": {"values": [0.0, 0.1]},
            "model.n_layer": {"type": "int", "min": 1, "max": 3},
            "model.n_embd": {"type": "int", "min": 64, "max": 200, "step": 64},
            "training.batch_size": 16,
        }
    }
    spec = load_space(write(tmp_path, doc))
    space = param_space(spec)
    assert set(space) == set(doc["space"])
    assert isinstance(space["training.lr"], Float)
    assert isinstance(space["model.dropout"], Categorical)
    assert space["training.batch_size"] == 16
    layers = {space["model.n_layer"].sample(random_state=i) for i in range(200)}
    assert layers == {1, 2, 3}  # the top of an int range is included
    widths = {space["model.n_embd"].sample(random_state=i) for i in range(200)}
    assert widths == {64, 128, 192}
    assert isinstance(space["model.n_layer"], Integer)
    grid = load_space(
        write(
            tmp_path,
            {**doc, "searcher": {"type": "grid"}}
            | {
                "space": {
                    "model.dropout": {"values": [0.0, 0.1]},
                    "model.n_layer": {"type": "int", "min": 1, "max": 3},
                }
            },
        )
    )
    assert param_space(grid) == {
        "model.dropout": {"grid_search": [0.0, 0.1]},
        "model.n_layer": {"grid_search": [1, 2, 3]},
    }


def suggestions(spec: ExperimentSpec, n: int) -> list[dict]:
    searcher = search_algorithm(spec, "unused.json")
    assert searcher.set_search_properties(
        spec.experiment.metric, spec.experiment.mode, param_space(spec)
    )
    return [searcher.suggest(f"trial_{i}") for i in range(n)]


def test_optuna_is_seeded_and_takes_metric_from_tune_config(tmp_path: Path) -> None:
    spec = load_space(SPACES / "base.yaml")
    first, again = suggestions(spec, 2), suggestions(spec, 2)
    assert first == again
    assert first[0] != first[1]
    other = load_space(
        write(
            tmp_path,
            {
                **yaml.safe_load((SPACES / "base.yaml").read_text()),
                "searcher": {"type": "optuna", "seed": 1},
            },
        )
    )
    assert suggestions(other, 2) != first
    for params in first:
        assert set(params) == set(spec.space)
        cfg = spec.trial_config(params)
        assert 3e-4 <= cfg.training.lr <= 3e-3
        assert cfg.model.n_layer in (2, 4) and cfg.model.n_embd in (64, 128)


def test_optuna_startup_trials_reach_the_sampler(tmp_path: Path) -> None:
    doc = yaml.safe_load((SPACES / "base.yaml").read_text())
    default = search_algorithm(load_space(SPACES / "base.yaml"), "s.json").searcher._sampler
    doc["searcher"] = {"type": "optuna", "seed": 0, "startup_trials": 4}
    fewer = search_algorithm(load_space(write(tmp_path, doc)), "s.json").searcher._sampler
    assert (default._n_startup_trials, fewer._n_startup_trials) == (10, 4)


def test_scheduler_and_tune_config(tmp_path: Path) -> None:
    from ray.tune import TuneConfig
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from seg_tune.sweep.asha import (
        PauseAwareGenerator,
        PauseAwareLimiter,
        PauseAwareVariantGenerator,
        PersistentASHA,
        PromotingASHA,
    )

    state = tmp_path / "scheduler_state.json"
    spec = load_space(SPACES / "base.yaml")
    assert spec.scheduler.promotion == "pause"  # auto, for one-worker trials
    asha = scheduler(spec, state)
    assert isinstance(asha, PromotingASHA)
    assert asha.time_attr == "step" and asha._max_t == 600 and list(asha.rungs) == [100, 300]
    # no metric/mode at construction: Ray lets TuneConfig pass them
    assert asha.set_search_properties("seg_boundary_noedge_fscore", "max")
    config = tune_config(spec, state)
    assert isinstance(config.search_alg, PauseAwareGenerator)
    assert isinstance(config.search_alg.searcher, PauseAwareLimiter)
    assert config.search_alg.searcher.max_concurrent == 2
    assert config.reuse_actors  # one-worker trials: processes go on to the next trial
    with pytest.MonkeyPatch.context() as env:  # under the SLURM head script too (nodes join)
        env.setenv(HEAD_FILE_ENV, str(tmp_path / "head.env"))
        assert tune_config(spec, state).reuse_actors
    # a trial is checkpointed where it may pause
    assert spec.trial_config({}).training.checkpoint_at_steps == (100, 300)
    doc = yaml.safe_load((SPACES / "base.yaml").read_text())
    doc["resources"]["workers"] = 2  # Ray Train trials: Ray's stop-or-continue ASHA
    ddp = load_space(write(tmp_path, doc))
    assert ddp.scheduler.promotion == "continue" and ddp.pause_rungs() == []
    assert isinstance(scheduler(ddp, state), PersistentASHA)
    assert ddp.trial_config({}).training.checkpoint_at_steps == ()
    assert not tune_config(ddp, state).reuse_actors  # a Train trial's process is not reused
    doc["resources"] = {**doc["resources"], "workers": 1, "reuse_processes": False}
    assert not tune_config(load_space(write(tmp_path, doc)), state).reuse_actors
    doc["resources"]["workers"] = 1
    doc["searcher"] = {"type": "random", "seed": 0}
    assert isinstance(
        search_algorithm(load_space(write(tmp_path, doc)), state), PauseAwareVariantGenerator
    )
    assert isinstance(config, TuneConfig) and isinstance(config.scheduler, PromotingASHA)
    assert (config.metric, config.mode, config.num_samples) == (
        "seg_boundary_noedge_fscore",
        "max",
        8,
    )
    sweep = load_space(SPACES / "wandb_sweep.yaml")
    assert isinstance(scheduler(sweep, state), FIFOScheduler)
    rand = load_space(
        write(
            tmp_path,
            {
                "searcher": {"type": "random", "seed": 3},
                "space": {"model.dropout": {"values": [0.0, 0.1]}},
            },
        )
    )
    assert isinstance(search_algorithm(rand, state), BasicVariantGenerator)


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_tuner_accepts_the_objects(tmp_path: Path) -> None:
    """Metric and mode only in TuneConfig; searcher and ASHA get them from there."""
    import ray
    from ray import tune

    spec = smoke(load_space(SPACES / "smoke.yaml"))

    def trainable(config: dict) -> None:
        cfg = spec.trial_config(config)
        for step in range(1, 4):
            tune.report({"step": step * 10, spec.experiment.metric: cfg.training.lr * step})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = build_tuner(spec, Layout(tmp_path), tune.with_resources(trainable, {"cpu": 1}))
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert len(results) == spec.experiment.num_samples
    assert not results.errors
    best = results.get_best_result()  # metric/mode from TuneConfig
    assert set(k for k in best.config) == set(spec.space)


def test_spec_travels_to_workers_as_json_or_pickle() -> None:
    import pickle

    spec = load_space(SPACES / "wandb_sweep.yaml")
    assert ExperimentSpec.model_validate_json(spec.model_dump_json()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_a_trial_whose_new_process_holds_its_resources_keeps_it() -> None:
    """`tuner.keep_starting_actors`: Tune's controller gives a staged trial a cached process
    only while the one requested for it still waits for resources."""
    from types import SimpleNamespace

    from ray.tune.execution.tune_controller import TuneController

    from seg_tune.sweep.tuner import keep_starting_actors

    keep_starting_actors()
    keep_starting_actors()  # once is enough: not wrapped twice

    class _T:  # a trial: hashable, with its resource request
        def __init__(self, name: str) -> None:
            self.placement_group_factory = name

    a, b, c = _T("a"), _T("b"), _T("c")
    asked = []
    starting, waiting = object(), object()
    controller = SimpleNamespace(
        _trial_to_actor={a: starting, b: waiting},  # c has none yet
        _resetting_trials=set(),
        _actor_manager=SimpleNamespace(_live_actors_to_ray_actors_resources={starting: None}),
        _actor_cache=SimpleNamespace(has_cached_object=lambda r: asked.append(r) or False),
    )
    reuse = TuneController._maybe_reuse_cached_actor
    assert reuse._seg_tune and reuse.__wrapped__ is not reuse  # type: ignore[attr-defined]
    assert not reuse.__wrapped__.__dict__.get("_seg_tune")  # type: ignore[attr-defined]
    for trial in (a, b, c):
        assert reuse(controller, trial) is False  # no cached process to give anyway
    assert asked == ["b", "c"]  # Tune's own rule ran for the waiting and the actor-less trial
