"""`seg-tune score` / `python -m seg_tune.score`: the command-line interface of `seg_tune.score`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import json
from pathlib import Path

from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.corpus import DEFAULT_BOUNDARY_TOKENS, load_tagged
from seg_tune.metrics import SCORE_KEYS as SCORE_KEYS
from seg_tune.score import (
    DEFAULT_TYPE_KEY,
    TYPE_KEYS,
    file_locator,
    format_table,
    score,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="seg-tune score",
        description="Score a predicted segmentation against the gold one (wordseg conventions).",
    )
    parser.add_argument("gold", type=Path, help="gold tagged file (one utterance per line)")
    parser.add_argument("pred", type=Path, help="predicted tagged file, same phonemes and lines")
    parser.add_argument("--json", action="store_true", help="print one JSON object (12 keys)")
    parser.add_argument(
        "--type-key",
        choices=TYPE_KEYS,
        default=DEFAULT_TYPE_KEY,
        help="what a word type is: wordseg = its phoneme symbols concatenated (as wordseg and "
        "the papers), phonemes = its phoneme sequence (stricter) (default: %(default)s)",
    )
    parser.add_argument(
        "--boundary-token",
        nargs="+",
        action="extend",
        metavar="TOK",
        help=f"word-boundary token(s) in both files (default: {' '.join(DEFAULT_BOUNDARY_TOKENS)})",
    )
    return parser


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    tokens = tuple(args.boundary_token or DEFAULT_BOUNDARY_TOKENS)
    gold = load_tagged(args.gold, tokens)
    pred = load_tagged(args.pred, tokens)
    scores = score(gold, pred, where=file_locator(args.gold, args.pred), type_key=args.type_key)
    print(json.dumps(scores) if args.json else format_table(scores))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune score` / `python -m seg_tune.score`; returns the exit status."""
    return run_cli(_run, argv)
