"""What a scheduler decision costs as the trials grow: the journal against a whole-file rewrite.

    .venv/bin/python bench/state_writes.py [--trials 100 1000 5000] [--repeats 3]

Drives `PromotingASHA` (no Ray, no Tune: its decisions only) with N trials arriving at rung 10
of max_t 90 (rf 3: a third go on, the rest pause), in two ways side by side, each in a fresh
folder:
- `journal`: as seg_tune runs, one line appended per change and the snapshot at most every 30 s
  (`seg_tune.sweep.journal`);
- `rewrite`: the whole state written atomically after every decision, as before issue 14's
  journal (the snapshot forced at every record).
For each N it reports the median and p99 time of a decision (`on_trial_result`, its state
write included) over the last tenth of arrivals, and the bytes written per decision there (the
journal's line; for `rewrite`, the whole file besides), medians over `--repeats` runs. Flat in N is the target; a rewrite grows with the state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seg_tune.sweep import journal  # noqa: E402
from seg_tune.sweep.asha import PromotingASHA  # noqa: E402


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.status = trial_id, "RUNNING"


def one_run(trials: int, how: str, folder: Path) -> dict:
    state = folder / "scheduler_state.json"
    s = PromotingASHA(
        state_path=state, max_t=90, grace_period=10, reduction_factor=3, max_concurrent=2
    )
    s.set_search_properties("bf", "max")
    if how == "rewrite":
        s._journal.snapshot_every_s = 0.0  # a snapshot with every record: the old behaviour
    times = []
    written = []
    log = journal.journal_path(state)
    for i in range(trials):
        logged = _size(log)
        start = time.perf_counter()
        s.on_trial_result(None, _Trial(f"t{i:05d}"), {"step": 10, "bf": (i * 7919 % 997) / 997})
        times.append(time.perf_counter() - start)
        written.append(_size(log) - logged + (_size(state) if how == "rewrite" else 0))
    tail = sorted(times[-max(1, trials // 10) :])
    return {
        "median_ms": 1000 * statistics.median(tail),
        "p99_ms": 1000 * tail[min(len(tail) - 1, int(0.99 * len(tail)))],
        "bytes_per_decision": statistics.median(written[-max(1, trials // 10) :]),
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(
        "| trials | journal: decision median (p99) | bytes written | rewrite: decision median "
        "(p99) | bytes written | rewrite / journal |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.trials:
        rows: dict[str, list[dict]] = {"journal": [], "rewrite": []}
        for _ in range(args.repeats):
            for how in ("journal", "rewrite"):  # side by side, alternating
                with tempfile.TemporaryDirectory() as tmp:
                    rows[how].append(one_run(n, how, Path(tmp)))
        med = {
            how: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for how, rs in rows.items()
        }
        j, r = med["journal"], med["rewrite"]
        print(
            f"| {n:,} | {j['median_ms']:.2f} ms ({j['p99_ms']:.2f}) | {j['bytes_per_decision']:,.0f} "
            f"| {r['median_ms']:.2f} ms ({r['p99_ms']:.2f}) | {r['bytes_per_decision']:,.0f} "
            f"| {r['median_ms'] / j['median_ms']:.1f}x |"
        )


if __name__ == "__main__":
    main()
