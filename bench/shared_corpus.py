"""Trial start-up with the sweep's shared corpus against each trial reading its own.

    .venv/bin/python bench/shared_corpus.py [--repeats 3] [--data ../shared/data/childes-en]

`seg_tune.run` reads, checks and encodes the corpus once on the driver (`read_data`) and hands it
to the trials through Ray's object store (`tune.with_parameters`); before, every trial read and
tokenised the files itself. Both ways are timed here in one local Ray cluster, alternating, on
the real childes-en files (train.txt for training, dev.txt for validation): a Tune callback
measures `on_trial_start` to the trial's first result (after step 1 and a 2-batch evaluation, on
the default single-worker path). The driver's own one-off cost (`read_data`) is printed beside.

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
os.environ.setdefault("WANDB_MODE", "disabled")

SPACE = """
experiment: {{name: bench, metric: valid_loss, mode: min, num_samples: 1, max_concurrent: 1, max_steps: 1}}
data: {{train: {{kind: tagged, path: {data}/train.txt}}, valid: {{kind: tagged, path: {data}/dev.txt}}}}
model: {{preset: 800k, n_positions: 128}}
training: {{batch_size: 32, block_size: 128, eval_every_steps: 1, checkpoint_every_steps: 1,
           segment_utterances: 0, eval_max_batches: 2, threads: 1, warmup_steps: 1}}
space: {{training.lr: 0.001}}
scheduler: {{type: fifo}}
searcher: {{type: random, seed: 0}}
resources: {{workers: 1, cpus_per_worker: 1}}
wandb: {{mode: disabled}}
"""


def first_result_s(spec, corpus, storage: Path) -> float:
    """Seconds from the trial's start to its first result."""
    from ray import tune

    from seg_tune.sweep.layout import Layout
    from seg_tune.sweep.tuner import Sweep, build_tuner

    times: dict[str, float] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            times.setdefault("started", time.monotonic())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            times.setdefault("first", time.monotonic())

    exp = Sweep(spec, Layout(storage / "exp"), corpus)
    build_tuner(spec, Layout(storage / "t"), exp.trainable(), [Clock()]).fit()
    return times["first"] - times["started"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/childes-en")
    args = parser.parse_args()
    import ray

    from seg_tune.cli.prepare import read_data
    from seg_tune.sweep.load import load_space

    with tempfile.TemporaryDirectory() as tmp:
        space_file = Path(tmp) / "space.yaml"
        space_file.write_text(SPACE.format(data=args.data.resolve()))
        spec = load_space(space_file)
        import seg_tune.train  # noqa: F401  (imports are not the corpus's cost)

        t0 = time.perf_counter()
        corpus = read_data(spec)
        driver_s = time.perf_counter() - t0
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        own, shared = [], []
        try:
            for i in range(args.repeats):  # alternating, so drift hits both alike
                own.append(first_result_s(spec, None, Path(tmp) / f"own{i}"))
                shared.append(first_result_s(spec, corpus, Path(tmp) / f"shared{i}"))
        finally:
            ray.shutdown()
    med_own, med_shared = statistics.median(own), statistics.median(shared)
    print("## Trial start-up with the shared corpus (bench/shared_corpus.py)\n")
    print(
        f"Command: `.venv/bin/python bench/shared_corpus.py --repeats {args.repeats}` on 2 CPU "
        f"cores; childes-en train.txt ({corpus.train_stream.numel():,} tokens) and dev.txt "
        f"({corpus.valid_stream.numel():,} tokens); single-worker trials; medians.\n"
    )
    print("| trial start to first result | median | runs |\n|---|---|---|")
    print(
        f"| each trial reads and tokenises the files (before) | {med_own:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in own)} |"
    )
    print(
        f"| the driver's corpus from Ray's object store (now) | {med_shared:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in shared)} |"
    )
    print(
        f"\nSaved per trial start (and per restart after a pause or a requeue): "
        f"{med_own - med_shared:.2f} s ({med_own / med_shared:.2f}x); the driver reads the "
        f"corpus once, in {driver_s:.2f} s, before Ray starts."
    )


if __name__ == "__main__":
    main()
