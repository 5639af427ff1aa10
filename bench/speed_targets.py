"""Speed targets that used to be timed asserts in the tests (issue 15: a test checks what is
computed, a benchmark how fast): each is timed here, median of --repeats runs, beside its target.

- TP baseline, forward/relative, on childes-en dev (14,000 utterances): target < 10 s (tests/
  test_baseline.py; catches quadratic work).
- Scoring random boundaries on childes-en dev with `score_starts`: target < 3 s (tests/
  test_score.py; catches per-word quadratic work).
- `write_report` for the 50 trials of tests/test_report.py `fifty_trials()`: target < 10 s on 2
  shared cores (under 5 s unloaded).
- `load_space(search_spaces/wandb_sweep.yaml)` in a fresh process, after its imports, and
  `load_space(search_spaces/base.yaml)` warm: no target ("well under a second",
  seg_tune/sweep/load.py).

    .venv/bin/python bench/speed_targets.py [--repeats 3]

Prints a Markdown section for BENCHMARKS.md; exits 1 if a figure misses its target.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the 50 trials of test_report.py
DATA = REPO.parent / "shared" / "data" / "childes-en"
SPACES = REPO / "search_spaces"


def median_s(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tp_baseline(repeats: int) -> float | None:
    from seg_tune.baseline import tp_scores
    from seg_tune.corpus import load_tagged

    if not DATA.is_dir():
        return None
    corpus = load_tagged(DATA / "dev.txt")
    return median_s(lambda: tp_scores(corpus, "forward", "relative"), repeats)


def scoring(repeats: int) -> float | None:
    import numpy as np

    from seg_tune.corpus import load_tagged
    from seg_tune.score import score_starts

    if not DATA.is_dir():
        return None
    gold = load_tagged(DATA / "dev.txt")
    rng = np.random.default_rng(0)
    flags = [rng.random(len(u)) < 0.3 for u in gold]
    return median_s(lambda: score_starts(gold, flags), repeats)


def report_of_fifty(repeats: int) -> float:
    from test_report import fifty_trials, make_experiment

    from seg_tune.report import write_report

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            exp = make_experiment(Path(tmp) / str(i), trials=fifty_trials(), best_id="t07")
            start = time.perf_counter()
            write_report(exp)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_space_cold() -> float:
    code = (
        "import time\n"
        "from seg_tune.sweep.load import load_space\n"
        "t = time.perf_counter()\n"
        f"load_space({str(SPACES / 'wandb_sweep.yaml')!r})\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return float(out.stdout.split()[-1])


def load_space_warm(repeats: int) -> float:
    from seg_tune.sweep.load import load_space

    load_space(SPACES / "base.yaml")
    return median_s(lambda: load_space(SPACES / "base.yaml"), repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    rows: list[tuple[str, float | None, float | None]] = [
        ("TP baseline forward/relative, childes-en dev", tp_baseline(args.repeats), 10.0),
        ("score_starts, random boundaries, childes-en dev", scoring(args.repeats), 3.0),
        ("write_report, 50 trials", report_of_fifty(args.repeats), 10.0),
        ("load_space(wandb_sweep.yaml), fresh process", load_space_cold(), None),
        ("load_space(base.yaml), warm", load_space_warm(args.repeats), None),
    ]
    command = shlex.join([".venv/bin/python", "bench/speed_targets.py", *(argv or sys.argv[1:])])
    print("## Speed targets moved out of the tests (bench/speed_targets.py)\n")
    print("```bash\n" + command + "\n```\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end; median "
        f"of {args.repeats} (the fresh-process load: one run)\n"
    )
    print("| what | seconds | target | within |")
    print("|---|---|---|---|")
    missed = False
    for what, seconds, target in rows:
        if seconds is None:
            print(f"| {what} | skipped (no {DATA}) | < {target:g} s | – |")
            continue
        ok = target is None or seconds < target
        missed |= not ok
        shown = f"< {target:g} s" if target is not None else "–"
        within = "–" if target is None else "yes" if ok else "NO"
        print(f"| {what} | {seconds:.3f} | {shown} | {within} |")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
