"""Benchmark: batched cue extraction against one forward pass per position.

The per-position loop (`seg_tune.cues.reference_cues`, how the published code worked) is far too
slow for the whole dev set, so it is timed on a subset (default: the first 200 utterances) and
extrapolated; the batched version (`compute_cues`) is timed on the same subset (median of
--repeats runs before and --repeats after the loop), giving the side-by-side ratio, and then on the whole set together with every
segmentation strategy and the scoring of every row (what `seg-tune segment` does).

Both use the same windows (context, stride), so they compute the same numbers; the script checks
that on the subset. A randomly initialised model has the cost of a trained one; pass --model DIR
to time a trained one.

    python bench/segment_speed.py                      # childes-en dev, preset 1M, 2 threads
    python bench/segment_speed.py --smoke-test         # seconds: tiny model, synthetic corpus

It prints a Markdown snippet (with the command line) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from seg_tune.config import ModelConfig
from seg_tune.corpus import Utterance, load_tagged, synthetic_corpus
from seg_tune.cues import CUE_NAMES, Window, compute_cues, reference_cues
from seg_tune.model import PRESETS, build_model, n_parameters
from seg_tune.segment import best_row, table_from_cues
from seg_tune.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "childes-en" / "dev.txt"
T = TypeVar("T")


@dataclass(frozen=True)
class Took:
    """Wall-clock seconds, and CPU seconds of this process (all threads): on a shared machine
    the CPU time says what the work costs, the wall time what it cost under that day's load."""

    wall_s: float
    cpu_s: float

    def __str__(self) -> str:
        return f"{self.wall_s:.3f} s ({self.cpu_s:.3f} CPU s)"


def timed(fn: Callable[[], T]) -> tuple[Took, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Took(time.perf_counter() - wall, time.process_time() - cpu), out


def median(runs: Sequence[Took]) -> Took:
    return Took(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEV, help="tagged corpus (default childes-en dev)")
    p.add_argument("--model", type=Path, help="trained model folder (default: random init)")
    p.add_argument("--preset", default="1M", choices=sorted(PRESETS), help="random model's size")
    p.add_argument("--subset", type=int, default=200, help="utterances for the side-by-side")
    p.add_argument(
        "--repeats", type=int, default=3, help="batched runs before and after the loop (median)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads for both")
    p.add_argument("--context", type=int, help="window (default: n_positions capped at 128)")
    p.add_argument("--stride", type=int, help="window step (default: context - context // 4)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--smoke-test", action="store_true", help="tiny model and corpus, seconds")
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[Any, Any, list[Utterance], str]:
    """(model, tokenizer, utterances, description of the model)."""
    if args.smoke_test:
        utts = synthetic_corpus(300, seed=1)
        tok = build_tokenizer(utts)
        cfg = ModelConfig(preset=None, n_layer=1, n_embd=32, n_head=2, n_positions=64)
        model = build_model(cfg, tok)
        return model, tok, utts, "smoke test: 1 layer x 32, random init"
    utts = load_tagged(args.data)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(args.model))
        tok = AutoTokenizer.from_pretrained(str(args.model))
        return model, tok, utts, f"{args.model}"
    torch.manual_seed(0)
    tok = build_tokenizer(utts)
    model = build_model(ModelConfig(preset=args.preset, dropout=0.0), tok)
    return model, tok, utts, f"preset {args.preset}, random init"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok, utts, what = load(args)
    model.eval()
    subset = utts[: args.subset] if not args.smoke_test else utts[:30]
    window = Window.for_model(model, args.context, args.stride, args.batch_size)
    context, stride = window.context, window.stride
    n_sub = sum(len(u) for u in subset)
    n_all = sum(len(u) for u in utts)
    print(f"model: {what}, {n_parameters(model):,} parameters; context {context}, stride {stride}")
    print(
        f"data: {args.data if not args.smoke_test else 'synthetic'}: {len(utts)} utterances, "
        f"{n_all:,} phonemes; subset {len(subset)} utterances, {n_sub:,} phonemes",
        flush=True,
    )

    load_before = os.getloadavg()[0]

    def run_batched() -> Any:
        return compute_cues(model, tok, subset, window)

    # Batched runs before and after the long loop, so a change of load during it shows in both.
    runs = [timed(run_batched)[0] for _ in range(args.repeats)]
    loop, slow = timed(lambda: reference_cues(model, tok, subset, window))
    print(f"per-position loop on the subset: {loop}", flush=True)
    after = [timed(run_batched) for _ in range(args.repeats)]
    runs += [took for took, _ in after]
    batched = median(runs)
    fast = after[-1][1]
    for name in CUE_NAMES:
        if not np.allclose(fast.values[name], slow.values[name], rtol=1e-4, atol=1e-5):
            print(f"error: batched and per-position {name} differ", file=sys.stderr)
            return 1
    print(f"batched on the subset: {batched} (median of {len(runs)})", flush=True)
    cues_took, cues = timed(lambda: compute_cues(model, tok, utts, window))
    table_took, table = timed(lambda: table_from_cues(cues, utts))
    best = best_row(table)
    command = shlex.join(
        ["python", "bench/segment_speed.py", *(sys.argv[1:] if argv is None else argv)]
    )
    print(
        snippet(
            command=command,
            what=what,
            params=n_parameters(model),
            window=(context, stride),
            threads=args.threads,
            batch_size=args.batch_size,
            n_sub=(len(subset), n_sub),
            n_all=(len(utts), n_all),
            loop=loop,
            batched=batched,
            repeats=len(runs),
            cues=cues_took,
            table=table_took,
            rows=len(table),
            load=(load_before, os.getloadavg()[0]),
            best=f"{best['cue']}/{best['strategy']} BF {best['boundary_noedge_fscore']:.3f}",
        )
    )
    return 0


def _cell(took: Took) -> str:
    return f"{took.wall_s:.2f} s | {took.cpu_s:.2f} s"


def snippet(**r: Any) -> str:
    """The Markdown block for BENCHMARKS.md."""
    loop, batched, cues, table = r["loop"], r["batched"], r["cues"], r["table"]
    per_position = loop.wall_s / r["n_sub"][1]
    extrapolated = per_position * r["n_all"][1]
    total = Took(cues.wall_s + table.wall_s, cues.cpu_s + table.cpu_s)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}"
    (n_utt_sub, n_sub), (n_utt, n_all) = r["n_sub"], r["n_all"]
    return "\n".join(
        [
            "",
            "### Cue extraction: batched windows vs one forward pass per position",
            "",
            f"`{r['command']}`",
            "",
            f"Model: {r['what']} ({r['params']:,} parameters); context {r['window'][0]}, stride "
            f"{r['window'][1]}, batch {r['batch_size']} windows; torch threads {r['threads']}; "
            f"{machine}; 1-minute load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after "
            "(a shared machine: the CPU-seconds column is the steadier one).",
            "",
            "| measurement | utterances | phonemes | wall | CPU (all threads) |",
            "|---|---:|---:|---:|---:|",
            f"| per-position loop, subset | {n_utt_sub:,} | {n_sub:,} | {_cell(loop)} |",
            f"| batched, same subset (median of {r['repeats']}) | {n_utt_sub:,} | {n_sub:,} | "
            f"{_cell(batched)} |",
            f"| per-position loop, whole set (extrapolated, {per_position * 1e3:.1f} ms/phoneme) "
            f"| {n_utt:,} | {n_all:,} | ~{extrapolated:,.0f} s | |",
            f"| batched cues, whole set | {n_utt:,} | {n_all:,} | {_cell(cues)} |",
            f"| all {r['rows']} cue x strategy rows segmented and scored | | | {_cell(table)} |",
            f"| **whole set: cues + segmentation + scoring** | {n_utt:,} | {n_all:,} | "
            f"**{total.wall_s:.2f} s** | {total.cpu_s:.2f} s |",
            "",
            f"Speed-up side by side on the subset: **{loop.wall_s / batched.wall_s:,.0f}x** wall, "
            f"{loop.cpu_s / batched.cpu_s:,.0f}x CPU (identical cues, checked with np.allclose). "
            f"Best fair row on the whole set: {r['best']}.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
