"""`seg-tune report` / `python -m seg_tune.report`: the command-line interface of `seg_tune.report`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import argparse
from pathlib import Path

from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.report import (
    write_report,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="seg-tune report",
        description=(
            "Write EXP_DIR/report.md (Markdown) and EXP_DIR/plots/*.png for a finished or "
            "interrupted tuning experiment; print the report's path."
        ),
    )
    parser.add_argument(
        "exp_dir", type=Path, metavar="EXP_DIR", help="experiment folder (holds summary.json)"
    )
    return parser


def _run(argv: list[str] | None) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    print(write_report(args.exp_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune report` / `python -m seg_tune.report`; returns the exit status."""
    return run_cli(_run, argv)
