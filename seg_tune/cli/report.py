"""`seg-tune report` / `python -m seg_tune.report`: the command-line interface of `seg_tune.report`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.report import render_markdown, write_report
from seg_tune.study_report import is_study_folder, write_study_report
from seg_tune.sweep.lock import holder
from seg_tune.sweep.summary import read_experiment


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="seg-tune report",
        description=(
            "Write EXP_DIR/report.md (Markdown) and EXP_DIR/plots/*.png for a finished or "
            "interrupted tuning experiment; print the report's path. While a driver runs the "
            "experiment (it holds the folder's lock), print the report instead: only the "
            "driver writes in its folder."
        ),
    )
    parser.add_argument(
        "exp_dir",
        type=Path,
        metavar="EXP_DIR",
        help="experiment folder (holds summary.json), or a study's folder (holds study.json: "
        "its report.md, study.csv and plots are rebuilt, mid-study too)",
    )
    return parser


def _run(argv: list[str] | None) -> int:
    args: argparse.Namespace = build_parser().parse_args(argv)
    if is_study_folder(args.exp_dir):  # a study's report reads the cells' summaries only
        print(write_study_report(args.exp_dir))
        return 0
    running = holder(args.exp_dir)
    if running is not None:  # its driver writes the report; we only read
        print(
            f"seg-tune report: {args.exp_dir} is in use by a running seg_tune driver "
            f"({running.describe()}): printing the report here instead of writing it (its "
            "driver writes report.md when it ends)",
            file=sys.stderr,
        )
        print(render_markdown(read_experiment(args.exp_dir), {}), end="")
        return 0
    print(write_report(args.exp_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune report` / `python -m seg_tune.report`; returns the exit status."""
    return run_cli(_run, argv)
