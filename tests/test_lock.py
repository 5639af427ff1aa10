"""One driver per experiment folder (`seg_tune.sweep.lock`), with real processes: a holder
process, a second driver (`python -m seg_tune.run`) that must refuse at once naming it, a
SIGKILLed holder whose lock is taken over, an expired heartbeat from another host, a SLURM
requeue, and `seg-tune report` reading without writing while the lock is held."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from seg_tune.errors import ConfigError
from seg_tune.sweep import lock
from seg_tune.sweep.lock import ExperimentLock, Holder

_HOLD = """
import sys, time
from seg_tune.sweep.lock import ExperimentLock
held = ExperimentLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder_process(root: Path, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _space(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_"))}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "WANDB_MODE": "disabled"},
    )


def test_a_second_driver_refuses_at_once_naming_the_holder(tmp_path: Path) -> None:
    storage = tmp_path / "results"
    exp = storage / "smoke"
    holder = _holder_process(exp)
    try:
        start = time.monotonic()
        proc = _run("seg_tune.run", str(_space(tmp_path)), "--storage", str(storage))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert time.monotonic() - start < 30
        (line,) = proc.stderr.strip().splitlines()
        assert (
            f"PID {holder.pid}" in line and "since " in line and "another seg_tune driver" in line
        )
        assert "raylet" not in proc.stdout and not (exp / "tune").exists()
        # --fresh respects it too: the folder stays where it is
        fresh = _run("seg_tune.run", str(_space(tmp_path)), "--storage", str(storage), "--fresh")
        assert fresh.returncode == 2 and f"PID {holder.pid}" in fresh.stderr
        assert exp.is_dir() and not list(storage.glob("smoke.old-*"))
    finally:
        holder.kill()
        holder.wait()


def test_a_sigkilled_holder_is_taken_over_with_a_notice(tmp_path: Path) -> None:
    holder = _holder_process(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    taken = ExperimentLock(tmp_path).acquire()
    try:
        assert taken.notice is not None and f"PID {holder.pid}" in taken.notice
        assert "no longer running" in taken.notice
        assert taken.owns() and json.loads(taken.path.read_text())["pid"] == os.getpid()
    finally:
        taken.release()
    assert not taken.path.exists() and not list(tmp_path.glob("driver.lock*"))


def _foreign(tmp_path: Path, age_s: float, **fields: object) -> Path:
    """A lock file written by a driver on another host, last heartbeat `age_s` ago."""
    doc = {"host": "node-elsewhere", "pid": 1, "since": time.time() - age_s, "token": "x" * 32}
    path = tmp_path / "driver.lock"
    path.write_text(json.dumps({**doc, **fields}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_another_hosts_lock_holds_until_its_heartbeat_expires(tmp_path: Path) -> None:
    _foreign(tmp_path, age_s=5)
    with pytest.raises(ConfigError, match="host node-elsewhere, PID 1"):
        ExperimentLock(tmp_path).acquire()
    assert lock.holder(tmp_path) is not None
    _foreign(tmp_path, age_s=lock.EXPIRY_S + 10)
    assert lock.holder(tmp_path) is None
    taken = ExperimentLock(tmp_path).acquire()
    assert taken.notice is not None and "heartbeat is" in taken.notice
    taken.release()


def test_a_requeued_slurm_job_takes_over_its_earlier_run(monkeypatch, tmp_path: Path) -> None:
    _foreign(tmp_path, age_s=1, slurm_job_id="4242", slurm_restart_count=0)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same run of the job: alive elsewhere
    with pytest.raises(ConfigError, match="SLURM job 4242"):
        ExperimentLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued: the earlier run is gone
    taken = ExperimentLock(tmp_path).acquire()
    assert taken.notice is not None and "earlier run of this SLURM job" in taken.notice
    taken.release()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path: Path) -> None:
    held = ExperimentLock(tmp_path, heartbeat_s=0.1).acquire()
    try:
        old = time.time() - 1000
        os.utime(held.path, (old, old))
        time.sleep(0.5)
        assert time.time() - held.path.stat().st_mtime < 5
        assert Holder.me().host == json.loads(held.path.read_text())["host"]
    finally:
        held.release()


def test_report_reads_and_never_writes_while_the_lock_is_held(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    summary = {
        "format": 4,
        "name": "exp",
        "metric": "valid_loss",
        "mode": "min",
        "trials": [{"trial_id": "a", "status": "RUNNING", "metrics": {"valid_loss": 2.0}}],
    }
    (exp / "summary.json").write_text(json.dumps(summary))
    holder = _holder_process(exp)
    try:
        proc = _run("seg_tune.report", str(exp))
        assert proc.returncode == 0, proc.stderr
        assert "# Tuning report: exp" in proc.stdout and f"PID {holder.pid}" in proc.stderr
        assert not (exp / "report.md").exists() and not (exp / "plots").exists()
    finally:
        holder.kill()
        holder.wait()
    written = _run("seg_tune.report", str(exp))  # its holder gone: written as usual
    assert written.returncode == 0 and (exp / "report.md").is_file(), written.stderr
