"""Benchmark: what a requeue at the SLURM time limit costs a sweep.

Submits `cluster/ray_head.wilkes3` to a real SLURM (the local test one from `.ci/slurm.sh`, started
here if `sinfo` does not answer) with a small experiment: 2 trials at once, checkpoint and report
every 10 steps. Once every trial has reached --signal-at-step, it sends the batch script SIGUSR1
(`scancel --batch --signal=USR1`: what `--signal=B:USR1@N` delivers at the time limit, but at a
moment chosen here), then follows the job through stop, requeue, restart and resume to the end.

It reports, from the job's log and the trials' results:
- signal -> driver stopped (state saved), -> requeued (Ray shut down), -> job running again
  (SLURM's own delay: cred_expire, 10 s on the test SLURM, 120 s by default), -> Ray cluster up,
  -> first trial result after the restart (the trials are training again), and the total;
- trial steps computed twice: for each resumed trial, the last step reported before the signal
  minus the step it resumed from (steps trained after the last report are not seen, so this is a
  lower bound by less than one report interval per trial).

    python bench/requeue_cost.py                    # 2 trials x 400 steps, signal at step 60
    python bench/requeue_cost.py --smoke-test       # 2 trials x 100 steps, signal at step 20

It prints a Markdown snippet (with the command line) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from seg_tune.sweep.layout import Layout

REPO = Path(__file__).resolve().parents[1]
SLURM_SH = REPO / ".ci" / "slurm.sh"
SCRIPT = REPO / "cluster" / "ray_head.wilkes3"
EVERY_STEPS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="step budget of each trial")
    p.add_argument("--signal-at-step", type=int, default=60, help="signal once all trials reach it")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the job (= trials at once)")
    p.add_argument("--timeout-s", type=float, default=900)
    p.add_argument("--smoke-test", action="store_true", help="100 steps, signal at step 20")
    p.add_argument("--keep", action="store_true", help="keep the job's folder (printed)")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.steps, args.signal_at_step = 100, 20
    return args


def slurm_env() -> tuple[dict[str, str], bool]:
    """The environment reaching a SLURM with nodes n1/n2; starts the test one if needed."""
    env = dict(os.environ)
    if subprocess.run(["sinfo", "-h"], env=env, capture_output=True).returncode == 0:
        return env, False
    subprocess.run([str(SLURM_SH), "start"], check=True)
    out = subprocess.run([str(SLURM_SH), "env"], check=True, capture_output=True, text=True)
    env["SLURM_CONF"] = out.stdout.strip().removeprefix("export SLURM_CONF=")
    return env, True


def write_space(folder: Path, args: argparse.Namespace) -> Path:
    doc = {
        "experiment": {
            "name": "requeue_cost",
            "metric": "valid_loss",
            "mode": "min",
            "num_samples": args.cpus,
            "max_concurrent": args.cpus,
            "max_steps": args.steps,
        },
        "data": {"train": {"kind": "synthetic", "n_utterances": 600, "seed": 0}},
        "model": {"preset": "400k", "n_positions": 64},
        "training": {
            "batch_size": 16,
            "block_size": 32,
            "warmup_steps": 5,
            "eval_every_steps": EVERY_STEPS,
            "checkpoint_every_steps": EVERY_STEPS,
            "segment_utterances": 0,
            "threads": 1,
        },
        "space": {"training.lr": {"type": "loguniform", "min": 1.0e-3, "max": 5.0e-3}},
        "scheduler": {"type": "fifo"},
        "searcher": {"type": "random", "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "wandb": {"mode": "offline"},
    }
    path = folder / "requeue_cost.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def submit(env: dict[str, str], folder: Path, space: Path, cpus: int) -> int:
    job_env = {k: v for k, v in env.items() if not k.startswith(("RAY_", "WANDB_", "SEG_TUNE_"))}
    job_env.update(
        SEG_TUNE_STORAGE=str(folder / "results"),
        SEG_TUNE_TOKEN_DIR=str(folder / "tokens"),
        SEG_TUNE_RAY_START_ARGS="--object-store-memory=150000000",
        WANDB_MODE="offline",
    )
    if sys.prefix != sys.base_prefix:
        job_env["SEG_TUNE_VENV"] = sys.prefix
    cmd = ["sbatch", "--parsable", "-p", "ampere", "--gres=none", "--nodes=1"]
    cmd += [f"--cpus-per-task={cpus}", "--time=30", f"--output={folder}/seg_tune-%j.out"]
    out = subprocess.run(
        [*cmd, str(SCRIPT), str(space)], cwd=REPO, env=job_env, check=True, capture_output=True
    )
    return int(out.stdout.decode().strip().split(";")[0])


def job_state(env: dict[str, str], job: int) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job)], env=env, capture_output=True, text=True
    )
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def results(exp: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in Layout(exp).tune.glob("trial_*/result.json"):
        lines = path.read_text().splitlines()
        out[path.parent.name] = [json.loads(x) for x in lines if x.endswith("}")]
    return out


def wait(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise SystemExit(f"requeue_cost: timed out waiting for {what}")


def log_time(log: str, pattern: str, nth: int = 0) -> float:
    """Epoch of the nth `[ray_head YYYY-mm-dd HH:MM:SS] ...pattern...` line (1 s resolution)."""
    stamps = re.findall(r"\[ray_head (\S+ \S+)\] [^\n]*" + pattern, log)
    return datetime.strptime(stamps[nth], "%Y-%m-%d %H:%M:%S").timestamp()


def measure(log: str, exp: Path) -> dict[str, float]:
    signal = float(re.search(r"SIGUSR1 at ([\d.]+)", log)[1])
    stopped = signal + float(re.search(r"driver exited \d+, ([\d.]+)s after SIGUSR1", log)[1])
    requeued = log_time(log, "requeued job")
    restarted = log_time(log, "SLURM_RESTART_COUNT=1")
    ray_up = log_time(log, "Ray cluster up", nth=1)
    first_after, twice = float("inf"), 0
    for rs in results(exp).values():
        before = [r for r in rs if r["timestamp"] < signal]
        after = [r for r in rs if r["timestamp"] >= restarted]
        if after:
            first_after = min(first_after, after[0]["timestamp"])
        if before and after:
            twice += max(0, before[-1]["step"] - after[0]["resumed_from_step"])
    if first_after == float("inf"):
        raise SystemExit("requeue_cost: no trial result after the restart (all done before?)")
    return {
        "signal -> driver stopped (state saved)": stopped - signal,
        "-> requeued (Ray shut down)": requeued - stopped,
        "-> job running again (SLURM)": restarted - requeued,
        "-> Ray cluster up": ray_up - restarted,
        "-> first trial result after the restart": first_after - ray_up,
        "signal -> trials training again (total)": first_after - signal,
        "steps computed twice": twice,
    }


def run(args: argparse.Namespace) -> dict[str, float]:
    env, started = slurm_env()
    folder = Path(tempfile.mkdtemp(prefix="requeue_cost-"))
    try:
        job = submit(env, folder, write_space(folder, args), args.cpus)
        log_path, exp = folder / f"seg_tune-{job}.out", folder / "results" / "requeue_cost"

        def all_reached() -> bool:
            rs = results(exp)
            if job_state(env, job).get("JobState") not in {"PENDING", "RUNNING"}:
                raise SystemExit(f"requeue_cost: the job ended before the signal, see {log_path}")
            return len(rs) == args.cpus and all(
                r and r[-1]["step"] >= args.signal_at_step for r in rs.values()
            )

        wait(all_reached, args.timeout_s, f"every trial at step {args.signal_at_step}")
        subprocess.run(["scancel", "--batch", "--signal=USR1", str(job)], env=env, check=True)
        wait(
            lambda: job_state(env, job).get("JobState") in {"COMPLETED", "FAILED", "CANCELLED"},
            args.timeout_s,
            "the end of the job",
        )
        state = job_state(env, job)
        if state["JobState"] != "COMPLETED" or state.get("Restarts") != "1":
            raise SystemExit(f"requeue_cost: job ended {state.get('JobState')}, see {log_path}")
        return measure(log_path.read_text(), exp)
    finally:
        if args.keep:
            print(f"requeue_cost: kept {folder}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
        if started:
            subprocess.run([str(SLURM_SH), "stop"], check=False)


def markdown(args: argparse.Namespace, argv: list[str], numbers: dict[str, float]) -> str:
    twice = int(numbers.pop("steps computed twice"))
    total = args.cpus * args.steps
    rows = "\n".join(f"| {k} | {v:.0f} |" for k, v in numbers.items())
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return (
        "### Requeue at the time limit\n\n"
        f"`{shlex.join(['python', 'bench/requeue_cost.py', *argv])}` ({machine}; "
        "local test SLURM, cred_expire=10 s; log timestamps have 1 s resolution)\n\n"
        "| phase | seconds |\n|---|---|\n"
        f"{rows}\n\n"
        f"Trial steps computed twice: {twice} of {total} ({100 * twice / total:.1f} %; "
        f"checkpoints every {EVERY_STEPS} steps).\n"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    print(markdown(args, argv, run(args)))


if __name__ == "__main__":
    main()
