"""One training run: `python -m seg_tune.train CONFIG.yaml --out DIR`.

`train_loop(cfg, session)` is a plain PyTorch loop that runs the same way standalone (a
`LocalSession`: checkpoints and metrics in `--out DIR`) and as a Ray Train worker (a session from
`seg_tune.sweep.trial` that reports to Ray Train). It is rank-aware: with several workers the model is
wrapped in DistributedDataParallel, each rank takes its share of every global batch, validation
loss is summed over ranks, and rank 0 alone evaluates segmentation, writes checkpoints and exports.

Every `eval_every_steps` (and at every checkpoint and at the end) it reports: step, train_loss,
valid_loss (nats per predicted token), valid_bpp (bits per predicted symbol: phonemes and
utterance boundaries), tokens_per_s, and the segmentation scores of `seg_tune.segment` on a
validation subset. A checkpoint holds everything needed to continue bit-for-bit: model, optimizer,
scheduler, RNG states, step and data position; resuming reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast, get_scheduler
from transformers.utils import logging as hf_logging

from seg_tune import checkpoint as ckpt
from seg_tune.config import DataConfig, RunConfig
from seg_tune.corpus import Utterance, format_warnings
from seg_tune.metrics import (
    BEST_SO_FAR,
    FIRST_STEP_AT,
    REPORTED_AT,
    RESTORE_WARNINGS,
    SEGMENTATION_METRICS,
    STOPPED_BY,
)
from seg_tune.model import build_model, n_parameters
from seg_tune.stream import BlockSampler, blocks, token_stream
from seg_tune.tokenizer import (
    SPECIAL_TOKENS,
    boundary_id,
    build_tokenizer,
    encode,
    load_tokenizer,
    tokenizer_from_units,
)

Checkpointer = Callable[[Path], None]


class Session(Protocol):
    """Where a run reports to and restores from (standalone or a Ray Train worker)."""

    rank: int
    world_size: int
    device: torch.device

    def restore(self) -> AbstractContextManager[list[Path]]:
        """A context giving the checkpoint folders to resume from, newest first (the loop takes
        the first it can read); empty: start from step 0."""

    def set_aside(self, folder: Path) -> Path | None:
        """Move an unreadable checkpoint folder aside (`checkpoint.set_aside`); its new path,
        None when it is not this session's to move."""

    def report(self, metrics: dict[str, Any], checkpoint: Checkpointer | None) -> None:
        """Report metrics; when `checkpoint` is given, persist a checkpoint it writes into a folder."""


@dataclass
class RunData:
    """Everything the loop needs from the corpus."""

    tokenizer: PreTrainedTokenizerFast
    train_stream: torch.Tensor
    valid_blocks: torch.Tensor
    valid_utterances: list[Utterance]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedCorpus:
    """A data config's corpus read, checked and encoded once, for the trials of a sweep to share.

    The sweep's driver builds it before Ray starts, so that a bad file fails there, once, with
    one line (exit 2), and hands it to every trial through Ray's object store: no trial reads or
    tokenises the corpus again. A trial uses it only for the data config it was built from, and
    only with the tokenizer it implies (a resumed trial's checkpointed tokenizer must match)."""

    data_json: str  # the DataConfig it holds (model_dump_json)
    units: tuple[str, ...]  # the tokenizer's units after its special tokens, in id order
    train_stream: torch.Tensor
    valid_stream: torch.Tensor
    valid_utterances: list[Utterance]
    warnings: tuple[str, ...] = ()  # signs of a wrong format (corpus.format_warnings)

    def serves(self, data: DataConfig, tokenizer: PreTrainedTokenizerFast | None) -> bool:
        if data.model_dump_json() != self.data_json:
            return False
        if tokenizer is None:
            return True
        expected = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *self.units))}
        return tokenizer.get_vocab() == expected


def prepare_corpus(
    data: DataConfig, tokenizer: PreTrainedTokenizerFast | None = None
) -> PreparedCorpus:
    """Read the train and validation utterances of `data` and encode them (DataError if bad)."""
    train_utts, valid_utts = data.load()
    tokenizer = tokenizer or build_tokenizer(train_utts + valid_utts)
    bid = boundary_id(tokenizer)
    n_special = len(SPECIAL_TOKENS)
    units = tuple(tokenizer.convert_ids_to_tokens(list(range(n_special, len(tokenizer)))))
    return PreparedCorpus(
        data_json=data.model_dump_json(),
        units=units,
        train_stream=token_stream(encode(tokenizer, train_utts), bid),
        valid_stream=token_stream(encode(tokenizer, valid_utts), bid),
        valid_utterances=valid_utts,
        warnings=tuple(format_warnings(train_utts, f"data.train ({data.train.describe()})")),
    )


def prepare_data(
    cfg: RunConfig,
    tokenizer: PreTrainedTokenizerFast | None = None,
    corpus: PreparedCorpus | None = None,
) -> RunData:
    """The loop's data: from `corpus` when it serves this config (a sweep's shared corpus), else
    read from the config's sources."""
    if corpus is None or not corpus.serves(cfg.data, tokenizer):
        corpus = prepare_corpus(cfg.data, tokenizer)
    tokenizer = tokenizer or tokenizer_from_units(corpus.units)
    block, valid_stream = cfg.training.block_size, corpus.valid_stream
    valid_blocks = blocks(valid_stream, block)
    if valid_blocks.shape[0] == 0:  # a validation split shorter than one block: pad it
        pad = torch.full((block - valid_stream.numel(),), tokenizer.pad_token_id)
        valid_blocks = torch.cat([valid_stream, pad]).view(1, block)
    return RunData(
        tokenizer, corpus.train_stream, valid_blocks, corpus.valid_utterances, corpus.warnings
    )


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.training
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": t.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    return torch.optim.AdamW(groups, lr=t.lr)


def total_steps(cfg: RunConfig, sampler: BlockSampler) -> int:
    """The step budget: training.steps, or training.epochs worth of batches when that is set."""
    if cfg.training.epochs:
        return max(1, math.ceil(cfg.training.epochs * sampler.batches_per_epoch))
    return cfg.training.steps


@torch.inference_mode()
def validation_loss(
    model: torch.nn.Module,
    valid_blocks: torch.Tensor,
    session: Session,
    cfg: RunConfig,
    pad_id: int,
) -> float:
    """Mean cross-entropy (nats) over every predicted token of the validation blocks, all ranks."""
    was_training = model.training
    model.eval()
    mine = valid_blocks[session.rank :: session.world_size]
    if cfg.training.eval_max_batches:
        mine = mine[: cfg.training.eval_max_batches * cfg.training.batch_size]
    total = torch.zeros(2, dtype=torch.float64, device=session.device)
    for start in range(0, mine.shape[0], cfg.training.batch_size):
        batch = mine[start : start + cfg.training.batch_size].to(session.device)
        logits = model(input_ids=batch).logits[:, :-1]
        targets = batch[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
        )
        keep = targets.reshape(-1) != pad_id
        total += torch.stack([losses[keep].sum().double(), keep.sum().double()])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1].clamp(min=1))


def segmentation_scores(
    model: GPT2LMHeadModel, data: RunData, cfg: RunConfig, device: torch.device
) -> dict[str, float | str]:
    from seg_tune.cues import Window
    from seg_tune.segment import evaluate_segmentation

    subset = data.valid_utterances[: cfg.training.segment_utterances]
    context = min(cfg.training.block_size, cfg.model.n_positions)
    window = Window.for_model(model, context, batch_size=64, device=device)
    return evaluate_segmentation(
        model, data.tokenizer, subset, window=window, type_key=cfg.score.type_key
    )


def export_model(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    folder: Path,
    cfg: RunConfig,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Hugging Face folder (model + tokenizer + seg_tune config, and `extra` text files by
    name), written atomically: a crash leaves the old folder or the new one, never half."""

    def fill(tmp: Path) -> None:
        hf_logging.disable_progress_bar()  # a bar per export would flood the run's log
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "seg_tune_config.json").write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    ckpt.atomic_dir(folder, fill)


@dataclass(frozen=True)
class _Restored:
    """A checkpoint read whole: its folder, state.pt, meta.json and tokenizer."""

    folder: Path
    state: dict[str, Any]
    meta: dict[str, Any]
    tokenizer: PreTrainedTokenizerFast


class _Trainer:
    """State of one run; `run()` is the loop. Kept as a class so each piece stays small."""

    def __init__(
        self,
        cfg: RunConfig,
        session: Session,
        export_dir: Path | None,
        progress: bool,
        corpus: PreparedCorpus | None = None,
    ) -> None:
        self.cfg, self.session, self.export_dir = cfg, session, export_dir
        self.corpus = corpus
        self.progress = progress and session.rank == 0
        t = cfg.training
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.restore_warnings: list[str] = []
        with session.restore() as candidates:
            restored = self._first_readable(candidates)
            self._build(restored)
        self.ddp: torch.nn.Module = self.model
        if dist.is_available() and dist.is_initialized() and session.world_size > 1:
            self.ddp = DistributedDataParallel(self.model)

    def _first_readable(self, candidates: list[Path]) -> _Restored | None:
        """The newest checkpoint that reads whole (meta, format, state, tokenizer); the ones
        that do not are moved aside, each with a one-line warning. None: none is left."""
        bad: list[tuple[Path, str]] = []
        restored = None
        for folder in candidates:
            if ckpt.is_set_aside(folder):
                continue  # moved aside by an earlier attempt (the empty folder left for Ray)
            try:
                state, meta = ckpt.read_checkpoint(folder)
                tokenizer = load_tokenizer(folder / "tokenizer")
            except Exception as exc:  # any unreadable part: bad zip, JSON, format, missing file
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                bad.append(
                    (folder, f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
                )
                continue
            restored = _Restored(folder, state, meta, tokenizer)
            break
        if self.session.rank != 0:
            return restored  # rank 0 moves the bad folders and says so
        then = (
            f"resuming from step {int(restored.meta['step'])} ({restored.folder})"
            if restored is not None
            else "no readable checkpoint is left: training starts again from step 0"
        )
        for folder, reason in bad:
            try:
                moved = self.session.set_aside(folder)
                where = f"moved aside to {moved}" if moved else "left in place"
            except OSError as exc:
                where = f"could not be moved aside ({exc})"
            line = f"checkpoint {folder} cannot be read ({reason}); {where}; {then}"
            print(f"seg_tune.train: warning: {line}", file=sys.stderr, flush=True)
            self.restore_warnings.append(line)  # also in the next result, for the driver
        return restored

    def _build(self, restored: _Restored | None) -> None:
        """Data, model, optimizer and scheduler; from the checkpoint `restored` if given."""
        t, world = self.cfg.training, self.session.world_size
        tokenizer = restored.tokenizer if restored is not None else None
        self.data = prepare_data(self.cfg, tokenizer, self.corpus)
        for warning in self.data.warnings if self.progress else ():  # standalone runs
            print(f"seg_tune.train: warning: {warning}", file=sys.stderr, flush=True)
        self.corpus = None  # the loop keeps what it uses, not the whole shared object
        self.sampler = BlockSampler(
            self.data.train_stream, t.block_size, t.batch_size * world, seed=t.seed
        )
        self.steps = total_steps(self.cfg, self.sampler)
        self.model = build_model(self.cfg.model, self.data.tokenizer).to(self.session.device)
        self.optimizer = build_optimizer(self.cfg, self.model)
        self.scheduler = get_scheduler(
            t.lr_schedule if t.lr_schedule != "constant" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=min(t.warmup_steps, self.steps),
            num_training_steps=self.steps,
        )
        self.step = self.resumed_from_step = 0
        # the best evaluation so far on training.select_metric: {"step", "value"} (None: none yet)
        self.best: dict[str, float] | None = None
        self.last_seg: dict[str, float | str] = {}
        self.seg_fresh = False  # the last evaluation computed the segmentation scores
        # early stopping: evaluations since the last improvement by more than min_delta, and
        # the value that improvement reached
        self.patience: dict[str, Any] = {"evals": 0, "reference": None}
        self.stopped_early = False
        if restored is not None:
            self._load(restored)

    # ------------------------------------------------------------------ checkpoints

    def _load(self, restored: _Restored) -> None:
        t = self.cfg.training
        state, meta = restored.state, restored.meta
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(meta["step"])
        self.resumed_from_step = self.step
        self.best = meta.get("best")
        old = meta.get("best_valid_loss")  # format 1 kept only the best loss (its step unknown)
        if self.best is None and t.select_metric == "valid_loss" and old is not None:
            self.best = {"step": -1, "value": float(old)} if math.isfinite(old) else None
        self.last_seg = dict(meta.get("segmentation", {}))
        self.patience = dict(meta.get("patience") or self.patience)
        # a run that early stopping ended stays ended: a rerun does not train on
        self.stopped_early = (meta.get("metrics") or {}).get(STOPPED_BY) == "patience"

    def _write(self, folder: Path, metrics: dict[str, Any]) -> None:
        epoch, within = self.sampler.position(self.step)
        ckpt.write_checkpoint_files(
            folder,
            state={
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": ckpt.rng_state(),
            },
            meta={
                "step": self.step,
                "data_position": {"epoch": epoch, "batch_in_epoch": within},
                "best": self.best,  # the run's best so far (at `step` itself when is_best)
                "is_best": bool(metrics.get(BEST_SO_FAR)),
                "patience": self.patience,  # early stopping's count survives a resume
                "segmentation": self.last_seg,
                "metrics": metrics,
            },
            config_json=self.cfg.model_dump_json(indent=1),
            tokenizer=self.data.tokenizer,
        )

    def _checkpointer(self, metrics: dict[str, Any]) -> Checkpointer:
        return lambda folder: self._write(folder, dict(metrics))

    # ------------------------------------------------------------------ the loop

    def train_step(self) -> float:
        batch = self.sampler.batch(self.step)[self.session.rank :: self.session.world_size]
        batch = batch.to(self.session.device)
        loss = self.ddp(input_ids=batch, labels=batch).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.training.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.training.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def evaluate(self, train_loss: float, tokens_per_s: float) -> dict[str, Any]:
        t = self.cfg.training
        valid_loss = validation_loss(
            self.model,
            self.data.valid_blocks,
            self.session,
            self.cfg,
            self.data.tokenizer.pad_token_id,
        )
        seg_due = t.segment_utterances > 0 and (
            not self.last_seg
            or t.segment_every_steps == 0
            or self.step % t.segment_every_steps == 0
            or self.step == self.steps
        )
        self.seg_fresh = seg_due
        if seg_due and self.session.rank == 0:
            self.last_seg = segmentation_scores(
                self.model, self.data, self.cfg, self.session.device
            )
        return {
            "step": self.step,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_bpp": valid_loss / math.log(2),
            "tokens_per_s": tokens_per_s,
            "resumed_from_step": self.resumed_from_step,  # 0: this attempt started from scratch
            **self.last_seg,
            **self._pop_restore_warnings(),
        }

    def _pop_restore_warnings(self) -> dict[str, list[str]]:
        """The restore's warnings, with the first result after it only."""
        warnings, self.restore_warnings = self.restore_warnings, []
        return {RESTORE_WARNINGS: warnings} if warnings else {}

    def _selected(self, metrics: dict[str, Any]) -> float | None:
        """This evaluation's value of training.select_metric, or None when it has none: not
        reported, not finite, or a segmentation score carried over from an earlier step."""
        t = self.cfg.training
        value = metrics.get(t.select_metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if t.select_metric in SEGMENTATION_METRICS and not self.seg_fresh:
            return None
        return float(value)

    def _gain(self, value: float, reference: float) -> float:
        """How much better `value` is than `reference` (negative: worse)."""
        return reference - value if self.cfg.training.select_mode == "min" else value - reference

    def _improved(self, value: float | None) -> bool:
        """Whether this evaluation is the best so far on training.select_metric."""
        if value is None:
            return False
        return self.best is None or self._gain(value, self.best["value"]) > 0

    def _out_of_patience(self, value: float | None) -> bool:
        """Early stopping: whether `patience_evals` evaluations in a row failed to improve the
        selection metric by more than `min_delta` (evaluations without it do not count)."""
        rule = self.cfg.training.early_stopping
        if rule is None or value is None:
            return False
        reference = self.patience["reference"]
        if reference is None or self._gain(value, reference) > rule.min_delta:
            self.patience = {"evals": 0, "reference": value}
            return False
        self.patience = {**self.patience, "evals": self.patience["evals"] + 1}
        return self.patience["evals"] >= rule.patience_evals

    def run(self) -> dict[str, Any]:
        t = self.cfg.training
        rank0 = self.session.rank == 0
        bar = tqdm(
            total=self.steps,
            initial=self.step,
            disable=None if self.progress else True,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        tokens_per_step = t.batch_size * self.session.world_size * t.block_size
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        metrics: dict[str, Any] = {}
        if rank0:  # in a sweep's trial: its log (`seg_tune.sweep.trial_log`)
            print(
                f"seg_tune.train: GPT-2 {n_parameters(self.model):,} parameters, "
                f"{self.data.train_stream.numel():,} training tokens, {self.steps} steps"
                + (f", from step {self.step}" if self.step else ""),
                flush=True,
            )
        self.model.train()
        first_step_at: float | None = time.time()
        while self.step < self.steps and not self.stopped_early:
            window_loss += self.train_step()
            window_steps += 1
            bar.update(1)
            if self.step % t.log_every_steps == 0 or self.step == self.steps:
                elapsed = time.perf_counter() - window_start
                bar.set_postfix(
                    loss=f"{window_loss / window_steps:.3f}",
                    tok_s=f"{tokens_per_step * window_steps / elapsed:,.0f}",
                )
            checkpoint_due = (
                self.step % t.checkpoint_every_steps == 0
                or self.step == self.steps
                or self.step in t.checkpoint_at_steps
            )
            if self.step % t.eval_every_steps and not checkpoint_due:
                continue
            elapsed = time.perf_counter() - window_start
            metrics = self.evaluate(
                window_loss / window_steps, tokens_per_step * window_steps / elapsed
            )
            value = self._selected(metrics)
            improved = self._improved(value)
            metrics[BEST_SO_FAR] = int(improved)
            if first_step_at is not None:  # the attempt's first result
                metrics[FIRST_STEP_AT], first_step_at = first_step_at, None
            stop = self._out_of_patience(value)
            if stop:  # a normal finish, checkpointed (a resume must not train on)
                metrics[STOPPED_BY] = "patience"
                checkpoint_due = True
            if improved:
                self.best = {"step": self.step, "value": value}
                checkpoint_due = True  # the best model so far is kept as a checkpoint
                if rank0 and self.export_dir is not None:
                    export_model(
                        self.model, self.data.tokenizer, self.export_dir / "best_model", self.cfg
                    )
            if rank0 and bar.disable:  # no bar (a trial, or no terminal): a line per evaluation
                print(summary_line(metrics), flush=True)
            metrics[REPORTED_AT] = time.time()
            self.session.report(metrics, self._checkpointer(metrics) if checkpoint_due else None)
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if stop:
                break
        bar.close()
        if rank0 and self.export_dir is not None:
            export_model(self.model, self.data.tokenizer, self.export_dir / "final_model", self.cfg)
        return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    shown = [
        "step",
        "train_loss",
        "valid_loss",
        "valid_bpp",
        "seg_boundary_noedge_fscore",
        "tokens_per_s",
    ]
    return " ".join(
        f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
        for k in shown
        if k in metrics
    )


def train_loop(
    cfg: RunConfig,
    session: Session,
    export_dir: Path | None = None,
    progress: bool = True,
    corpus: PreparedCorpus | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run; returns the last reported metrics.

    `progress`: a progress bar on a terminal, a line per evaluation otherwise (rank 0 only);
    False inside a sweep, where Ray Tune's status table is the progress display.
    `corpus`: the sweep's shared corpus (`prepare_corpus`), used when it serves `cfg.data`.
    """
    return _Trainer(cfg, session, export_dir, progress, corpus).run()


# ---------------------------------------------------------------------- standalone


class LocalSession:
    """A single-process run: checkpoints under `out/checkpoints`, metrics in `out/metrics.jsonl`."""

    rank = 0
    world_size = 1

    def __init__(self, out: Path, keep: int, device: str = "cpu") -> None:
        self.out = out
        self.device = torch.device(device)
        self.checkpoints = ckpt.CheckpointDir(out / "checkpoints", keep)
        self.history: list[dict[str, Any]] = []

    def restore(self) -> AbstractContextManager[list[Path]]:
        return nullcontext(self.checkpoints.folders()[::-1])

    def set_aside(self, folder: Path) -> Path | None:
        return ckpt.set_aside(folder, placeholder=False)  # this run's own folder: moved

    def report(self, metrics: dict[str, Any], checkpoint: Checkpointer | None) -> None:
        self.history.append(dict(metrics))
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if checkpoint is not None:
            self.checkpoints.save(int(metrics["step"]), checkpoint)


if __name__ == "__main__":  # `python -m seg_tune.train`: the command is `seg_tune.cli.train`
    from seg_tune.cli.train import main

    sys.exit(main())
