"""Benchmark: a small real study on this machine, its wall time and how idle its cluster stood.

Runs `python -m seg_tune.run STUDY.yaml` (default: search_spaces/study_smoke.yaml, or the same
study with real English CHILDES as a third corpus with --childes) into a temporary folder, then
reads every trial's result.json of every cell (the search's trials and the final phase's) and
measures:
- the wall time of the study command;
- the busy slot-time: per result, the interval [timestamp - time_this_iter_s, timestamp] its
  trial spent computing it; at each moment at most `slots` (the cluster's CPUs for one-CPU
  trials) count;
- the idle fraction: 1 - busy slot-time / (slots x the span from the first trial's start to the
  last trial's end). Trial start-up (process, imports, corpus, checkpoint restore) and the
  scoring of the final phase count as idle: they hold no training slot.

    python bench/study_idle.py                # the smoke study, 2 slots
    python bench/study_idle.py --childes      # plus childes-en (the first 2,000 utterances)

It prints a Markdown snippet (with the command line) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHILDES = REPO.parent / "shared" / "data" / "childes-en" / "train.txt"


def busy_intervals(root: Path) -> dict[str, list[tuple[float, float]]]:
    """Per trial (cell/trial id), the intervals its results were computed in."""
    out: dict[str, list[tuple[float, float]]] = {}
    for result in sorted(root.glob("*/tune/trial_*/result.json")) + sorted(
        root.glob("*/final/tune/trial_*/result.json")
    ):
        key = f"{result.parents[2].name}/{result.parent.name}"
        for line in result.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                end = float(row["timestamp"])
                out.setdefault(key, []).append((end - float(row.get("time_this_iter_s") or 0), end))
    return out


def idle_fraction(intervals: dict[str, list[tuple[float, float]]], slots: int) -> dict[str, float]:
    events = sorted(
        [(a, 1) for spans in intervals.values() for a, _ in spans]
        + [(b, -1) for spans in intervals.values() for _, b in spans]
    )
    if not events:
        return {"span_s": 0.0, "busy_slot_s": 0.0, "idle": 1.0}
    busy, running, last = 0.0, 0, events[0][0]
    for t, delta in events:
        busy += min(running, slots) * (t - last)
        running, last = running + delta, t
    span = events[-1][0] - events[0][0]
    return {"span_s": span, "busy_slot_s": busy, "idle": 1 - busy / (slots * span)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REPO / "search_spaces" / "study_smoke.yaml")
    parser.add_argument("--childes", action="store_true", help="add childes-en as a corpus")
    parser.add_argument("--slots", type=int, default=2, help="training slots (CPUs)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="study_idle_"))
    study = args.study
    if args.childes:
        doc = yaml.safe_load(args.study.read_text())
        doc["study"]["corpora"]["childes-en"] = {
            "train": {"kind": "tagged", "path": str(CHILDES), "max_utterances": 2000},
            "test_fraction": 0.1,
        }
        study = tmp / "study.yaml"
        study.write_text(yaml.safe_dump(doc, sort_keys=False))
    name = yaml.safe_load(study.read_text())["study"]["name"]
    cmd = [sys.executable, "-m", "seg_tune.run", str(study), "--storage", str(tmp / "results")]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    root = tmp / "results" / name
    intervals = busy_intervals(root)
    measured = idle_fraction(intervals, args.slots)
    cells = len(json.loads((root / "study.json").read_text())["cells"])
    print(f"Command: `python bench/study_idle.py {shlex.join(sys.argv[1:])}`")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| cells / trials (search and final) | {cells} / {len(intervals)} |")
    print(f"| wall time of the study command | {wall:.0f} s |")
    print(f"| first trial start -> last trial end | {measured['span_s']:.0f} s |")
    print(f"| busy slot-time ({args.slots} slots) | {measured['busy_slot_s']:.0f} s |")
    print(f"| idle fraction over that span | {measured['idle']:.0%} |")
    print(f"\n(study folder: {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
