"""`seg-tune segment` / `python -m seg_tune.segment`: the command-line interface of `seg_tune.segment`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.corpus import DEFAULT_BOUNDARY_TOKENS, Utterance, load_tagged, load_text, write_tagged
from seg_tune.cues import CUE_NAMES, Window, compute_cues
from seg_tune.errors import ConfigError
from seg_tune.metrics import SCORE_KEYS
from seg_tune.score import DEFAULT_TYPE_KEY, TYPE_KEYS
from seg_tune.segment import (
    DEFAULT_METRIC,
    ORACLE_STRATEGIES,
    STRATEGIES,
    VOTE_CUE,
    VOTE_STRATEGIES,
    Gold,
    Segmentation,
    best_row,
    chosen_row,
    format_table,
    scored_table,
    segment_all,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="seg-tune segment",
        description=(
            "Read word boundaries out of a trained model: every cue x strategy scored against "
            "the gold segmentation of DATA. Fair cutoffs (strategy 'threshold', 'vote_threshold') "
            "are chosen on --cutoff-data, or without it by two-fold cross-fitting on DATA (chosen "
            "on one half, applied to the other); 'threshold_oracle' chooses on DATA itself. "
            "--cutoffs-from VALID chooses the cue x strategy row as well as the cutoffs on VALID, "
            "and reports that row on DATA: a held-out result, with nothing chosen on DATA."
        ),
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="exported model folder")
    parser.add_argument("data", type=Path, metavar="DATA", help="corpus to segment and score")
    parser.add_argument("--json", action="store_true", help="print one JSON object (all scores)")
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument(
        "--cutoff-data", type=Path, metavar="FILE", help="split to choose cutoffs on"
    )
    choose.add_argument(
        "--cutoffs-from",
        type=Path,
        metavar="VALID",
        help="split to choose the row (best fair row, cutoffs cross-fitted there) and the "
        "cutoffs on; DATA is then scored once with them (e.g. a test split)",
    )
    parser.add_argument(
        "--type-key",
        choices=TYPE_KEYS,
        default=DEFAULT_TYPE_KEY,
        help="what a word type is: its phonemes concatenated as wordseg does (wordseg), or its "
        f"phoneme sequence (phonemes; a run's score.type_key); default {DEFAULT_TYPE_KEY}",
    )
    parser.add_argument("--write-segmentation", type=Path, metavar="FILE", help="tagged output")
    parser.add_argument("--cue", choices=(*CUE_NAMES, VOTE_CUE), help="cue of the written output")
    parser.add_argument("--strategy", choices=STRATEGIES, help="strategy of the written output")
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        choices=SCORE_KEYS,
        help="cutoffs maximise this; rows sorted by it",
    )
    parser.add_argument(
        "--context", type=int, help="window in tokens (default n_positions, max 128)"
    )
    parser.add_argument(
        "--stride", type=int, help="window step in tokens (default context - context // 4)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    parser.add_argument("--max-utterances", type=int, metavar="N", help="first N utterances only")
    parser.add_argument(
        "--format", choices=("tagged", "text"), default="tagged", help="DATA format"
    )
    parser.add_argument(
        "--boundary-token",
        nargs="+",
        action="extend",
        metavar="TOK",
        help=(
            f"word-boundary token(s) of tagged files (default: {' '.join(DEFAULT_BOUNDARY_TOKENS)}); "
            "the first one is written (after each word; between words for WORD_BOUNDARY)"
        ),
    )
    return parser


def _is_model_config(path: Path) -> bool:
    """Whether `path` is a Hugging Face model config (it names its model_type)."""
    try:
        return "model_type" in json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _load_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    inner = model_dir / "best_model"
    if (inner / "config.json").is_file() and not _is_model_config(model_dir / "config.json"):
        # a run folder (`seg-tune train --out`, whose config.json is the run's) or an
        # experiment folder: its best model
        print(f"seg_tune.segment: {model_dir} is a run folder; using {inner}", file=sys.stderr)
        model_dir = inner
    if not (model_dir / "config.json").is_file():
        raise ConfigError(
            f"{model_dir}: not a model directory (no config.json); pass the folder a training run "
            "exported (final_model or best_model) or one written by save_pretrained"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI's output is the table, not loading bars
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"{model_dir}: the model or tokenizer cannot be loaded: {first}"
        ) from None
    return model, tokenizer


def _selection_split(args: argparse.Namespace) -> Path | None:
    return args.cutoffs_from or args.cutoff_data


def _load_data(path: Path, args: argparse.Namespace, tokens: tuple[str, ...]) -> list[Utterance]:
    utts = load_text(path) if args.format == "text" else load_tagged(path, tokens)
    return utts[: args.max_utterances] if args.max_utterances else utts


def _check_args(args: argparse.Namespace) -> None:
    for key in ("max_utterances", "batch_size", "context", "stride"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} {value}: must be a positive integer")
    out = args.write_segmentation
    if out is not None and out.is_dir():
        raise ConfigError(f"--write-segmentation {out}: is a folder; give a file path")
    if (args.cue or args.strategy) and not out:
        raise ConfigError("--cue and --strategy choose what --write-segmentation writes; give it")
    vote_strategy = args.strategy in VOTE_STRATEGIES
    if args.cue == VOTE_CUE and args.strategy and not vote_strategy:
        raise ConfigError(
            f"--cue {VOTE_CUE} goes with a vote strategy: {', '.join(VOTE_STRATEGIES)}"
        )
    if vote_strategy and args.cue not in (None, VOTE_CUE):
        raise ConfigError(f"--strategy {args.strategy} uses all cues; drop --cue {args.cue}")


def _chosen(
    segs: Sequence[Segmentation],
    table: Sequence[Mapping],
    args: argparse.Namespace,
    held_out: Mapping | None = None,
) -> Segmentation:
    """The segmentation to write: the best row matching --cue/--strategy (fair rows only unless
    the oracle strategy was asked for); without them, the row chosen on --cutoffs-from."""
    if held_out is not None and args.cue is None and args.strategy is None:
        return next(
            s for s in segs if (s.cue, s.strategy) == (held_out["cue"], held_out["strategy"])
        )
    rows = [
        r
        for r in table
        if (args.cue is None or r["cue"] == args.cue)
        and (args.strategy is None or r["strategy"] == args.strategy)
    ]
    row = best_row(rows, args.metric, include_oracle=args.strategy in ORACLE_STRATEGIES)
    return next(s for s in segs if s.cue == row["cue"] and s.strategy == row["strategy"])


def _write(path: Path, gold: Gold, seg: Segmentation, token: str) -> None:
    cuts = np.cumsum(gold.lengths)[:-1]
    utts = [
        Utterance.from_word_starts(u.phonemes, flags.tolist())
        for u, flags in zip(gold.utterances, np.split(seg.starts, cuts), strict=True)
    ]
    convention = "between" if token == "WORD_BOUNDARY" else "after"
    try:
        write_tagged(path, utts, token, convention)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the segmentation: {exc.strerror}") from None


def _warn_unknown(
    tokenizer: PreTrainedTokenizerBase, utts: Sequence[Utterance], path: Path
) -> None:
    vocab = tokenizer.get_vocab()
    unknown = sorted({p for u in utts for p in u.phonemes if p not in vocab})
    if unknown:
        shown = " ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        print(
            f"warning: {path}: {len(unknown)} phoneme type(s) not in the model's vocabulary "
            f"({shown}); the model reads them as UNK",
            file=sys.stderr,
        )


def _score_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: list[Utterance],
    cutoff_data: list[Utterance] | None,
    window: Window,
    args: argparse.Namespace,
) -> tuple[Gold, list[Segmentation], list[dict[str, Any]], dict[str, Any] | None]:
    """Every row on DATA; with --cutoffs-from, also the row chosen there and its DATA scores."""
    cues = compute_cues(model, tokenizer, data, window)
    cutoff_cues = compute_cues(model, tokenizer, cutoff_data, window) if cutoff_data else None
    gold = Gold(data, type_key=args.type_key)
    cutoff_gold = Gold(cutoff_data, type_key=args.type_key) if cutoff_data else None
    segs = segment_all(cues, gold, cutoff_cues, cutoff_gold, args.metric, STRATEGIES)
    table = scored_table(gold, segs, args.metric)
    selection = None
    if args.cutoffs_from and cutoff_cues is not None and cutoff_gold is not None:
        # the row is chosen on VALID as the training loop chooses it: fair rows, cross-fitted
        chosen = chosen_row(cutoff_cues, cutoff_gold, args.metric)
        on_data = next(
            r for r in table if (r["cue"], r["strategy"]) == (chosen["cue"], chosen["strategy"])
        )
        selection = {"on_valid": chosen, "on_data": on_data}
    return gold, segs, table, selection


def _report(
    args: argparse.Namespace,
    window: Window,
    gold: Gold,
    table: list[dict[str, Any]],
    selection: dict[str, Any] | None = None,
) -> str:
    """The --json object, or the header line, table and best row (with --cutoffs-from: the row
    chosen there, scored on DATA)."""
    context, stride = window.context, window.stride
    best = best_row(table, args.metric)
    split = _selection_split(args)
    how = f"chosen on {split}" if split else "two-fold cross-fitting on DATA"
    n_utts, n_phonemes = len(gold.lengths), int(gold.lengths.sum())
    if args.json:
        info = {
            "model": str(args.model_dir),
            "data": str(args.data),
            "n_utterances": n_utts,
            "n_phonemes": n_phonemes,
            "context": context,
            "stride": stride,
            "metric": args.metric,
            "fair_cutoffs": how,
        }
        held_out = {}
        if selection is not None:
            held_out = {
                "chosen_on": str(args.cutoffs_from),
                "chosen": selection["on_data"],
                "chosen_on_valid": selection["on_valid"],
            }
        return json.dumps({**info, "rows": table, "best": best, **held_out}, indent=1)
    lines = [
        f"{args.data}: {n_utts} utterances, {n_phonemes} phonemes; model {args.model_dir} "
        f"(context {context}, stride {stride}); fair cutoffs {how}, maximising {args.metric}",
        format_table(table),
    ]
    if selection is None:
        lines.append(
            f"best (not oracle): {best['cue']}/{best['strategy']} "
            f"{args.metric} {best[args.metric]:.4f}"
        )
    else:
        chosen, on_valid = selection["on_data"], selection["on_valid"]
        lines.append(
            f"chosen on {args.cutoffs_from}: {chosen['cue']}/{chosen['strategy']} "
            f"({args.metric} {on_valid[args.metric]:.4f} there); on {args.data}: "
            f"{args.metric} {chosen[args.metric]:.4f} (held out: nothing was chosen on it)"
        )
    return "\n".join(lines)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    tokens = tuple(args.boundary_token or DEFAULT_BOUNDARY_TOKENS)
    model, tokenizer = _load_model(args.model_dir)
    data = _load_data(args.data, args, tokens)
    split = _selection_split(args)
    cutoff_data = _load_data(split, args, tokens) if split else None
    _warn_unknown(tokenizer, data, args.data)
    window = Window.for_model(model, args.context, args.stride, args.batch_size, args.device)
    gold, segs, table, selection = _score_all(model, tokenizer, data, cutoff_data, window, args)
    print(_report(args, window, gold, table, selection))
    if args.write_segmentation:
        seg = _chosen(segs, table, args, selection["on_data"] if selection else None)
        _write(args.write_segmentation, gold, seg, tokens[0])
        print(f"wrote the {seg.name} segmentation to {args.write_segmentation}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune segment` / `python -m seg_tune.segment`; returns the exit status."""
    return run_cli(_run, argv)
