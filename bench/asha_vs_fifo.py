"""ASHA + Optuna against FIFO random search at equal num_samples, on childes-en.

    .venv/bin/python bench/asha_vs_fifo.py [--samples 12] [--max-steps 450] [--data ../shared/data/childes-en]

Runs `python -m seg_tune.run` twice on the same space (train.txt for training, the first 2,000
utterances of dev.txt for validation and segmentation): once with ASHA (grace max/9,
reduction 3) and the seeded Optuna TPE searcher, once with FIFO and the seeded random searcher.
Reports the trial-steps each used, the best objective (validation loss) reached, the best
boundary F, and wall time. Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def space(data: Path, samples: int, max_steps: int, asha: bool) -> dict:
    return {
        "experiment": {
            "name": "asha" if asha else "fifo",
            "metric": "valid_loss",
            "mode": "min",
            "num_samples": samples,
            "max_concurrent": 2,
            "max_steps": max_steps,
        },
        "data": {
            "train": {"kind": "tagged", "path": str(data / "train.txt")},
            "valid": {"kind": "tagged", "path": str(data / "dev.txt"), "max_utterances": 2000},
        },
        "model": {"preset": "400k", "n_positions": 64},
        "training": {
            "batch_size": 32,
            "block_size": 64,
            "warmup_steps": max_steps // 27,
            "eval_every_steps": max_steps // 9,
            "checkpoint_every_steps": max_steps // 3,
            "segment_utterances": 300,
            "threads": 1,
        },
        "space": {
            "training.lr": {"type": "loguniform", "min": 3e-4, "max": 5e-3},
            "model.dropout": {"type": "choice", "values": [0.0, 0.1, 0.3]},
            "model.n_embd": {"type": "choice", "values": [64, 128]},
        },
        "scheduler": (
            {"type": "asha", "grace_period_steps": max_steps // 9, "reduction_factor": 3}
            if asha
            else {"type": "fifo"}
        ),
        "searcher": {"type": "optuna" if asha else "random", "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "wandb": {"mode": "disabled"},
    }


def run(doc: dict, storage: Path) -> tuple[dict, float]:
    path = storage / f"{doc['experiment']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    t0 = time.monotonic()
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(path), "--storage", str(storage), "--no-report"],
        check=True,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    summary = json.loads((storage / doc["experiment"]["name"] / "summary.json").read_text())
    return summary, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--max-steps", type=int, default=450)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/childes-en")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for asha in (True, False):
            summary, wall = run(
                space(args.data.resolve(), args.samples, args.max_steps, asha), Path(tmp)
            )
            trials = summary["trials"]
            steps = sum(t["steps_trained"] for t in trials)
            best = min(t["metrics"]["valid_loss"] for t in trials if "valid_loss" in t["metrics"])
            best_bf = max(t["metrics"].get("seg_boundary_noedge_fscore", 0) for t in trials)
            early = sum(t["stopped_early"] for t in trials)
            rows.append(
                (
                    "ASHA + Optuna TPE" if asha else "FIFO + random",
                    steps,
                    best,
                    best_bf,
                    early,
                    wall,
                )
            )
    print("## ASHA + Optuna against FIFO random search (bench/asha_vs_fifo.py)\n")
    print(
        f"Command: `.venv/bin/python bench/asha_vs_fifo.py --samples {args.samples} "
        f"--max-steps {args.max_steps}`; childes-en train.txt, 2,000 dev utterances for "
        "validation; 2 trials at a time on 2 CPU cores; objective valid_loss (min).\n"
    )
    print(
        "| search | trial-steps | best valid_loss | best boundary_noedge F | stopped early | wall |"
    )
    print("|---|---|---|---|---|---|")
    for name, steps, best, bf, early, wall in rows:
        print(f"| {name} | {steps:,} | {best:.4f} | {bf:.3f} | {early} | {wall / 60:.1f} min |")
    ratio = rows[1][1] / rows[0][1]
    print(
        f"\nFIFO used {ratio:.1f}x the trial-steps of ASHA; best valid_loss "
        f"{rows[0][2]:.4f} (ASHA) vs {rows[1][2]:.4f} (FIFO)."
    )


if __name__ == "__main__":
    main()
