"""What an evaluation's segmentation costs, and how noisy its objective is, by subset size.

    .venv/bin/python bench/eval_cost.py MODEL_DIR [--data ../shared/data/childes-en/dev.txt]
        [--sizes 250 500 1000 2000] [--repeats 3] [--threads 1]

For each size n (the first n validation utterances, as `training.segment_utterances` takes them):
the wall time of `evaluate_segmentation` (what the training loop calls: cues, 18 fair rows with
cross-fitted cutoffs, the bootstrap interval), median of --repeats, and the objective with its
95% bootstrap half-width. Run with the threads a trial has (1 in the 2-CPU sweeps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/childes-en/dev.txt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seg_tune.corpus import load_tagged
    from seg_tune.cues import Window
    from seg_tune.metrics import ci_keys
    from seg_tune.segment import evaluate_segmentation

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(str(args.model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    utterances = load_tagged(args.data)
    window = Window.for_model(model, min(128, model.config.n_positions), batch_size=64)
    low, high = ci_keys("seg_boundary_noedge_fscore")
    print(f"model {args.model}, {sum(p.numel() for p in model.parameters()):,} parameters")
    print("| utterances | phonemes | wall (median) | boundary F | 95% half-width |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        subset = utterances[:n]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = evaluate_segmentation(model, tokenizer, subset, window=window)
            times.append(time.perf_counter() - t0)
        print(
            f"| {n:,} | {sum(len(u) for u in subset):,} | {statistics.median(times):.2f} s "
            f"| {result['seg_boundary_noedge_fscore']:.3f} "
            f"| ±{(result[high] - result[low]) / 2:.3f} |"
        )


if __name__ == "__main__":
    main()
