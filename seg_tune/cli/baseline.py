"""`seg-tune baseline` / `python -m seg_tune.baseline`: the command-line interface of `seg_tune.baseline`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seg_tune.baseline import (
    DIRECTIONS,
    SIMPLE_BASELINE_LABELS,
    THRESHOLDS,
    format_all_table,
    simple_baselines,
    tp_all_scores,
    tp_segment,
)
from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.corpus import DEFAULT_BOUNDARY_TOKENS, load_tagged, write_tagged
from seg_tune.errors import ConfigError
from seg_tune.score import DEFAULT_TYPE_KEY, TYPE_KEYS, Scorer, format_table


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="seg-tune baseline", description="Classic segmentation baselines, scored on gold."
    )
    algos = parser.add_subparsers(dest="algorithm", required=True, metavar="ALGORITHM")
    tp = algos.add_parser(
        "tp",
        help="transitional probabilities (wordseg's tp)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tp.add_argument(
        "data", type=Path, help="tagged file: its phonemes are segmented, its words score"
    )
    tp.add_argument("--direction", choices=DIRECTIONS, default="forward")
    tp.add_argument("--threshold", choices=THRESHOLDS, default="relative")
    tp.add_argument(
        "--all",
        action="store_true",
        help="all six direction x threshold combinations, then wordseg's simple baselines "
        "(random boundaries at the gold rate, every phoneme a word, each utterance one word)",
    )
    tp.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with --all: seed of the random (gold-rate) baseline (default: 0)",
    )
    tp.add_argument(
        "--type-key",
        choices=TYPE_KEYS,
        default=DEFAULT_TYPE_KEY,
        help="what a word type is: its phonemes concatenated as wordseg does (wordseg), or its "
        f"phoneme sequence (phonemes); default {DEFAULT_TYPE_KEY}",
    )
    tp.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    tp.add_argument(
        "--write-segmentation",
        type=Path,
        metavar="FILE",
        help="write the segmentation as a tagged file (;eword after each word)",
    )
    tp.add_argument(
        "--boundary-token",
        nargs="+",
        action="extend",
        metavar="TOK",
        help=f"word-boundary token(s) in DATA (default: {' '.join(DEFAULT_BOUNDARY_TOKENS)})",
    )
    return parser


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.all and args.write_segmentation:
        raise ConfigError(
            "--write-segmentation writes one segmentation; drop --all or --write-segmentation"
        )
    utterances = load_tagged(args.data, tuple(args.boundary_token or DEFAULT_BOUNDARY_TOKENS))
    if args.all:
        # the six TP rows, then the simple baselines (names of SIMPLE_BASELINE_LABELS) below them
        results = tp_all_scores(utterances, type_key=args.type_key) | simple_baselines(
            utterances, seed=args.seed, type_key=args.type_key
        )
        labels = dict(SIMPLE_BASELINE_LABELS)
        labels["random_gold_rate"] += f", seed {args.seed}"
        print(json.dumps(results) if args.json else format_all_table(results, labels))
        return 0
    segmented = tp_segment(utterances, args.direction, args.threshold)
    if args.write_segmentation:
        write_tagged(args.write_segmentation, segmented)
        name = f"{args.direction}/{args.threshold} TP"
        print(f"wrote the {name} segmentation to {args.write_segmentation}", file=sys.stderr)
    scores = Scorer(utterances, type_key=args.type_key).score(segmented)
    print(json.dumps(scores) if args.json else format_table(scores))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune baseline` / `python -m seg_tune.baseline`; the exit status."""
    return run_cli(_run, argv)
