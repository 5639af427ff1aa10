"""What a driver does before Ray starts, for a space file's experiment and for every cell of a
study alike (`seg_tune.cli.run`, `seg_tune.cli.study`): read and check the data, refuse a resume
with other settings or GPU trials with a CPU torch, and set the environment Ray reads once."""

from __future__ import annotations

import os
from typing import Any

from seg_tune.errors import ConfigError, DataError
from seg_tune.sweep.layout import Layout


def refuse_cpu_torch_for_gpus(spec: Any) -> None:
    """Trials that ask for GPUs with a CPU build of torch (./setup.sh on a login node without
    nvidia-smi installs one) would all train on the CPU: refuse the sweep (exit 2) at once."""
    import torch

    if spec.resources.gpus_per_worker > 0 and torch.version.cuda is None:
        raise ConfigError(
            f"{spec.source_path}: resources.gpus_per_worker = {spec.resources.gpus_per_worker:g} "
            f"but torch {torch.__version__} is a CPU build (no CUDA); install the CUDA build: "
            "on a GPU node (nvidia-smi works) run `rm -rf .venv && ./setup.sh`, or anywhere "
            "`TORCH_SPEC=torch ./setup.sh` in a fresh .venv; or set gpus_per_worker: 0"
        )


def refuse_changed_space(spec: Any, layout: Layout, *, smoke: bool) -> None:
    """A resumed experiment must be the one that was started: refuse (exit 2) a space file
    that changed in the space, budget, scheduler, searcher, data, model or training."""
    from seg_tune.sweep.spec import changed_keys, read_saved

    exp_dir, old = layout.root, read_saved(layout.space)
    if old is None:
        return  # none (a new experiment), or unreadable: Tune's own state decides
    changed = changed_keys(old, spec.to_dict())
    if not changed:
        return
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    hint = "; a --smoke run shrinks the budget, so give it its own --name" if smoke else ""
    raise ConfigError(
        f"{exp_dir}: holds an experiment started with other settings ({shown}); resuming "
        "would mix two experiments: use --fresh to start over (the old folder is kept) or "
        f"--name for a new experiment{hint}"
    )


def read_data(spec: Any) -> Any:
    """Read and check every data config a trial can get, before Ray starts (one line and exit
    2 for a bad file or dataset); returns the base config's corpus, encoded, for the trials to
    share (`seg_tune.train.PreparedCorpus`). The test split is read here only to refuse one
    that overlaps train or valid (exit 2), then dropped: the corpus the trials get holds none
    of it, and nothing else reads it until the final phase."""
    from seg_tune.train import prepare_corpus

    first, *others = spec.data_configs()
    if first.has_test:
        check_test_split(first, final=spec.final)
    corpus = prepare_corpus(first)
    for data in others:
        data.load()
    block = spec.base.training.block_size
    if "training.block_size" in spec.space:
        block = max(int(v) for v in spec.space["training.block_size"].corners())
    if corpus.train_stream.numel() < 2 * block:
        raise DataError(
            f"data.train ({first.train.describe()}): {corpus.train_stream.numel()} training "
            f"tokens, fewer than two blocks of training.block_size {block}; use more data or a "
            "smaller block_size"
        )
    print(
        f"seg_tune.run: data: {first.train.describe()}: {corpus.train_stream.numel():,} training "
        f"and {corpus.valid_stream.numel():,} validation tokens, {len(corpus.units)} units "
        f"(checked{f', with {len(others)} other data configs of the space' if others else ''})",
        flush=True,
    )
    for warning in corpus.warnings:
        print(f"seg_tune.run: warning: {warning}", flush=True)
    return corpus


def check_test_split(data: Any, *, final: Any) -> None:
    """Refuse (ConfigError, exit 2) a test split that overlaps train or valid, or that holds
    fewer phonemes than the final phase's sample asks for (`final`: the spec's FinalSection,
    `final.test_phonemes`); say its size, and the sample the final phase will score."""
    splits = data.load_splits()
    data.refuse_overlap(splits)
    where = data.describe_test(splits)
    phonemes = sum(len(u) for u in splits.test)
    if not final.enabled:
        until = "(final.enabled is false: nothing scores on it)"
    else:
        sample = final.test_sample(splits.test, where)  # ConfigError when too few phonemes
        until = "until the final phase"
        if final.test_utterances and len(sample) < final.test_utterances:
            print(
                f"seg_tune.run: warning: final.test_utterances {final.test_utterances:,}, but "
                f"the test split has {len(splits.test):,}: the final phase scores all of them",
                flush=True,
            )
        elif final.test_utterances or final.test_phonemes:
            until += (
                f" (which scores its first {len(sample):,} utterances, "
                f"{sum(len(u) for u in sample):,} phonemes)"
            )
    print(
        f"seg_tune.run: test split: {len(splits.test):,} utterances ({where}), {phonemes:,} "
        f"phonemes, held out {until}; no trial reads it",
        flush=True,
    )


def ray_environment() -> None:
    """What must be set before Ray is imported: its C++ config reads these once."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # ours forwards to Tune's
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Keep the terminal to Tune's status table: no snapshot-frequency advice, no optuna info.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
