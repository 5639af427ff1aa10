"""`seg-tune train` / `python -m seg_tune.train`: the command-line interface of `seg_tune.train`
(arguments, printing, exit status); the work is done by the library module."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from seg_tune.cli.common import ArgumentParser, run_cli
from seg_tune.config import load_run_config
from seg_tune.defaults import run_config_reference
from seg_tune.train import (
    LocalSession,
    summary_line,
    train_loop,
)


def _run(argv: list[str] | None) -> int:
    parser = ArgumentParser(
        prog="seg-tune train", description="Train one phoneme language model (resumes from --out)."
    )
    parser.add_argument(
        "config", type=Path, nargs="?", help="run config YAML (data/model/training sections)"
    )
    parser.add_argument("--out", type=Path, help="run folder: checkpoints, metrics, models")
    parser.add_argument("--steps", type=int, help="override training.steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--print-defaults",
        action="store_true",
        help="print every key of a run config with its default and meaning, and exit",
    )
    args = parser.parse_args(argv)
    if args.print_defaults:
        print(run_config_reference(), end="")
        return 0
    if args.config is None or args.out is None:
        parser.error("give CONFIG and --out DIR (or --print-defaults)")
    cfg = load_run_config(args.config)
    if args.steps is not None:
        cfg = cfg.with_overrides({"training.steps": args.steps})
    session = LocalSession(args.out, cfg.training.keep_checkpoints, args.device)
    resumed = session.checkpoints.latest()
    print(
        f"seg_tune.train: {cfg.data.train.describe()}; "
        + (f"resuming from {resumed}" if resumed else f"new run in {args.out}"),
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
    try:
        metrics = train_loop(cfg, session, export_dir=args.out)
    except KeyboardInterrupt:
        print(
            "seg_tune.train: interrupted; run the same command again to resume from the last "
            "checkpoint",
            file=sys.stderr,
        )
        return 130
    if not metrics:  # resumed at its last step: nothing left to train or report
        print(
            f"seg_tune.train: already done: {resumed} is at the end of its step budget; "
            f"models in {args.out}/final_model and {args.out}/best_model (raise "
            "training.steps or give --steps to train on)",
            flush=True,
        )
        return 0
    print(
        f"seg_tune.train: done: {summary_line(metrics)}; models in {args.out}/final_model and "
        f"{args.out}/best_model",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `seg-tune train` / `python -m seg_tune.train`; returns the exit status."""
    return run_cli(_run, argv)
