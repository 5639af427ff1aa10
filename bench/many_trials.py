"""Many short trials: where the time and memory of a large sweep go (issue 14, part 2).

    .venv/bin/python bench/many_trials.py [--trials 300] [--concurrent 2] [--max-steps 27]
        [--searcher optuna|random] [--address ADDR | --slurm-nodes 3]
        [--data ../shared/data/childes-en] [--log bench/many_trials_runs.jsonl] [--keep DIR]
    .venv/bin/python bench/many_trials.py --report bench/many_trials_runs.jsonl

Runs `python -m seg_tune.run` on a sweep of `--trials` tiny trials (one layer, 32 wide, a
2,000-utterance slice of train.txt, 200 of dev.txt) with ASHA pausing (rungs at max/9, max/3
and max), `--concurrent` at a time, on a local Ray cluster, the one at `--address`, or, with
`--slurm-nodes N`, in a head job (`sbatch --nodes=N cluster/ray_head.wilkes3`, one CPU per node)
on a test SLURM of N nodes on this machine that the bench starts and stops (`.ci/slurm.sh`, in
its own folder and ports; run as root). The driver runs with a hook (a sitecustomize.py on its PYTHONPATH, the
driver only) that times seg_tune's scheduler and callbacks and Tune's own experiment-state
writes and controller steps, each call with the number of trials added so far; this script
samples the driver's RSS, the trials started and the state files' sizes twice a second.
It reports:
- wall time against the ideal schedule: the trials' busy time (from each attempt's first step
  to its last result: start-up and restores are overhead) divided by the slots;
- the driver's RSS against trials started (MiB at each tenth, and the slope over the second
  half, MiB per 100 trials);
- the final size of Tune's experiment state, scheduler_state.json (the snapshot), its journal
  and summary.json;
- per timed function: calls, total seconds, and the median and 99th-percentile time of a call
  in the first and the last quarter of trials added (flat, or growing with the sweep).
Each run is appended to --log as a JSON line; `--report` prints the tables from such a file.
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
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from asha_vs_fifo import attempts  # noqa: E402  (bench/ is not a package)

from seg_tune.sweep.journal import journal_path  # noqa: E402

# Timed in the driver: (module, class, method, label). seg_tune's own code first, then Tune's.
TIMED = [
    ("seg_tune.sweep.asha", "PromotingASHA", "on_trial_result", "ASHA decision (result)"),
    ("seg_tune.sweep.asha", "PromotingASHA", "choose_trial_to_run", "ASHA choose_trial_to_run"),
    ("seg_tune.sweep.asha", "PromotingASHA", "on_trial_complete", "ASHA on_trial_complete"),
    ("seg_tune.sweep.asha", "_SavedState", "_save", "scheduler state write (journal + snapshot)"),
    ("seg_tune.sweep.journal", "Journal", "snapshot", "scheduler_state.json snapshot"),
    ("seg_tune.sweep.asha", "PauseAwareLimiter", "suggest", "searcher suggest (seg_tune + Optuna)"),
    ("seg_tune.sweep.tracking", "KeepTrialLogs", "on_trial_start", "KeepTrialLogs.on_trial_start"),
    (
        "seg_tune.sweep.tracking",
        "TrialWarnings",
        "on_trial_result",
        "TrialWarnings.on_trial_result",
    ),
    (
        "seg_tune.sweep.tracking",
        "ResumeFromAKeptCheckpoint",
        "on_trial_start",
        "ResumeFromAKeptCheckpoint.on_trial_start",
    ),
    ("ray.tune.execution.tune_controller", "TuneController", "save_to_dir", "Tune state write"),
    ("ray.tune.execution.tune_controller", "TuneController", "step", "Tune controller step"),
]
SEG_TUNE_LABELS = [label for module, *_, label in TIMED if module.startswith("seg_tune")]

HOOK = """
import atexit, importlib.abc, importlib.util, json, os, sys, time

OUT = os.environ.get("SEG_TUNE_BENCH_CALLS")
TIMED = json.loads(os.environ.get("SEG_TUNE_BENCH_TIMED", "[]"))
T0 = time.perf_counter()
CALLS = []  # (label, started at (s since the driver began), seconds, trials added)
ADDED = [0]


def _flush():
    with open(OUT, "w") as fh:
        json.dump({"t_end": time.perf_counter() - T0, "calls": CALLS}, fh)


def _wrap(cls, method, label):
    real = getattr(cls, method, None)
    if real is None or getattr(real, "_bench", False):
        return
    def timed(self, *args, **kwargs):
        if label == "ASHA on_trial_add":
            ADDED[0] += 1
        start = time.perf_counter()
        try:
            return real(self, *args, **kwargs)
        finally:
            CALLS.append((label, round(start - T0, 4), time.perf_counter() - start, ADDED[0]))
    timed._bench = True
    setattr(cls, method, timed)


class _Timer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        wanted = [t for t in TIMED if t[0] == name]
        if not wanted:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            for _, cls, method, label in wanted:
                if hasattr(module, cls):
                    _wrap(getattr(module, cls), method, label)
            if name == "seg_tune.sweep.asha":
                _wrap(module.PromotingASHA, "on_trial_add", "ASHA on_trial_add")

        spec.loader.exec_module = exec_module
        return spec


if OUT and "seg_tune.run" in " ".join(getattr(sys, "orig_argv", sys.argv)):
    sys.meta_path.insert(0, _Timer())
    atexit.register(_flush)
"""


def space(data: Path, trials: int, max_steps: int, concurrent: int, searcher: str) -> dict:
    grace = max(1, max_steps // 9)  # rungs at grace, grace * 3 and max_steps
    return {
        "experiment": {
            "name": f"many_{trials}",
            "metric": "valid_loss",
            "mode": "min",
            "num_samples": trials,
            "max_concurrent": concurrent,
            "max_steps": max_steps,
        },
        "data": {
            "train": {"kind": "tagged", "path": str(data / "train.txt"), "max_utterances": 2000},
            "valid": {"kind": "tagged", "path": str(data / "dev.txt"), "max_utterances": 200},
        },
        "model": {"preset": "400k", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32},
        "training": {
            "batch_size": 8,
            "block_size": 32,
            "warmup_steps": 1,
            "eval_every_steps": grace,
            "checkpoint_every_steps": max_steps,
            "segment_utterances": 50,
            "threads": 1,
        },
        "space": {
            "training.lr": {"type": "loguniform", "min": 3e-4, "max": 5e-3},
            "model.dropout": {"type": "choice", "values": [0.0, 0.1, 0.3]},
        },
        "scheduler": {
            "type": "asha",
            "grace_period_steps": grace,
            "reduction_factor": 3,
            "promotion": "pause",
        },
        "searcher": {"type": searcher, "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "wandb": {"mode": "disabled"},
    }


class _SlurmHeadJob:
    """The sweep as a head job on a test SLURM of `nodes` nodes (`.ci/slurm.sh`), started here
    in `storage/slurm` with ports of its own, and stopped at the end."""

    def __init__(self, storage: Path, nodes: int, env: dict[str, str]) -> None:
        self.state = storage / "slurm"
        self.env = {
            **env,
            "SLURM_CI_NODES": " ".join(f"n{i}" for i in range(1, nodes + 1)),
            "SLURM_CI_PORT": os.environ.get("SLURM_CI_PORT", "17417"),
            "SLURM_CI_CPUS": "1",
        }
        self.nodes = nodes
        self._slurm("start")
        self.env["SLURM_CONF"] = str(self.state / "slurm.conf")

    def _slurm(self, what: str) -> None:
        subprocess.run(
            ["bash", str(REPO / ".ci" / "slurm.sh"), what, str(self.state)],
            env=self.env,
            check=True,
            timeout=300,
        )

    def submit(self, space: Path, storage: Path) -> None:
        self.log = storage / "head-%j.out"
        env = {k: v for k, v in self.env.items() if not k.startswith(("RAY_", "WANDB_"))}
        env.update(
            SEG_TUNE_STORAGE=str(storage),
            SEG_TUNE_TOKEN_DIR=str(storage / "tokens"),
            SEG_TUNE_RAY_START_ARGS="--object-store-memory=150000000",
            SEG_TUNE_VENV=sys.prefix,
            WANDB_MODE="disabled",
        )
        out = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "-p",
                "ampere",
                "--gres=none",
                f"--output={self.log}",
                f"--nodes={self.nodes}",
                "--cpus-per-task=1",
                "--time=600",
                str(REPO / "cluster" / "ray_head.wilkes3"),
                str(space),
                "--no-report",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.job = out.stdout.strip().split(";")[0]
        self.log = storage / f"head-{self.job}.out"

    def running(self) -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-j", self.job, "-o", "%T"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return bool(out.stdout.strip())

    def driver(self, space: Path) -> psutil.Process | None:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "seg_tune.run" in cmd and str(space) in cmd:
                return proc
        return None

    def stop(self) -> None:
        self._slurm("stop")


def run(doc: dict, storage: Path, address: str | None, slurm_nodes: int = 0) -> dict:
    """Run the sweep with the timing hook; the measurements."""
    name = doc["experiment"]["name"]
    path = storage / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    exp = storage / name
    hook = storage / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    calls_file = storage / "calls.json"
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p),
        "SEG_TUNE_BENCH_CALLS": str(calls_file),
        "SEG_TUNE_BENCH_TIMED": json.dumps(TIMED),
    }
    t0 = time.monotonic()
    proc: subprocess.Popen | None = None
    head: _SlurmHeadJob | None = None
    driver: psutil.Process | None = None
    if slurm_nodes:
        head = _SlurmHeadJob(storage, slurm_nodes, env)
        t0 = time.monotonic()
        head.submit(path, storage)
    else:
        command = [sys.executable, "-m", "seg_tune.run", str(path), "--storage", str(storage)]
        command += ["--no-report"] + (["--address", address] if address else [])
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        driver = psutil.Process(proc.pid)
    # (seconds, trials started, driver RSS MiB, Tune state, ASHA snapshot, ASHA journal bytes)
    samples = []
    while proc.poll() is None if proc else head.running():
        if driver is None or not driver.is_running():
            driver = head.driver(path) if head else None
            if driver is None:
                time.sleep(0.5)
                continue
        try:
            rss = driver.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            driver = None
            continue
        tune_dir = exp / "tune"
        started = len(list(tune_dir.glob("trial_*"))) if tune_dir.is_dir() else 0
        states = sorted(tune_dir.glob("experiment_state-*.json")) if tune_dir.is_dir() else []
        samples.append(
            (
                round(time.monotonic() - t0, 1),
                started,
                round(rss, 1),
                _size(states[-1]) if states else 0,
                _size(exp / "scheduler_state.json"),
                _size(journal_path(exp / "scheduler_state.json")),
            )
        )
        time.sleep(0.5)
    wall = time.monotonic() - t0
    if head is not None:
        head.stop()
        summary_file = exp / "summary.json"
        if not summary_file.is_file() or not json.loads(summary_file.read_text())["finished"]:
            raise SystemExit(f"many_trials: the head job did not finish the sweep; see {head.log}")
    elif proc.wait() != 0:
        raise SystemExit(f"many_trials: seg_tune.run exited with {proc.returncode}; see {exp}")
    spans = attempts(exp)
    busy = sum(end - start for start, end, _ in spans)
    first, last = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    slots = doc["experiment"]["max_concurrent"]
    summary = json.loads((exp / "summary.json").read_text())
    states = sorted((exp / "tune").glob("experiment_state-*.json"))
    calls = json.loads(calls_file.read_text())["calls"]
    return {
        "trials": doc["experiment"]["num_samples"],
        "trials_in_summary": len(summary["trials"]),
        "trial_steps": sum(t["steps_trained"] for t in summary["trials"]),
        "attempts": len(spans),
        "resumed_attempts": sum(r for _, _, r in spans),
        "concurrent": slots,
        "max_steps": doc["experiment"]["max_steps"],
        "searcher": doc["searcher"]["type"],
        "address": f"SLURM head job, {slurm_nodes} nodes" if slurm_nodes else address or "local",
        "wall_s": round(wall, 1),
        "trials_span_s": round(last - first, 1),
        "busy_s": round(busy, 1),
        "ideal_s": round(busy / slots, 1),
        "tune_state_bytes": _size(states[-1]) if states else 0,
        "scheduler_state_bytes": _size(exp / "scheduler_state.json"),
        "scheduler_journal_bytes": _size(journal_path(exp / "scheduler_state.json")),
        "summary_bytes": _size(exp / "summary.json"),
        "rss": rss_by_trials(samples, doc["experiment"]["num_samples"]),
        "timings": timings(calls, doc["experiment"]["num_samples"]),
        "samples": samples,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def rss_by_trials(samples: list, trials: int) -> dict:
    """Driver RSS (MiB, the last sample) when each tenth of the trials had started, and the
    least-squares slope over the second half, MiB per 100 trials started."""
    at = {}
    for tenth in range(1, 11):
        seen = [s for s in samples if s[1] >= math.ceil(trials * tenth / 10)]
        if seen:
            at[tenth * 10] = seen[0][2]
    half = [(s[1], s[2]) for s in samples if s[1] >= trials / 2]
    slope = None
    if len({x for x, _ in half}) > 1:
        mx, my = statistics.fmean(x for x, _ in half), statistics.fmean(y for _, y in half)
        num = sum((x - mx) * (y - my) for x, y in half)
        slope = round(100 * num / sum((x - mx) ** 2 for x, _ in half), 2)
    return {
        "at_percent_started": at,
        "slope_mib_per_100_trials": slope,
        "peak_mib": max((s[2] for s in samples), default=0),
    }


def timings(calls: list, trials: int) -> dict:
    """Per label: calls, total seconds, and the median and p99 of a call (ms) among calls made
    while the first quarter of trials had been added, and while the last quarter had."""
    out = {}
    for label in sorted({c[0] for c in calls}):
        mine = [c for c in calls if c[0] == label]
        row = {"calls": len(mine), "total_s": round(sum(c[2] for c in mine), 2)}
        for name, keep in (
            ("first", lambda n: n <= trials / 4),
            ("last", lambda n: n > trials * 3 / 4),
        ):
            ms = sorted(1000 * c[2] for c in mine if keep(c[3]))
            if ms:
                row[f"{name}_median_ms"] = round(statistics.median(ms), 3)
                row[f"{name}_p99_ms"] = round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3)
        out[label] = row
    return out


def markdown(rows: list[dict]) -> str:
    out = [
        "| trials (in summary) | at a time | cluster | attempts (resumed) | trial-steps | wall "
        "| first trial start to last end | ideal (busy / slots) | overhead over ideal "
        "| driver RSS at 10% / 50% / 100% started, slope | Tune state / scheduler snapshot "
        "(journal) / summary |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = r["rss"]["at_percent_started"]
        mib = " / ".join(f"{rss.get(str(p), rss.get(p, 0)):.0f}" for p in (10, 50, 100))
        out.append(
            f"| {r['trials']} ({r['trials_in_summary']}) | {r['concurrent']} | {r['address']} "
            f"| {r['attempts']} ({r['resumed_attempts']}) | {r['trial_steps']:,} "
            f"| {r['wall_s'] / 60:.1f} min | {r['trials_span_s'] / 60:.1f} min "
            f"| {r['ideal_s'] / 60:.1f} min "
            f"| {100 * (r['trials_span_s'] / r['ideal_s'] - 1):.0f}% "
            f"| {mib} MiB, {r['rss']['slope_mib_per_100_trials']} MiB per 100 trials "
            f"| {r['tune_state_bytes'] / 1024:.0f} / {r['scheduler_state_bytes'] / 1024:.0f} "
            f"({r.get('scheduler_journal_bytes', 0) / 1024:.0f}) / "
            f"{r['summary_bytes'] / 1024:.0f} KiB |"
        )
    for r in rows:
        out += [
            "",
            f"Driver calls, {r['trials']} trials ({r['address']}): median (p99) of a call while "
            "the first / the last quarter of trials had been added",
            "",
            "| call | calls | total | first quarter | last quarter |",
            "|---|---|---|---|---|",
        ]
        for label, t in sorted(r["timings"].items(), key=lambda kv: -kv[1]["total_s"]):
            quarters = [
                f"{t[f'{q}_median_ms']:.2f} ms ({t[f'{q}_p99_ms']:.2f})"
                if f"{q}_median_ms" in t
                else "-"
                for q in ("first", "last")
            ]
            own = " (seg_tune)" if label in SEG_TUNE_LABELS else ""
            out.append(
                f"| {label}{own} | {t['calls']:,} | {t['total_s']:.1f} s "
                f"| {quarters[0]} | {quarters[1]} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=27)
    ap.add_argument("--searcher", choices=("optuna", "random"), default="optuna")
    ap.add_argument("--address", help="a running Ray cluster's address (default: a local one)")
    ap.add_argument("--slurm-nodes", type=int, default=0, help="run as a head job on a test SLURM")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "childes-en")
    ap.add_argument("--log", type=Path, default=REPO / "bench" / "many_trials_runs.jsonl")
    ap.add_argument("--keep", type=Path, help="keep the experiment folder here")
    ap.add_argument("--report", type=Path, help="print the tables of a --log file and exit")
    args = ap.parse_args()
    if args.report:
        rows = [json.loads(line) for line in args.report.read_text().splitlines() if line]
        print(markdown(rows))
        return
    doc = space(args.data, args.trials, args.max_steps, args.concurrent, args.searcher)
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.keep or Path(tmp)
        storage.mkdir(parents=True, exist_ok=True)
        row = run(doc, storage, args.address, args.slurm_nodes)
    row["date"] = time.strftime("%Y-%m-%d")
    with args.log.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(markdown([row]))


if __name__ == "__main__":
    main()
