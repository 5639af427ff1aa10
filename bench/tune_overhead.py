"""Overheads of the tuning service, measured side by side in one run on this machine.

    .venv/bin/python bench/tune_overhead.py [--steps 300] [--repeats 3]

1. `ray.init` of a local cluster with the dashboard (median of `--repeats`).
2. Trial start to first training step, for the two trial paths: training inside the Tune
   function trainable (single-worker default) and a Ray Train TorchTrainer with one worker.
   Measured by a Tune callback: `on_trial_start` to the trial's first result (reported after
   step 1, so one step and one tiny evaluation are included; their cost in the plain loop is
   printed beside).
3. Training throughput (tokens/s) inside a trial against the plain loop: same config, same
   steps, one torch thread each, one trial at a time; median of the per-evaluation figures.

Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

from seg_tune.config import RunConfig, validate  # noqa: E402
from seg_tune.train import LocalSession, train_loop  # noqa: E402

SPACE = """
experiment: {{name: bench, metric: valid_loss, mode: min, num_samples: 1, max_concurrent: 1, max_steps: {steps}}}
data: {{train: {{kind: synthetic, n_utterances: 6000, seed: 0}}}}
model: {{preset: 800k, n_positions: 128}}
training: {{batch_size: 32, block_size: 128, eval_every_steps: {eval_every}, checkpoint_every_steps: {steps},
           segment_utterances: 0, eval_max_batches: 2, threads: 1, warmup_steps: 10}}
space: {{training.lr: 0.001}}
scheduler: {{type: fifo}}
searcher: {{type: random, seed: 0}}
resources: {{workers: 1, cpus_per_worker: 1, use_ray_train: {path}}}
wandb: {{mode: disabled}}
"""


def time_ray_init(repeats: int) -> list[float]:
    import ray

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ray.init(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level="ERROR",
            log_to_driver=False,
            resources={"seg_tune_trial": 1},
        )
        times.append(time.perf_counter() - t0)
        ray.shutdown()
    return times


def run_trial(path: str, steps: int, eval_every: int) -> tuple[float, list[float]]:
    """(seconds from trial start to first result, tokens/s of each evaluation)."""
    import ray
    from ray import tune

    from seg_tune.sweep.layout import Layout
    from seg_tune.sweep.load import load_space
    from seg_tune.sweep.tuner import Sweep, build_tuner

    times: dict[str, float] = {}
    speeds: list[float] = []

    class Clock(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            times.setdefault("started", time.monotonic())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            times.setdefault("first", time.monotonic())
            speeds.append(result["tokens_per_s"])

    with tempfile.TemporaryDirectory() as tmp:
        space_file = Path(tmp) / "space.yaml"
        space_file.write_text(SPACE.format(steps=steps, eval_every=eval_every, path=path))
        spec = load_space(space_file)
        exp = Sweep(spec, Layout(Path(tmp) / "bench"))
        ray.init(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level="ERROR",
            log_to_driver=False,
            resources={"seg_tune_trial": 1},
        )
        try:
            tuner = build_tuner(spec, Layout(Path(tmp) / "t"), exp.trainable(), [Clock()])
            tuner.fit()
        finally:
            ray.shutdown()
    return times["first"] - times["started"], speeds


def plain_loop(steps: int, eval_every: int) -> tuple[float, list[float]]:
    spec_cfg = {
        "data": {"train": {"kind": "synthetic", "n_utterances": 6000, "seed": 0}},
        "model": {"preset": "800k", "n_positions": 128},
        "training": {
            "steps": steps,
            "batch_size": 32,
            "block_size": 128,
            "lr": 0.001,
            "eval_every_steps": eval_every,
            "checkpoint_every_steps": steps,
            "segment_utterances": 0,
            "eval_max_batches": 2,
            "threads": 1,
            "warmup_steps": 10,
        },
    }
    cfg = validate(RunConfig, spec_cfg, source="bench")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        first: list[float] = []

        class Timed(LocalSession):
            def report(self, metrics, checkpoint):
                if not first:
                    first.append(time.monotonic() - t0)
                super().report(metrics, checkpoint)

        session = Timed(Path(tmp), keep=1)
        train_loop(cfg, session, progress=False)
    return first[0], [m["tokens_per_s"] for m in session.history]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    inits = time_ray_init(args.repeats)
    first_plain, _ = plain_loop(1, 1)
    rows = []
    for label, path in (
        ("Tune function trainable (default, 1 worker)", "auto"),
        ("Ray Train TorchTrainer, 1 worker", "always"),
    ):
        starts = [run_trial(path, 1, 1)[0] for _ in range(args.repeats)]
        rows.append((label, starts))
    # throughput: one run each, evaluations every 50 steps, the first one dropped (warm-up)
    _, plain_speeds = plain_loop(args.steps, 50)
    _, fast_speeds = run_trial("auto", args.steps, 50)
    _, train_speeds = run_trial("always", args.steps, 50)
    med = lambda xs: statistics.median(xs[1:] if len(xs) > 1 else xs)  # noqa: E731
    print("## Tuning-service overheads (bench/tune_overhead.py)\n")
    print(
        f"Command: `.venv/bin/python bench/tune_overhead.py --steps {args.steps} "
        f"--repeats {args.repeats}` on 2 CPU cores; medians.\n"
    )
    print("| what | median | runs |\n|---|---|---|")
    print(
        f"| `ray.init` (local cluster, dashboard on) | {statistics.median(inits):.1f} s | "
        f"{', '.join(f'{t:.1f}' for t in inits)} |"
    )
    print(
        f"| plain loop: start of `train_loop` to first report (step 1) | {first_plain:.1f} s | 1 |"
    )
    for label, starts in rows:
        print(
            f"| trial start to first step reported: {label} | {statistics.median(starts):.1f} s | "
            f"{', '.join(f'{t:.1f}' for t in starts)} |"
        )
    print(
        "\n| throughput, 800k model, batch 32x128, 1 thread | tokens/s (median) | ratio to plain |"
    )
    print("|---|---|---|")
    base = med(plain_speeds)
    for label, speeds in (
        ("plain loop", plain_speeds),
        ("Tune function trainable", fast_speeds),
        ("Ray Train, 1 worker", train_speeds),
    ):
        print(f"| {label} | {med(speeds):,.0f} | {med(speeds) / base:.3f} |")


if __name__ == "__main__":
    main()
