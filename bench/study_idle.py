"""Benchmark: a small real study on this machine, its wall time and how idle its cluster stood.

Runs `python -m seg_tune.run STUDY.yaml` (default: search_spaces/study_smoke.yaml: two synthetic
languages and real English CHILDES at two sizes, 6 cells) into a temporary folder, then reads
every trial's result.json of every cell (the search's trials and the final phase's) and the
study's study.json (each cell driver's start), and measures:
- the wall time of the study command;
- the busy slot-time: per result, the interval [timestamp - time_this_iter_s, timestamp] its
  trial spent computing it (the first includes the trial's set-up inside its process: corpus,
  model, checkpoint restore); at each moment at most `slots` (the cluster's CPUs for one-CPU
  trials) count;
- the idle fraction: 1 - busy slot-time / (slots x the span from the first trial's start to the
  last trial's end);
- the idle fraction while cells waited: the same, counted only while some cell of the study had
  not started yet (from the first cell's start to the last cell's start): slot-time that a
  waiting cell could have used. What remains idle outside it (the last cells' final phases and
  start-ups) no waiting cell could have filled.

    python bench/study_idle.py                # the smoke study, 2 slots
    python bench/study_idle.py --cells 3      # with 3 cell drivers at once (file: 2)

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


def _timeline(intervals: dict[str, list[tuple[float, float]]]) -> list[tuple[float, int]]:
    """(time, trials computing from then on), in time order."""
    events = sorted(
        [(a, 1) for spans in intervals.values() for a, _ in spans]
        + [(b, -1) for spans in intervals.values() for _, b in spans]
    )
    out, running = [], 0
    for t, delta in events:
        running += delta
        out.append((t, running))
    return out


def idle_fraction(
    intervals: dict[str, list[tuple[float, float]]],
    slots: int,
    window: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Busy and idle slot-time over `window` (default: the first trial's start to the last
    trial's end)."""
    timeline = _timeline(intervals)
    if not timeline:
        return {"span_s": 0.0, "busy_slot_s": 0.0, "idle": 1.0}
    lo, hi = window or (timeline[0][0], timeline[-1][0])
    busy, running, last = 0.0, 0, lo
    for t, now in timeline:
        if t > lo:
            busy += min(running, slots) * (min(t, hi) - last)
            last = min(t, hi)
        running = now
        if t >= hi:
            break
    if last < hi:
        busy += min(running, slots) * (hi - last)
    span = hi - lo
    return {"span_s": span, "busy_slot_s": busy, "idle": 1 - busy / (slots * span) if span else 0.0}


def cell_starts(root: Path) -> list[float]:
    """Each cell driver's (last) start, from study.json, as epoch seconds."""
    cells = json.loads((root / "study.json").read_text(encoding="utf-8"))["cells"]
    starts = []
    for cell in cells.values():
        stamp = cell.get("started_at")
        if stamp:
            day, _, ms = stamp.partition(".")
            starts.append(
                time.mktime(time.strptime(day, "%Y-%m-%dT%H:%M:%S")) + int(ms or 0) / 1000
            )
    return sorted(starts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REPO / "search_spaces" / "study_smoke.yaml")
    parser.add_argument("--slots", type=int, default=2, help="training slots (CPUs)")
    parser.add_argument(
        "--cells", type=int, help="study.max_concurrent_cells (default: the file's)"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="study_idle_"))
    study = args.study
    if args.cells is not None:
        doc = yaml.safe_load(study.read_text(encoding="utf-8"))
        doc["study"]["max_concurrent_cells"] = args.cells
        study = tmp / study.name
        study.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
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
    starts = cell_starts(root)
    waiting = idle_fraction(intervals, args.slots, (starts[0], starts[-1]))
    print(f"Command: `python bench/study_idle.py {shlex.join(sys.argv[1:])}`")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| cells / trials (search and final) | {len(starts)} / {len(intervals)} |")
    print(f"| wall time of the study command | {wall:.0f} s |")
    print(f"| first trial start -> last trial end | {measured['span_s']:.0f} s |")
    print(f"| busy slot-time ({args.slots} slots) | {measured['busy_slot_s']:.0f} s |")
    print(f"| idle fraction over that span | {measured['idle']:.0%} |")
    print(f"| span while cells waited (first to last cell start) | {waiting['span_s']:.0f} s |")
    print(f"| idle fraction while cells waited | {waiting['idle']:.0%} |")
    print(f"\n(study folder: {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
