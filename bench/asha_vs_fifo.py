"""ASHA + Optuna against FIFO random search at equal num_samples, on childes-en.

    .venv/bin/python bench/asha_vs_fifo.py [--samples 27] [--max-steps 540] [--seeds 0 1]
        [--reduction-factor 3] [--grace STEPS] [--startup-trials N] [--only asha|fifo]
        [--data ../shared/data/childes-en] [--log runs.jsonl] [--keep DIR]
        [--concurrent 2] [--gpus 0] [--asha-searcher optuna|random] [--promotion pause|continue]
        [--processes reused|new]
    .venv/bin/python bench/asha_vs_fifo.py --report runs.jsonl
    .venv/bin/python bench/asha_vs_fifo.py --idle EXPERIMENT_FOLDER [--concurrent 2]

For each seed, runs `python -m seg_tune.run` on the same space (train.txt for training, the first
2,000 utterances of dev.txt for validation and segmentation): with ASHA (reduction factor rf,
grace max/rf^2 unless given, so rungs at grace, grace*rf and the budget) and the Optuna TPE
searcher, and with FIFO and the random searcher, both seeded with that seed. FIFO's runs do not
depend on the ASHA options, so ASHA variants can be run alone (`--only asha`) against the same
FIFO runs. Reports, per run and as medians over seeds, the trial-steps used, the trials run to the
end of the budget, the best objective (validation loss) reached, the best boundary F, and wall
time; the spread of FIFO's best over seeds is the run-to-run noise. Each finished run is appended
to --log as a JSON line (a long benchmark cut short keeps what it measured); `--report` prints the
tables from such a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def space(
    data: Path,
    samples: int,
    max_steps: int,
    asha: bool,
    seed: int,
    rf: int = 3,
    grace: int = 0,
    startup: int | None = None,
    concurrent: int = 2,
    gpus: float = 0,
    asha_searcher: str = "optuna",
    promotion: str = "pause",
    reuse: bool = True,
) -> dict:
    grace = grace or math.ceil(max_steps / rf**2)  # three rungs: grace, grace*rf, max_steps
    return {
        "experiment": {
            "name": f"asha_rf{rf}_seed{seed}" if asha else f"fifo_seed{seed}",
            "metric": "valid_loss",
            "mode": "min",
            "num_samples": samples,
            "max_concurrent": concurrent,
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
            "eval_every_steps": grace if asha else max_steps // 9,
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
            {
                "type": "asha",
                "grace_period_steps": grace,
                "reduction_factor": rf,
                "promotion": promotion,
            }
            if asha
            else {"type": "fifo"}
        ),
        "searcher": (
            {"type": "optuna", "seed": seed, "startup_trials": startup}
            if asha and asha_searcher == "optuna"
            else {"type": "random", "seed": seed}
        ),
        "resources": {
            "workers": 1,
            "cpus_per_worker": 1,
            "gpus_per_worker": gpus,
            "reuse_processes": reuse,
        },
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
    exp = storage / doc["experiment"]["name"]
    summary["idle"] = {
        **idle_slot_time(exp, doc["experiment"]["max_concurrent"]),
        **handover(exp),
    }
    return summary, time.monotonic() - t0


def busy_intervals(exp: Path) -> list[tuple[float, float, str]]:
    """(start, end, trial) of every stretch a trial process worked: each result covers
    [timestamp - time_this_iter_s, timestamp] (the first result of a process includes its
    start-up: loading the corpus, restoring the checkpoint)."""
    from seg_tune.sweep.summary import results_by_step

    out = []
    for folder in sorted((exp / "tune").glob("trial_*")):
        for r in results_by_step(folder / "result.json"):
            if "timestamp" in r and "time_this_iter_s" in r:
                end = float(r["timestamp"])
                out.append((end - float(r["time_this_iter_s"]), end, folder.name))
    return out


def idle_slot_time(exp: Path, slots: int) -> dict:
    """Slot-seconds no trial used, from the first trial's start to the last one's end, and in
    the end game: from the moment the last trial started (the searcher had no samples left)."""
    spans = busy_intervals(exp)
    if not spans:
        return {}
    first_start = {}
    for start, _, trial in spans:
        first_start[trial] = min(start, first_start.get(trial, start))
    t0, t1 = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    last_new = max(first_start.values())
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    idle = idle_end = 0.0
    busy, prev = 0, t0
    for t, delta in events:
        free = max(0, slots - busy) * (t - prev)
        idle += free
        idle_end += max(0, slots - busy) * max(0.0, t - max(prev, last_new))
        busy, prev = busy + delta, t
    return {
        "idle_slot_s": round(idle, 1),
        "idle_end_game_slot_s": round(idle_end, 1),
        "end_game_s": round(t1 - last_new, 1),
    }


def attempts(exp: Path) -> list[tuple[float, float, bool]]:
    """(first step began, last result, resumed) of every attempt of every trial: an attempt's
    first result carries `first_step_at` (seg_tune.metrics.FIRST_STEP_AT), every result its
    `reported_at` (REPORTED_AT; results written before it existed: Tune's whole-second
    `timestamp`), and resumed attempts are those after a trial's first (a promotion, a fill or
    a retry)."""
    from seg_tune.metrics import FIRST_STEP_AT, REPORTED_AT
    from seg_tune.sweep.summary import results_by_step

    out = []
    for folder in sorted((exp / "tune").glob("trial_*")):
        runs: list[list[dict]] = []
        for r in results_by_step(folder / "result.json"):
            if FIRST_STEP_AT in r or not runs:
                runs.append([])
            runs[-1].append(r)
        for i, rs in enumerate(runs):
            if FIRST_STEP_AT in rs[0]:
                end = rs[-1].get(REPORTED_AT, rs[-1]["timestamp"])
                out.append((float(rs[0][FIRST_STEP_AT]), float(end), i > 0))
    return out


def handover(exp: Path) -> dict:
    """Seconds from a slot's release (the last attempt to end before this one began: a pause,
    an end or a stop) to an attempt's first step, median and max, for resumed attempts (after
    a promotion) and for new trials; the sweep's first attempts (nothing ended yet) are left
    out. Start-up of a new process, imports, loading and checkpoint restore are all in it."""
    spans = attempts(exp)
    ends = sorted(end for _, end, _ in spans)
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for start, _, resumed in spans:
        before = [e for e in ends if e <= start]
        if before:
            gaps[resumed].append(start - before[-1])
    out = {}
    for resumed, name in ((True, "resume"), (False, "new")):
        if gaps[resumed]:
            out[f"handover_{name}_median_s"] = round(statistics.median(gaps[resumed]), 2)
            out[f"handover_{name}_max_s"] = round(max(gaps[resumed]), 2)
    return out


def measure(summary: dict, wall: float, search: str, seed: int) -> dict:
    trials = summary["trials"]
    return {
        "search": search,
        "seed": seed,
        "trials": len(trials),
        "trial_steps": sum(t["steps_trained"] for t in trials),
        "full_length": sum(not t["stopped_early"] for t in trials),
        "best_valid_loss": min(
            t["metrics"]["valid_loss"] for t in trials if "valid_loss" in t["metrics"]
        ),
        "best_bf": max(t["metrics"].get("seg_boundary_noedge_fscore", 0) for t in trials),
        "stopped_early": sum(t["stopped_early"] for t in trials),
        # how far the trials got: {steps trained: trials}
        "steps_histogram": dict(sorted(Counter(t["steps_trained"] for t in trials).items())),
        "wall_s": wall,
        **summary.get("idle", {}),
    }


def setting(r: dict) -> str:
    """Runs are compared within one setting: samples, budget, trials at a time, GPU share."""
    return (
        f"{r.get('samples', 27)} samples, {r.get('max_steps', 540)} steps, "
        f"{r.get('concurrent', 2)} trials at a time, {r.get('gpus_per_trial', 0):g} GPU per trial"
    )


def markdown(rows: list[dict]) -> str:
    """The BENCHMARKS.md section: every run, then medians over seeds per search and setting."""
    out = [
        "| setting | search | seed | trial-steps | trials run to the end | best valid_loss "
        "| best boundary_noedge F | wall | idle slot-time (in the end game) "
        "| slot release to first step, median (max): resumed / new trials |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        idle = (
            f"{r['idle_slot_s'] / 60:.1f} min ({r['idle_end_game_slot_s'] / 60:.1f} min"
            f" of {r['end_game_s'] / 60:.1f})"
            if "idle_slot_s" in r
            else "-"
        )
        hand = " / ".join(
            f"{r[f'handover_{k}_median_s']:.1f} s ({r[f'handover_{k}_max_s']:.1f})"
            if f"handover_{k}_median_s" in r
            else "-"
            for k in ("resume", "new")
        )
        out.append(
            f"| {setting(r)} | {r['search']} | {r['seed']} | {r['trial_steps']:,} "
            f"| {r.get('full_length', r['trials'] - r['stopped_early'])} "
            f"| {r['best_valid_loss']:.4f} | {r['best_bf']:.3f} | {r['wall_s'] / 60:.1f} min "
            f"| {idle} | {hand} |"
        )
    out += [
        "",
        "| setting | search | seeds | median trial-steps | FIFO's / this "
        "| median best valid_loss | median wall | FIFO's wall / this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for where in dict.fromkeys(setting(r) for r in rows):
        group = [r for r in rows if setting(r) == where]
        fifo = [r["trial_steps"] for r in group if r["search"].startswith("FIFO")]
        # FIFO never stops a trial: without a FIFO run, its trial-steps are samples x budget.
        fifo_steps = (
            statistics.median(fifo)
            if fifo
            else group[0].get("samples", 27) * group[0].get("max_steps", 540)
        )
        for name in dict.fromkeys(r["search"] for r in group):
            rs = [r for r in group if r["search"] == name]
            steps = statistics.median(r["trial_steps"] for r in rs)
            best = statistics.median(r["best_valid_loss"] for r in rs)
            seeds = ", ".join(str(r["seed"]) for r in rs)
            wall = statistics.median(r["wall_s"] for r in rs)
            # against FIFO with the same trial processes (rows without the key had a new
            # process per attempt: the only way before `resources.reuse_processes`)
            fifo_wall = [
                r["wall_s"]
                for r in group
                if r["search"].startswith("FIFO")
                and r.get("processes", "new") == rs[0].get("processes", "new")
            ]
            ratio = f"{statistics.median(fifo_wall) / wall:.2f}x" if fifo_wall else "-"
            out.append(
                f"| {where} | {name} | {seeds} | {steps:,.0f} | {fifo_steps / steps:.2f}x "
                f"| {best:.4f} | {wall / 60:.1f} min | {ratio} |"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=27)
    parser.add_argument("--max-steps", type=int, default=540)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's")
    parser.add_argument("--grace", type=int, default=0, help="ASHA's; default max/rf^2")
    parser.add_argument(
        "--startup-trials", type=int, help="TPE's random start (default: Optuna's, 10)"
    )
    parser.add_argument("--only", choices=["asha", "fifo"], help="run one of the two searches")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time")
    parser.add_argument("--gpus", type=float, default=0, help="GPU per trial (e.g. 0.125)")
    parser.add_argument(
        "--asha-searcher",
        choices=["optuna", "random"],
        default="optuna",
        help="ASHA's searcher (random: ASHA alone, without TPE's improving samples)",
    )
    parser.add_argument(
        "--promotion",
        choices=["pause", "continue"],
        default="pause",
        help="ASHA's promotion (pause: seg_tune's default; continue: Ray's stop-or-continue)",
    )
    parser.add_argument(
        "--processes",
        choices=["reused", "new"],
        default="reused",
        help="trial processes (reused: seg_tune's default; new: one per attempt, as before)",
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/childes-en")
    parser.add_argument("--log", type=Path, help="append each finished run here (JSON lines)")
    parser.add_argument("--keep", type=Path, help="keep the experiments here (default: a temp dir)")
    parser.add_argument(
        "--report", type=Path, help="run nothing: print the section from a --log file"
    )
    parser.add_argument(
        "--idle",
        type=Path,
        metavar="EXPERIMENT",
        help="run nothing: print an experiment folder's idle slot-time (--concurrent slots)",
    )
    args = parser.parse_args()
    if args.idle:
        print(json.dumps(idle_slot_time(args.idle, args.concurrent)))
        return
    if args.report:
        rows = [json.loads(line) for line in args.report.read_text().splitlines() if line]
        print(markdown(rows))
        return
    rows = []
    searches = [s for s in ("asha", "fifo") if args.only in (None, s)]
    rf = args.reduction_factor
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        storage = args.keep.resolve() if args.keep else Path(tmp)
        for seed in args.seeds:
            for search in searches:
                asha = search == "asha"
                doc = space(
                    args.data.resolve(),
                    args.samples,
                    args.max_steps,
                    asha,
                    seed,
                    rf,
                    args.grace,
                    args.startup_trials,
                    args.concurrent,
                    args.gpus,
                    args.asha_searcher,
                    args.promotion,
                    args.processes == "reused",
                )
                summary, wall = run(doc, storage)
                searcher = (
                    f"Optuna TPE (startup {args.startup_trials or 10})"
                    if args.asha_searcher == "optuna"
                    else "random"
                )
                name = (
                    f"ASHA (rf {rf}, grace {doc['scheduler']['grace_period_steps']}"
                    f", {args.promotion}) + {searcher}"
                    if asha
                    else "FIFO + random"
                )
                rows.append(
                    {
                        **measure(summary, wall, f"{name}, {args.processes} processes", seed),
                        "samples": args.samples,
                        "max_steps": args.max_steps,
                        "concurrent": args.concurrent,
                        "gpus_per_trial": args.gpus,
                        "processes": args.processes,
                        **({"promotion": args.promotion} if asha else {}),
                    }
                )
                if args.log:
                    with args.log.open("a") as f:
                        f.write(json.dumps(rows[-1]) + "\n")
    print(
        f"Command: `.venv/bin/python bench/asha_vs_fifo.py {' '.join(sys.argv[1:])}`;"
        " childes-en train.txt, 2,000 dev utterances for validation; "
        f"{args.concurrent} trials at a time, {args.gpus:g} GPU each, on {os.cpu_count()} CPU "
        "cores; objective valid_loss (min).\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
