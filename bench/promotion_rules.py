"""How many of 27 trials pass ASHA's first rung (reduction factor 3) under three promotion rules.

    .venv/bin/python bench/promotion_rules.py [--trials 27] [--rf 3] [--repeats 200]

Trials arrive one at a time with a score at the rung (higher is better): i.i.d. uniform, or
improving as a model-based searcher's samples do (trial i scores i/n plus uniform noise of width
0.3 or 0.1). The rules:
- ray: Ray's ASHAScheduler (stop-or-continue): a trial goes on if its score is at least the
  rung's (1 - 1/rf) quantile of the scores recorded so far (the first trial always goes on);
- paper: Li et al. 2020, algorithm 2: after each arrival, every trial in the rung's top
  floor(n/rf) not yet promoted is promoted;
- quota: seg_tune's PromotingASHA: the same, but at most floor(n/rf) promotions in all.
Prints the mean number promoted over the repeats (nominal: trials / rf). No Ray, no training.
"""

from __future__ import annotations

import argparse
import random
import statistics

import numpy as np


def promoted(scores: list[float], rf: float, rule: str) -> int:
    recorded: list[float] = []
    done: set[int] = set()
    passed = 0
    for i, score in enumerate(scores):
        if rule == "ray":
            cutoff = np.nanpercentile(recorded, (1 - 1 / rf) * 100) if recorded else -np.inf
            passed += bool(score >= cutoff)
            recorded.append(score)
            continue
        recorded.append(score)
        k = int(len(recorded) / rf + 1e-9)
        top = sorted(range(i + 1), key=lambda j: recorded[j], reverse=True)[:k]
        waiting = [j for j in top if j not in done]
        if rule == "quota":
            waiting = waiting[: max(0, k - len(done))]
        done.update(waiting)
    return passed if rule == "ray" else len(done)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--rf", type=float, default=3)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    n = args.trials
    arrivals = {
        "i.i.d.": lambda rng, i: rng.random(),
        "improving (noise 0.3)": lambda rng, i: i / n + 0.3 * rng.random(),
        "improving (noise 0.1)": lambda rng, i: i / n + 0.1 * rng.random(),
    }
    print(f"| arrivals | ray | paper | quota |  (of {n} trials, rf {args.rf:g})")
    print("|---|---|---|---|")
    for name, draw in arrivals.items():
        means = []
        for rule in ("ray", "paper", "quota"):
            counts = []
            for seed in range(args.repeats):
                rng = random.Random(seed)
                counts.append(promoted([draw(rng, i) for i in range(n)], args.rf, rule))
            means.append(statistics.mean(counts))
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + " |")


if __name__ == "__main__":
    main()
