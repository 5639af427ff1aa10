"""The tuning service on a real GPU: whole-GPU Ray Train trials and trials sharing one GPU.

    python bench/gpu_check.py --out DIR          # on a machine with a CUDA GPU
    python bench/gpu_check.py --out DIR --fake   # anywhere: Ray is told of one GPU (logic only)

Runs `python -m seg_tune.run` twice, for real (Ray cluster, checkpoints, wandb offline, results):
1. `whole`: 2 trials, each a Ray Train TorchTrainer with one worker holding a whole GPU
   (`use_ray_train: always`); one GPU means one trial at a time.
2. `shared`: 4 trials of the default single-worker path, 0.5 GPU each: two share the GPU at a
   time, never more.
and the plain training loop on the same GPU for a throughput reference.

Evidence, written to DIR/gpu_check.json and DIR/gpu_check.md: each run's exit status and trial
statuses, the most trials training at one moment (from the time stamps of each trial's first and
last report: a Ray Train trial may start and then wait for its GPU), the
"trial trains on cuda" lines the trials print in Ray's worker logs, GPU memory and utilisation
sampled by nvidia-smi while the runs went on, and tokens/s per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def base(steps: int) -> dict[str, Any]:
    """What both experiments and the plain loop share; evaluations at a third of the budget."""
    every = max(steps // 3, 1)
    return {
        "experiment": {"metric": "valid_loss", "mode": "min", "max_steps": steps},
        "data": {"train": {"kind": "synthetic", "n_utterances": 3000, "seed": 0}},
        "model": {"preset": "800k", "n_positions": 128},
        "training": {
            "batch_size": 64,
            "block_size": 128,
            "warmup_steps": 20,
            "eval_every_steps": every,
            "checkpoint_every_steps": every,
            "segment_utterances": 200,
            "log_every_steps": 50,
            "threads": 1,
        },
        "space": {"training.lr": {"type": "loguniform", "min": 1.0e-3, "max": 5.0e-3}},
        "scheduler": {"type": "fifo"},
        "searcher": {"type": "optuna", "seed": 0},
        "failure": {"max_retries": 0},
        "checkpoints": {"keep": 1},
        "wandb": {"project": "seg_tune", "mode": "offline"},
    }


RUNS: dict[str, dict[str, Any]] = {
    "whole": {
        "experiment": {"num_samples": 2, "max_concurrent": 2},
        "resources": {
            "workers": 1,
            "cpus_per_worker": 2,
            "gpus_per_worker": 1,
            "use_ray_train": "always",
        },
    },
    "shared": {
        "experiment": {"num_samples": 4, "max_concurrent": 4},
        "resources": {"workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 0.5},
    },
}
EXPECTED_MOST = {"whole": 1, "shared": 2}


def space_file(folder: Path, name: str, steps: int) -> Path:
    doc = base(steps)
    for section, values in RUNS[name].items():
        doc.setdefault(section, {}).update(values)
    doc["experiment"]["name"] = name
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


class GpuSampler:
    """nvidia-smi every half second: memory used (MiB), utilisation (%) and compute processes."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=5)

    def _query(self, *args: str) -> list[str]:
        out = subprocess.run(
            ["nvidia-smi", *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                gpu = self._query("--query-gpu=memory.used,utilization.gpu")
                apps = self._query("--query-compute-apps=pid,used_memory")
                memory, util = (float(x) for x in gpu[0].split(","))
                self.samples.append(
                    {"t": time.time(), "memory_mib": memory, "util": util, "processes": len(apps)}
                )
            except Exception as exc:  # keep sampling; record why one sample failed
                self.samples.append({"t": time.time(), "error": repr(exc)})
            self._stop.wait(0.5)

    def window(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s["t"] <= end and "error" not in s]
        if not inside:
            return {"samples": 0}
        return {
            "samples": len(inside),
            "peak_memory_mib": max(s["memory_mib"] for s in inside),
            "peak_util_pct": max(s["util"] for s in inside),
            "median_util_pct": statistics.median(s["util"] for s in inside),
            "most_processes": max(s["processes"] for s in inside),
        }


def _history(exp: Path, trial_id: str) -> list[dict[str, Any]]:
    path = exp / "tune" / f"trial_{trial_id}" / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def most_at_once(spans: list[tuple[float, float]], margin: float = 1.0) -> int:
    """The most intervals overlapping at one moment, each shrunk by `margin` s at both ends
    (Tune's time stamps have a resolution of 1 s)."""
    edges = sorted(
        [(s + margin, 1) for s, e in spans if e - s > 2 * margin]
        + [(e - margin, -1) for s, e in spans if e - s > 2 * margin]
    )
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def device_lines(since: float) -> list[str]:
    """The trials' "seg_tune: trial trains on ..." lines in Ray's worker logs since `since`."""
    lines: list[str] = []
    for session in Path("/tmp/ray").glob("session_2*"):
        for log in (session / "logs").glob("worker-*.out"):
            if log.stat().st_mtime < since:
                continue
            for line in log.read_text(errors="replace").splitlines():
                if "seg_tune: trial trains on" in line or "cannot use CUDA" in line:
                    lines.append(line.strip())
    return lines


def run_one(
    name: str, work: Path, steps: int, sampler: GpuSampler, env: dict[str, str]
) -> dict[str, Any]:
    space = space_file(work, name, steps)
    storage = work / "results"
    log = work / f"{name}.log"
    start = time.time()
    with log.open("w") as out:
        rc = subprocess.run(
            [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(storage)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        ).returncode
    end = time.time()
    exp = storage / name
    summary_path = exp / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"trials": []}
    trials = []
    for t in summary["trials"]:
        history = _history(exp, t["trial_id"])
        # From the first report to the last: training, not a Train trial's wait for its GPU.
        span = (
            (float(history[0]["timestamp"]), float(history[-1]["timestamp"]))
            if history
            else (0.0, 0.0)
        )
        rates = [h["tokens_per_s"] for h in history if "tokens_per_s" in h]
        trials.append(
            {
                "trial_id": t["trial_id"],
                "status": t["status"],
                "steps": t.get("steps_trained"),
                "valid_loss": (t.get("metrics") or {}).get("valid_loss"),
                "median_tokens_per_s": statistics.median(rates) if rates else None,
                "span_s": round(span[1] - span[0], 1),
                "_span": span,
            }
        )
    most = most_at_once([t.pop("_span") for t in trials])
    lines = device_lines(start)
    return {
        "name": name,
        "exit_status": rc,
        "wall_s": round(end - start, 1),
        "resources": RUNS[name]["resources"],
        "trials": trials,
        "most_training_at_once": most,
        "expected_most": EXPECTED_MOST[name],
        "device_lines": lines,
        "trials_on_cuda": sum("trains on cuda" in line for line in lines),
        "gpu": sampler.window(start, end),
        "last_lines": log.read_text(errors="replace").splitlines()[-3:],
    }


def plain_loop(work: Path, steps: int, env: dict[str, str], device: str) -> dict[str, Any]:
    """The plain training loop (no Ray) with the same model and steps: tokens/s reference."""
    doc = base(steps)
    cfg = {
        "data": doc["data"],
        "model": doc["model"],
        "training": {
            **doc["training"],
            "steps": steps,
            "lr": 2e-3,
        },
    }
    path = work / "plain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
    start = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seg_tune.train",
            str(path),
            "--out",
            str(work / "plain"),
            "--device",
            device,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    metrics = (
        [
            json.loads(line)
            for line in (work / "plain" / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        if (work / "plain" / "metrics.jsonl").exists()
        else []
    )
    rates = [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m]
    return {
        "exit_status": proc.returncode,
        "device": device,
        "wall_s": round(time.time() - start, 1),
        "median_tokens_per_s": statistics.median(rates) if rates else None,
        "tail": (proc.stdout + proc.stderr).splitlines()[-3:],
    }


def markdown(report: dict[str, Any]) -> str:
    rows = [
        f"GPU: {report['gpu_name']}; torch {report['torch']}, Ray {report['ray']}; "
        f"fake GPU: {report['fake']}",
        "",
        "| run | resources per trial | exit | trials (status) | most training at once "
        "(expected) | trials on cuda | peak GPU memory | median / peak GPU util | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        statuses = ", ".join(sorted({t["status"] for t in r["trials"]})) or "none"
        res = r["resources"]
        path = "Ray Train" if res.get("use_ray_train") == "always" else "Tune function"
        gpu = r["gpu"]
        rows.append(
            f"| {r['name']} | {res['gpus_per_worker']} GPU, {res['cpus_per_worker']} CPU, {path} "
            f"| {r['exit_status']} | {len(r['trials'])} ({statuses}) "
            f"| {r['most_training_at_once']} ({r['expected_most']}) "
            f"| {r['trials_on_cuda']} "
            f"| {gpu.get('peak_memory_mib', '-')} MiB "
            f"| {gpu.get('median_util_pct', '-')} / {gpu.get('peak_util_pct', '-')} % "
            f"| {r['wall_s']} s |"
        )
    rows += [
        "",
        "| run | trial | steps | valid_loss | median tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        for t in r["trials"]:
            loss = f"{t['valid_loss']:.3f}" if t["valid_loss"] is not None else "-"
            rate = f"{t['median_tokens_per_s']:,.0f}" if t["median_tokens_per_s"] else "-"
            rows.append(f"| {r['name']} | {t['trial_id']} | {t['steps']} | {loss} | {rate} |")
    plain = report.get("plain")
    if plain:
        rate = f"{plain['median_tokens_per_s']:,.0f}" if plain["median_tokens_per_s"] else "-"
        rows.append(f"| plain loop ({plain['device']}) | - | - | - | {rate} |")
    rows += ["", f"Checks: {json.dumps(report['checks'])}"]
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fake", action="store_true", help="no GPU: tell Ray of one (logic only)")
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--no-plain", action="store_true")
    parser.add_argument("--steps", type=int, default=600, help="steps per trial")
    args = parser.parse_args()

    import ray
    import torch

    if not args.fake and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here (use --fake to check the logic)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu_check_work"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    if args.fake:
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"GPU": 1, "CPU": 8})
    report: dict[str, Any] = {
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "fake": args.fake,
        "runs": [],
    }
    with GpuSampler() as sampler:
        for name in args.only or list(RUNS):
            result = run_one(name, work, args.steps, sampler, env)
            report["runs"].append(result)
            print(json.dumps(result, indent=1), flush=True)
        if not args.no_plain:
            report["plain"] = plain_loop(work, args.steps, env, "cpu" if args.fake else "cuda")
            print(json.dumps(report["plain"], indent=1), flush=True)
    checks = {}
    for r in report["runs"]:
        n_trials = RUNS[r["name"]]["experiment"]["num_samples"]
        checks[r["name"]] = {
            "exit_0": r["exit_status"] == 0,
            "all_terminated": len(r["trials"]) == n_trials
            and all(t["status"] == "TERMINATED" for t in r["trials"]),
            "concurrency_as_expected": r["most_training_at_once"] == r["expected_most"],
            "every_trial_on_cuda": args.fake or r["trials_on_cuda"] >= n_trials,
        }
    report["checks"] = checks
    report["ok"] = all(all(c.values()) for c in checks.values())
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1), "utf-8")
    (args.out / "gpu_check.md").write_text(markdown(report), "utf-8")
    with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:  # the evidence, small files only
        for path in sorted(work.rglob("*")):
            small = path.is_file() and path.stat().st_size < 2_000_000
            if small and path.suffix in {".json", ".md", ".log", ".yaml", ".jsonl"}:
                tar.add(path, arcname=str(path.relative_to(work)))
    print(markdown(report), flush=True)
    print(f"gpu_check: {'all checks passed' if report['ok'] else 'SOME CHECKS FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
