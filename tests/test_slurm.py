"""seg_tune on a real SLURM: `cluster/ray_head.wilkes3` (and `ray_worker.wilkes3`) submitted with sbatch.

The SLURM is real (slurmctld, two slurmd `n1` and `n2` on loopback, munge), started by
`.ci/slurm.sh start` unless `sinfo` already answers, and stopped by PID at the end if this session
started it. Jobs override the Wilkes3 defaults on the command line (`--gres=none`, few CPUs, short
times) and run the real driver, `python -m seg_tune.run`, on a real Ray cluster per job.

Timing on this 2-core machine (shared): 12-15 minutes for the file; the two-node smoke run takes
1.5-2 minutes, the two requeue jobs (run at the same time on one node, which is also the isolation
test) 2.5-4.5, the node-loss job about 3.5, the check of `.ci/slurm.sh stop` about 15 s; the
requeued study (two cells one after the other, two Ray start-ups) 5 minutes on the idle machine,
6 at load 4 and 10-11 at load 3-13 (other test runs), nearly all of it start-ups; the worker
jobs' test (a head job, two worker jobs, a cancel and a requeue) about 3 minutes when idle.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, free_port_block
from wandb_files import check_steps_logged_once

from seg_tune.sweep.layout import Layout, StudyLayout
from seg_tune.sweep.lock import read_holder

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_SH = REPO / ".ci" / "slurm.sh"
SCRIPT = REPO / "cluster" / "ray_head.wilkes3"
NODES = ("n1", "n2")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
EVERY_STEPS = 10  # evaluation and checkpoint interval of the requeue experiments


# ------------------------------------------------------------------------------- the test SLURM


@dataclass
class Slurm:
    """Client side of the test SLURM: its environment and a few commands."""

    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (kept by slurmctld for MinJobAge=300 s after the end)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(re.findall(r"(\w+)=(\S*)", out))


def _sinfo_nodes(env: dict[str, str]) -> set[str]:
    if not shutil.which("sinfo", path=env.get("PATH")):
        return set()
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True, text=True, timeout=30
    )
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def _daemon_pids(state_dir: Path) -> list[int]:
    files = [*state_dir.glob("slurmd-*.pid"), state_dir / "slurmctld.pid"]
    files.append(state_dir / "munge" / "munged.pid")
    return [int(f.read_text().strip()) for f in files if f.is_file() and f.read_text().strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """The test SLURM: reused when `sinfo` lists n1 and n2, else started (and stopped after)."""
    env = dict(os.environ)
    if set(NODES) <= _sinfo_nodes(env):
        yield Slurm(env)
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM answers and starting one (.ci/slurm.sh start) needs root")
    state_dir = REPO / ".ci" / "slurm-state"
    subprocess.run([str(SLURM_SH), "start", str(state_dir)], check=True, timeout=300)
    exported = subprocess.run(
        [str(SLURM_SH), "env", str(state_dir)], check=True, capture_output=True, text=True
    ).stdout
    env["SLURM_CONF"] = exported.strip().removeprefix("export SLURM_CONF=")
    assert set(NODES) <= _sinfo_nodes(env), "the test SLURM started but lists no n1/n2"
    pids = _daemon_pids(state_dir)
    try:
        yield Slurm(env)
    finally:
        subprocess.run([str(SLURM_SH), "stop", str(state_dir)], check=True, timeout=180)
        left = [pid for pid in pids if _alive(pid)]
        assert not left, f".ci/slurm.sh stop left daemons running: {left}"


# ------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    slurm: Slurm
    id: int
    log: Path
    storage: Path
    token_dir: Path
    submitted: float = field(default_factory=time.time)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def state(self) -> dict[str, str]:
        return self.slurm.job(self.id)

    def done(self) -> bool:
        return self.state().get("JobState") in FINAL_STATES

    def wait_log(self, pattern: str, timeout_s: float) -> re.Match[str]:
        match: re.Match[str] | None = None

        def found() -> bool:
            nonlocal match
            match = re.search(pattern, self.text())
            return match is not None

        _wait_for(found, timeout_s, f"/{pattern}/ in {self.log}", on_fail=self.text)
        assert match is not None
        return match

    def wait_end(self, timeout_s: float) -> dict[str, str]:
        _wait_for(self.done, timeout_s, f"the end of job {self.id}", on_fail=self.text)
        return self.state()

    def dashboard(self) -> tuple[int, str]:
        """(port, token) from the log: the port line and the token file it names."""
        port = int(self.wait_log(r"dashboard on \S+ at 127\.0\.0\.1:(\d+)", 300)[1])
        token_file = Path(self.wait_log(r"paste the token: ssh \S+ cat (\S+)", 10)[1])
        return port, token_file.read_text().strip()


def _wait_for(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str,
    on_fail: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{on_fail()[-5000:]}")


def _job_env(base: dict[str, str], tmp: Path) -> dict[str, str]:
    """The submitting environment: no Ray/W&B settings of the caller, storage and token in tmp."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("RAY_", "WANDB_", "SEG_TUNE_")) and k != "PYTHONPATH"
    }
    env.update(
        SEG_TUNE_STORAGE=str(tmp / "results"),
        SEG_TUNE_TOKEN_DIR=str(tmp / "tokens"),
        SEG_TUNE_RAY_START_ARGS="--object-store-memory=150000000",  # RAM is shared: keep it small
        SEG_TUNE_STOP_GRACE_S="60",
        WANDB_MODE="offline",
    )
    if sys.prefix != sys.base_prefix:  # the venv running these tests runs the jobs too
        env["SEG_TUNE_VENV"] = sys.prefix
    return env


def submit(
    slurm: Slurm,
    tmp: Path,
    space: Path | None,
    *driver_args: str,
    sbatch: list[str],
    env: dict[str, str] | None = None,
) -> Job:
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "seg_tune-%j.out"
    cmd = ["sbatch", "--parsable", "-p", "ampere", "--gres=none", f"--output={log}", *sbatch]
    out = subprocess.run(
        [*cmd, str(SCRIPT), *([str(space)] if space else []), *driver_args],
        cwd=REPO,
        env={**_job_env(slurm.env, tmp), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.strip().split(";")[0])
    return Job(slurm, job_id, tmp / f"seg_tune-{job_id}.out", tmp / "results", tmp / "tokens")


def _runtime_s(value: str) -> int:
    """SLURM's RunTime (`[D-]HH:MM:SS`) in seconds."""
    days, _, hms = value.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


# ------------------------------------------------------------------------------- Ray's dashboard


def _http(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            body = response.read()
            return response.status, json.loads(body) if body.startswith((b"{", b"[")) else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _state_api(port: int, token: str, resource: str) -> list[dict[str, Any]]:
    """Rows of Ray's state API (`/api/v0/nodes`, `/api/v0/actors`), [] when it does not answer."""
    try:
        status, body = _http(port, f"/api/v0/{resource}?limit=1000&detail=true", token)
    except (urllib.error.URLError, OSError, TimeoutError):
        return []
    if status != 200 or not isinstance(body, dict):
        return []
    return body.get("data", {}).get("result", {}).get("result", [])


# ------------------------------------------------------------------------------- results


def _result_file(exp: Path, trial_id: str) -> Path:
    return Layout(exp).trial_dir(trial_id) / "result.json"


def _results(exp: Path, trial_id: str) -> list[dict[str, Any]]:
    path = _result_file(exp, trial_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _all_results(exp: Path) -> dict[str, list[dict[str, Any]]]:
    ids = [p.name.removeprefix("trial_") for p in Layout(exp).tune.glob("trial_*")]
    return {tid: _results(exp, tid) for tid in ids}


def _segments(results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A trial's results split at each restart: a new trainable process (pid) or resume point."""
    segments: list[list[dict[str, Any]]] = []
    for r in results:
        key = (r["pid"], r["resumed_from_step"])
        if not segments or (segments[-1][-1]["pid"], segments[-1][-1]["resumed_from_step"]) != key:
            segments.append([])
        segments[-1].append(r)
    return segments


def _space(tmp: Path, name: str, max_retries: int = 1, **experiment: int) -> Path:
    """A requeue experiment: fixed step budget (FIFO), checkpoint and report every 10 steps."""
    return _write_space(tmp, name, _space_doc(name, max_retries, **experiment))


def _write_space(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    tmp.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _space_doc(name: str, max_retries: int = 1, **experiment: int) -> dict[str, Any]:
    return {
        "experiment": {"name": name, "metric": "valid_loss", "mode": "min", **experiment},
        "data": {"train": {"kind": "synthetic", "n_utterances": 600, "seed": 0}},
        "model": {"preset": "400k", "n_positions": 64},
        "training": {
            "batch_size": 16,
            "block_size": 32,
            "warmup_steps": 5,
            "eval_every_steps": EVERY_STEPS,
            "checkpoint_every_steps": EVERY_STEPS,
            "segment_utterances": 0,
            "log_every_steps": 5,
            "threads": 1,
        },
        "space": {"training.lr": {"type": "loguniform", "min": 1.0e-3, "max": 5.0e-3}},
        "scheduler": {"type": "fifo"},
        "searcher": {"type": "random", "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "failure": {"max_retries": max_retries},
        "checkpoints": {"keep": 2},
        "wandb": {"project": "seg_tune", "mode": "offline"},
    }


def _ray_tmp_dirs(job: Job) -> list[Path]:
    return sorted(Path("/tmp").glob(f"ray_{job.id}_*"))


# ------------------------------------------------------------------------------- tests


def test_ci_slurm_start_is_idempotent(slurm: Slurm) -> None:
    """`.ci/slurm.sh start` on a running cluster changes nothing and says how to reach it."""
    state_dir = Path(slurm.env.get("SLURM_CONF", "")).parent
    if state_dir != REPO / ".ci" / "slurm-state":
        pytest.skip("the SLURM in use was not started by .ci/slurm.sh from this checkout")
    before = _daemon_pids(state_dir)
    out = subprocess.run(
        [str(SLURM_SH), "start", str(state_dir)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert f"export SLURM_CONF={state_dir}/slurm.conf" in out.stderr
    assert _daemon_pids(state_dir) == before and len(before) == 4  # munged, slurmctld, 2 slurmd
    states = slurm.run("sinfo", "-h", "-N", "-o", "%N %T").split("\n")
    assert {line.split()[0] for line in states if line} == set(NODES)


def test_ci_slurm_stop_cancels_jobs_and_leaves_no_daemon(tmp_path: Path) -> None:
    """`.ci/slurm.sh stop` (what .ci/run's exit trap and the `slurm` fixture rely on), on a SLURM
    of this test's own: a second instance beside the test SLURM (its own state dir, munge socket
    and ports), so that this runs in CI too, where .ci/run has started the test SLURM before
    pytest. With a job running, `stop` cancels it and stops munged, slurmctld and both slurmd;
    none of their processes, nor the job's, is left; the test SLURM, if one runs, still answers."""
    if os.geteuid() != 0:
        pytest.skip(".ci/slurm.sh start needs root (packages, daemons running as root)")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    others = _sinfo_nodes(dict(os.environ))  # the test SLURM's nodes, when it runs
    # /tmp, not pytest's tmp_path: munged (user munge) must reach its socket through the path.
    state_dir = Path(tempfile.mkdtemp(prefix="slurm-stop-", dir="/tmp"))
    state_dir.chmod(0o755)
    env["SLURM_CI_PORT"] = str(free_port_block(3, 17017, 30000))  # slurmctld, then n1 and n2
    pids: list[int] = []
    try:
        subprocess.run([str(SLURM_SH), "start", str(state_dir)], env=env, check=True, timeout=300)
        pids = _daemon_pids(state_dir)
        assert len(pids) == 4 and all(_alive(pid) for pid in pids), pids  # munged, ctld, 2 slurmd
        own = Slurm({**env, "SLURM_CONF": str(state_dir / "slurm.conf")})
        job_pid = state_dir / "job.pid"
        own.run(
            "sbatch",
            "--parsable",
            "-p",
            "ampere",
            f"--output={tmp_path / 'job.out'}",
            f"--wrap=echo $$ > {job_pid}; exec sleep 600",
        )
        _wait_for(lambda: job_pid.is_file() and job_pid.read_text().strip(), 60, "the job")
        job = int(job_pid.read_text())
        assert _alive(job)
        subprocess.run([str(SLURM_SH), "stop", str(state_dir)], env=env, check=True, timeout=180)
        left = [pid for pid in [*pids, job] if _alive(pid)]
        assert not left, f".ci/slurm.sh stop left processes running: {left}"
        assert others <= _sinfo_nodes(dict(os.environ)), "stopping this SLURM hit the test SLURM"
    finally:
        if any(_alive(pid) for pid in pids):  # a failed stop: do not leave them to later tests
            subprocess.run([str(SLURM_SH), "stop", str(state_dir)], env=env, timeout=180)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_a_job_without_space_file_exits_2_at_once(slurm: Slurm, tmp_path: Path) -> None:
    job = submit(slurm, tmp_path, None, sbatch=["--time=2"])
    state = job.wait_end(120)
    assert (state["JobState"], state["ExitCode"]) == ("FAILED", "2:0"), job.text()
    assert "usage: sbatch" in job.text()
    assert not _ray_tmp_dirs(job)


def test_a_gpu_job_with_a_cpu_torch_exits_2_at_once(slurm: Slurm, tmp_path: Path) -> None:
    """./setup.sh on a login node without nvidia-smi installs CPU torch: a job that holds GPUs
    must then fail at once with the way out, not train every trial on the CPU. (This SLURM has
    no GPUs: the job is told it holds one the way SLURM tells it, SLURM_GPUS_ON_NODE.)"""
    import torch

    assert torch.version.cuda is None  # the CPU build these tests run with
    job = submit(
        slurm,
        tmp_path,
        REPO / "search_spaces" / "smoke.yaml",
        "--smoke",
        sbatch=["--time=10"],  # --signal=B:USR1@300: a shorter limit signals the job at once
        env={"SLURM_GPUS_ON_NODE": "1"},
    )
    state = job.wait_end(120)
    assert (state["JobState"], state["ExitCode"]) == ("FAILED", "2:0"), job.text()
    errors = [line for line in job.text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "is a CPU build" in errors[0] and "setup.sh" in errors[0], errors
    assert not _ray_tmp_dirs(job) and not (tmp_path / "results").exists()


def test_two_node_job_runs_the_smoke_sweep_on_one_ray_cluster(slurm: Slurm, tmp_path: Path):
    """One job on n1+n2 (1 CPU each, so two concurrent trials need both nodes): one Ray cluster
    of 2 nodes, trials on both, the dashboard behind token authentication, a clean end."""
    job = submit(
        slurm,
        tmp_path,
        REPO / "search_spaces" / "smoke.yaml",
        "--smoke",
        sbatch=["--nodes=2", "--cpus-per-task=1", "--time=20"],
    )
    port, token = job.dashboard()
    assert "SLURM_RESTART_COUNT=0" in job.text()
    assert re.search(r"Ray cluster up: 2 nodes alive", job.text()), job.text()[-3000:]

    _wait_for(lambda: _state_api(port, token, "nodes"), 60, "the state API", on_fail=job.text)
    status, _ = _http(port, "/api/v0/nodes")
    assert status == 401, "the dashboard answered a request without the token"
    status, _ = _http(port, "/api/v0/nodes", "0" * 64)
    assert status in (401, 403), "the dashboard accepted a wrong token"
    nodes = [n for n in _state_api(port, token, "nodes") if n["state"] == "ALIVE"]
    assert len(nodes) == 2, nodes

    # Which Ray node ran each trial: the trainable's pid (in its results) -> its actor's node.
    node_of_pid: dict[int, str] = {}
    while not job.done():
        for actor in _state_api(port, token, "actors"):
            if actor.get("pid"):
                node_of_pid[int(actor["pid"])] = actor["node_id"]
        time.sleep(2)

    state = job.state()
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), job.text()[-5000:]
    exp = job.storage / "smoke-smoke"  # a --smoke run: a folder of its own
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True
    assert len(summary["trials"]) == summary["num_samples"] == 3
    trial_nodes = {
        node_of_pid.get(r["pid"]) for rs in _all_results(exp).values() for r in rs[:1]
    } - {None}
    assert trial_nodes == {n["node_id"] for n in nodes}, (trial_nodes, nodes)
    assert not _ray_tmp_dirs(job), "Ray's temp dirs were left behind"
    assert not list(job.token_dir.glob(f"job-{job.id}.token")), "the finished job kept its token"


@dataclass
class RequeueCase:
    job: Job
    exp: Path
    num_samples: int
    max_steps: int
    finished_before: dict[str, int] = field(default_factory=dict)  # trial -> result.json bytes
    nodes_seen: set[str] = field(default_factory=set)
    seen_together: bool = False  # its dashboard answered while the other job's did too


def _trigger_time_limit(case: RequeueCase) -> bool:
    """Once a trial has a checkpoint: shorten the time limit so that SLURM's own warning
    (--signal=B:USR1@180) comes at its next check (<= 30 s), mid-trial."""
    if not any(rs for rs in _all_results(case.exp).values()):
        return False
    elapsed = _runtime_s(case.job.state()["RunTime"])
    limit_min = elapsed // 60 + 3  # 120-180 s left: <= 180, so the warning is due now
    case.job.slurm.run("scontrol", "update", f"JobId={case.job.id}", f"TimeLimit={limit_min}")
    return True


def _trigger_outside_requeue(case: RequeueCase) -> bool:
    """Once one trial has finished and the next has 2 checkpoints: `scontrol requeue`."""
    results = _all_results(case.exp)
    finished = {t for t, rs in results.items() if rs and rs[-1]["step"] >= case.max_steps}
    running = [t for t, rs in results.items() if t not in finished and len(rs) >= 2]
    if not (finished and running):
        return False
    for tid in finished:
        case.finished_before[tid] = _result_file(case.exp, tid).stat().st_size
    case.job.slurm.run("scontrol", "requeue", str(case.job.id))
    return True


@pytest.fixture(scope="module")
def requeued(slurm: Slurm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RequeueCase]:
    """Two jobs at once on node n1: one requeued by its time limit, one by `scontrol requeue`.

    Time limit: long trials (2 at once) and --signal=B:USR1@180; once a trial has a checkpoint
    the limit is cut to 120-180 s ahead, so SLURM's warning lands mid-trial on any machine speed;
    after the requeue the limit is set back so the restart runs to the end. Outside: 2 short
    trials one after the other, requeued once the first has finished."""
    tmp = tmp_path_factory.mktemp("requeue")
    one_node = ["-w", "n1", "--nodes=1", "--cpus-per-task=2"]
    limit = RequeueCase(
        submit(
            slurm,
            tmp / "limit",
            _space(tmp, "limit", num_samples=2, max_concurrent=2, max_steps=700),
            sbatch=[*one_node, "--time=30", "--signal=B:USR1@180"],
        ),
        tmp / "limit" / "results" / "limit",
        num_samples=2,
        max_steps=700,
    )
    outside = RequeueCase(
        submit(
            slurm,
            tmp / "outside",
            _space(tmp, "outside", num_samples=2, max_concurrent=1, max_steps=150),
            sbatch=[*one_node, "--time=30"],
        ),
        tmp / "outside" / "results" / "outside",
        num_samples=2,
        max_steps=150,
    )
    cases = {"limit": limit, "outside": outside}
    triggered, extended = {"limit": False, "outside": False}, False
    deadline = time.monotonic() + 900
    while not (limit.job.done() and outside.job.done()):
        assert time.monotonic() < deadline, limit.job.text()[-3000:] + outside.job.text()[-3000:]
        if not triggered["limit"]:
            triggered["limit"] = _trigger_time_limit(limit)
        elif not extended and int(limit.job.state().get("Restarts", 0)) >= 1:
            slurm.run("scontrol", "update", f"JobId={limit.job.id}", "TimeLimit=30")
            extended = True
        if not triggered["outside"]:
            triggered["outside"] = _trigger_outside_requeue(outside)
        _record_nodes(cases)
        time.sleep(1)
    assert all(triggered.values()), triggered
    return cases


def _record_nodes(cases: dict[str, RequeueCase]) -> None:
    """The Ray node ids each job's own dashboard lists while it runs (for the isolation test)."""
    answering = []
    for case in cases.values():
        match = re.findall(r"dashboard on \S+ at 127\.0\.0\.1:(\d+)", case.job.text())
        tokens = list(case.job.token_dir.glob(f"job-{case.job.id}.token"))
        if not (match and tokens):
            continue
        nodes = _state_api(int(match[-1]), tokens[0].read_text().strip(), "nodes")
        case.nodes_seen |= {n["node_id"] for n in nodes if n["state"] == "ALIVE"}
        if nodes:
            answering.append(case)
    if len(answering) == len(cases):
        for case in answering:
            case.seen_together = True


def _check_resumed(case: RequeueCase, expect_finished_before: bool) -> None:
    job = case.job
    state = job.state()
    assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), job.text()[-6000:]
    assert int(state["Restarts"]) >= 1
    log = job.text()
    assert "SLURM_RESTART_COUNT=0" in log and "SLURM_RESTART_COUNT=1" in log
    _check_experiment_resumed(case, log, expect_finished_before)


def _check_experiment_resumed(case: RequeueCase, log: str, expect_finished_before: bool) -> None:
    """The experiment `case.exp` (its driver's output: `log`) resumed after the requeue and
    finished every trial once: no finished trial ran again, an interrupted one went on from its
    checkpoint, wandb logged each step once."""
    exp = case.exp
    assert len(re.findall(r"resuming experiment", log)) >= 1, log[-4000:]

    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True
    assert len(summary["trials"]) == case.num_samples, [t["trial_id"] for t in summary["trials"]]
    assert all(t["status"] == "TERMINATED" for t in summary["trials"])
    assert all(t["steps_trained"] == case.max_steps for t in summary["trials"])

    # No finished trial ran twice: its results did not grow after the requeue.
    if expect_finished_before:
        assert case.finished_before
    for tid, size in case.finished_before.items():
        assert _result_file(exp, tid).stat().st_size == size, f"{tid} re-ran"

    # An interrupted trial resumed at its last checkpointed step (at most one interval lost).
    resumed = 0
    for tid, results in _all_results(exp).items():
        segments = _segments(results)
        for before, after in itertools.pairwise(segments):
            last = before[-1]["step"]
            start = after[0]["resumed_from_step"]
            assert start % EVERY_STEPS == 0 and last - EVERY_STEPS <= start <= last, (
                f"trial {tid}: reported step {last} before the restart, resumed from {start}"
            )
            assert after[0]["step"] == start + EVERY_STEPS
            resumed += start > 0
    assert resumed >= 1, "no trial was interrupted mid-way and resumed from a checkpoint"

    # The wandb run of every trial (resumed ones included) logged exactly Tune's steps, each
    # once: those of its result.json, de-duplicated (a trial resumed from an older checkpoint
    # reports again steps it reported before the requeue; wandb logs each step once), in
    # increasing order. (A run file whose writer SLURM killed before it wrote anything is a bare
    # 7-byte header: no id, no history; the resumed driver logs those steps again.)
    tune_steps = {
        t["trial_id"]: [r["step"] for r in _results(exp, t["trial_id"])] for t in summary["trials"]
    }
    check_steps_logged_once(exp / "wandb", tune_steps)
    assert all(max(steps) == case.max_steps for steps in tune_steps.values())


def test_requeue_at_the_time_limit_resumes(requeued: dict[str, RequeueCase]) -> None:
    case = requeued["limit"]
    log = case.job.text()
    assert re.search(r"SIGUSR1 at [\d.]+: stopping the driver", log), log[-4000:]
    assert "requeued job" in log
    _check_resumed(case, expect_finished_before=False)


def test_requeue_from_outside_resumes(requeued: dict[str, RequeueCase]) -> None:
    case = requeued["outside"]
    assert re.search(r"SIGTERM at [\d.]+ from SLURM \(requeue\)", case.job.text())
    _check_resumed(case, expect_finished_before=True)


def test_two_jobs_on_one_node_keep_their_own_ray_clusters(
    requeued: dict[str, RequeueCase],
) -> None:
    """Both jobs ran on n1 at once, each with its own ports and a 1-node Ray cluster; neither
    saw the other's node, and neither left Ray processes or temp dirs behind."""
    limit, outside = requeued["limit"].job, requeued["outside"].job
    ports = []
    for job in (limit, outside):
        text = job.text()
        assert set(re.findall(r"nodes=(\S+) head", text)) == {"n1"}
        assert re.findall(r"Ray cluster up: (\d+) nodes", text) == ["1"] * text.count(
            "Ray cluster up"
        )
        ports.append(set(re.findall(r"port block (\d+)", text)))
        assert not _ray_tmp_dirs(job)
    assert not ports[0] & ports[1], ports
    seen = [requeued["limit"].nodes_seen, requeued["outside"].nodes_seen]
    assert all(seen) and not seen[0] & seen[1], seen
    assert requeued["limit"].seen_together, "the two jobs never ran at the same time"


# ------------------------------------------------------------------------------- a study requeued

STUDY = "requeued-study"
STUDY_CELLS = ("synth-a-1kw", "synth-b-1kw")  # run one after the other, in this order
STUDY_STEPS = 100  # every search trial's budget (10 reports; synth-b is requeued in its second)


def _study_space(tmp: Path) -> Path:
    """Two cells (two synthetic corpora at 1,000 training words), one at a time; each 2 trials
    of STUDY_STEPS (synth-a's at once, synth-b's one after the other) and a final phase of 1
    configuration x 1 seed of 40 steps, scored on 50 test utterances."""
    doc = _space_doc("unused", num_samples=2, max_concurrent=1, max_steps=STUDY_STEPS)
    del doc["data"], doc["experiment"]["name"]  # each cell's: its corpus and its name
    synthetic = {"kind": "synthetic", "n_utterances": 800}
    doc["study"] = {
        "name": STUDY,
        "corpora": {
            "synth-a": {"train": {**synthetic, "seed": 0, "lexicon_size": 200}},
            "synth-b": {"train": {**synthetic, "seed": 1, "lexicon_size": 120}},
        },
        "sizes": [1000],
        "eval_utterances": 50,
        "max_concurrent_cells": 1,
        "overrides": {"corpora": {"synth-a": {"experiment": {"max_concurrent": 2}}}},
    }
    for corpus in doc["study"]["corpora"].values():
        corpus["test_fraction"] = 0.1
    doc["final"] = {"top_k": 1, "seeds": 1, "steps": 40, "valid_utterances": 50}
    return _write_space(tmp, STUDY, doc)


def _study_cells(root: Path) -> dict[str, dict[str, Any]]:
    """study.json's cells ({} before the study has written it)."""
    try:
        return json.loads(StudyLayout(root).study.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return {}


def _result_sizes(cell: Layout) -> dict[Path, int]:
    """Bytes of every result.json of a cell's search and final phase."""
    files = [*cell.tune.glob("trial_*/result.json"), *cell.final.tune.glob("trial_*/result.json")]
    return {f: f.stat().st_size for f in files}


@dataclass
class StudyAtRequeue:
    """What the study held when it was requeued."""

    cells: dict[str, dict[str, Any]]  # study.json's cells
    summary: str  # the finished cell's summary.json
    results: dict[Path, int]  # the finished cell's result.json files and their bytes
    drivers: list[int]  # PIDs of the study's driver and the running cell's


def _requeue_mid_study(case: RequeueCase, root: Path) -> StudyAtRequeue:
    """Once the first cell has finished and the second has one trial finished and the next
    reporting (`_trigger_outside_requeue`): `scontrol requeue`."""
    study, (first, second) = StudyLayout(root), STUDY_CELLS
    seen: list[StudyAtRequeue] = []

    def requeued() -> bool:
        assert not case.job.done(), f"the job ended before the requeue\n{case.job.text()[-4000:]}"
        cells = _study_cells(root)
        assert cells.get(second, {}).get("exit") is None, f"{second} ended first: {cells}"
        if cells.get(first, {}).get("exit") != 0:
            return False
        holders = [read_holder(study.lock)[0], read_holder(study.cell(second).lock)[0]]
        seen[:] = [
            StudyAtRequeue(
                cells=cells,
                summary=study.cell(first).summary.read_text(),
                results=_result_sizes(study.cell(first)),
                drivers=[h.pid for h in holders if h is not None],
            )
        ]
        return _trigger_outside_requeue(case)

    _wait_for(requeued, 900, f"{first} finished and {second} mid-search", on_fail=case.job.text)
    return seen[0]


def test_a_study_survives_a_requeue_and_finishes(slurm: Slurm, tmp_path: Path) -> None:
    """A study of two cells, one at a time, in one job on n1 (2 CPUs). Once the first cell has
    finished and the second has finished one trial and the next is reporting, `scontrol
    requeue`. The job restarts once and finishes (exit 0): the finished cell is not run again
    (its study.json record, summary and results untouched; its driver ran once), the
    interrupted cell resumes inside itself (exactly its 2 trials, the finished one not run
    again, the interrupted one from its checkpoint, wandb steps once) and runs its final phase;
    the study report lists both cells finished; no driver of the first run outlives it."""
    job = submit(
        slurm,
        tmp_path,
        _study_space(tmp_path),
        sbatch=["-w", "n1", "--nodes=1", "--cpus-per-task=2", "--time=30"],
    )
    root = job.storage / STUDY
    study, (first, second) = StudyLayout(root), STUDY_CELLS
    case = RequeueCase(job, study.cell(second).root, num_samples=2, max_steps=STUDY_STEPS)
    try:
        before = _requeue_mid_study(case, root)
        state = job.wait_end(900)
        log = job.text()
        assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), log[-6000:]
        assert int(state["Restarts"]) == 1, state
        assert re.findall(r"SLURM_RESTART_COUNT=(\d+) job=", log) == ["0", "1"], log[-6000:]
        assert re.search(r"SIGTERM at [\d.]+ from SLURM \(requeue\)", log), log[-6000:]
        restart = log.split("SLURM_RESTART_COUNT=1 job=", 1)[1]
        assert f"cell {first} finished before; not run again" in restart, restart[-4000:]
        assert "2 cells, 1 to run" in restart and f"cell {first} started" not in restart
        assert log.count("study done.") == 1 and "study done. 2 of 2 cells" in restart, log[-4000:]

        # The finished cell was not run again.
        cells = _study_cells(root)
        assert cells[first] == before.cells[first], (cells, before.cells)  # same ended_at
        assert [cells[name]["exit"] for name in STUDY_CELLS] == [0, 0], cells
        assert study.cell(first).summary.read_text() == before.summary
        assert _result_sizes(study.cell(first)) == before.results and len(before.results) == 3
        first_log = study.cell_log(first).read_text()
        assert first_log.count("starting experiment") == 1 and "resuming" not in first_log

        # The interrupted cell resumed inside itself: its trials once each, then its final phase.
        second_log = study.cell_log(second).read_text()
        assert second_log.count("starting experiment") == 1, second_log[-4000:]
        _check_experiment_resumed(case, second_log, expect_finished_before=True)
        trial_ids = [
            t["trial_id"]
            for t in json.loads(case.exp.joinpath("summary.json").read_text())["trials"]
        ]
        assert len(set(trial_ids)) == 2 and len(list(Layout(case.exp).tune.glob("trial_*"))) == 2
        assert len(list(Layout(case.exp).final.tune.glob("trial_*"))) == 1

        # Both cells have their final phase's test scores; the study report lists both.
        for name in STUDY_CELLS:
            summary = json.loads(study.cell(name).summary.read_text())
            assert summary["finished"] is True and summary["final"]["n_test"] == 50, name
            assert study.cell(name).report.is_file()
        rows = list(csv.DictReader(study.csv.open()))
        assert sorted((r["cell"], r["outcome"]) for r in rows) == [
            (name, "finished") for name in STUDY_CELLS
        ]
        assert "2 of 2 cells finished" in study.report.read_text()

        # Nothing of the first run is left: its drivers, Ray's temp dirs, the job's token.
        assert len(before.drivers) == 2 and not [p for p in before.drivers if _alive(p)]
        assert not _ray_tmp_dirs(job)
        assert not list(job.token_dir.glob(f"job-{job.id}.token"))
    finally:
        if not job.done():
            slurm.run("scancel", str(job.id), check=False)
            job.wait_end(120)
        for folder in _ray_tmp_dirs(job):
            shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------- a node dies


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def _ray_node_pids(job: Job, index: int) -> set[int]:
    """The processes of the job's Ray node `index`: its `ray start` wrapper (its PID file in the
    node's temp dir) and everything below it (raylet, GCS on the head, workers, trials)."""
    pid_file = Path("/tmp") / f"ray_{job.id}_{index}" / "wrapper.pid"
    if not pid_file.is_file() or not pid_file.read_text().strip():
        return set()
    kids, found, todo = _children(), set(), [int(pid_file.read_text())]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, []))
    return found


def _kill_all(pids: set[int]) -> float:
    """SIGKILL every process at once, as a node that dies; the time of the kill."""
    at = time.time()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return at


def test_a_node_that_dies_mid_sweep_and_then_the_head(slurm: Slurm, tmp_path: Path) -> None:
    """One job on n1+n2 (1 CPU each: one trial per node), `failure.max_retries: 0`. The Ray
    processes of n2 are SIGKILLed by PID mid-trial: the sweep goes on on n1, the lost trial
    resumes there from its latest checkpoint once n1 has a free CPU, and the loss spends no
    retry (with max_retries 0 a counted failure would end the trial in ERROR). Then the head's
    Ray is killed the same way under the driver: the job requeues itself and the restart resumes
    the experiment. Exactly num_samples trials end, none restarts from step 0 after a
    checkpoint, and wandb holds every step Tune recorded, once. Prints the figures that
    BENCHMARKS.md records for a node loss."""
    max_steps = 200
    job = submit(
        slurm,
        tmp_path,
        _space(
            tmp_path,
            "nodeloss",
            max_retries=0,
            num_samples=2,
            max_concurrent=2,
            max_steps=max_steps,
        ),
        sbatch=["--nodes=2", "--cpus-per-task=1", "--time=30"],
    )
    try:
        exp = job.storage / "nodeloss"
        job.wait_log(r"Ray cluster up: 2 nodes alive", 300)

        # 1. n2 dies once its trial has reported twice (a checkpoint at step 20)
        lost = ""
        last_before = 0
        n2: set[int] = set()

        def n2_trial_at_20() -> bool:
            nonlocal lost, last_before, n2
            if job.done():
                raise AssertionError(f"the job ended before n2 was killed\n{job.text()[-4000:]}")
            n2 = _ray_node_pids(job, 1)
            for tid, rs in _all_results(exp).items():
                if rs and rs[-1]["pid"] in n2 and 20 <= rs[-1]["step"] < max_steps:
                    lost, last_before = tid, rs[-1]["step"]
                    return True
            return False

        _wait_for(n2_trial_at_20, 300, "a trial on n2 at step 20", on_fail=job.text)
        killed_at = _kill_all(n2)

        def lost_trains_again() -> bool:
            return any(r["pid"] not in n2 for r in _results(exp, lost)) or job.done()

        _wait_for(lost_trains_again, 600, f"trial {lost} training again", on_fail=job.text)
        again = next(r for r in _results(exp, lost) if r["pid"] not in n2)
        # the last step n2 reported: it may have gone on past step 20 between the check and the kill
        last_before = max(r["step"] for r in _results(exp, lost) if r["pid"] in n2)
        error_file = Layout(exp).trial_dir(lost) / "error.txt"
        detected_at = error_file.stat().st_mtime

        # 2. the head's Ray dies under the driver, while the lost trial trains on n1
        head = _ray_node_pids(job, 0)
        assert head and again["pid"] in head, (again, head)
        _kill_all(head)
        state = job.wait_end(900)
        log = job.text()
        assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), log[-6000:]
        assert int(state["Restarts"]) >= 1 and "died under the driver" in log, log[-6000:]
        assert f"trial {lost} lost its node" in log and "not counted against" in log, log[-6000:]

        summary = json.loads((exp / "summary.json").read_text())
        assert summary["finished"] is True
        assert len(summary["trials"]) == 2, [t["trial_id"] for t in summary["trials"]]
        assert all(t["status"] == "TERMINATED" for t in summary["trials"]), summary["trials"]
        assert all(t["steps_trained"] == max_steps for t in summary["trials"])
        failures = next(t for t in summary["trials"] if t["trial_id"] == lost)["failures"]
        assert [f["node_lost"] for f in failures] == [True], failures

        # the lost trial went on from its latest checkpoint (at most one interval lost), and no
        # trial started again from step 0 after a checkpoint (the head's death included)
        assert last_before - EVERY_STEPS <= again["resumed_from_step"] <= last_before, again
        for tid, results in _all_results(exp).items():
            for before, after in itertools.pairwise(_segments(results)):
                if before[-1]["step"] >= EVERY_STEPS:
                    assert after[0]["resumed_from_step"] > 0, (tid, before[-1], after[0])
        tune_steps = {
            t["trial_id"]: [r["step"] for r in _results(exp, t["trial_id"])]
            for t in summary["trials"]
        }
        check_steps_logged_once(exp / "wandb", tune_steps)

        figures = {
            "kill_to_failure_recorded_s": round(detected_at - killed_at, 1),
            "kill_to_training_again_s": round(again["timestamp"] - killed_at, 1),
            "last_reported_step": last_before,
            "resumed_from_step": again["resumed_from_step"],
            "steps_recomputed_at_most": last_before - again["resumed_from_step"] + EVERY_STEPS,
        }
        print(f"node-loss figures: {json.dumps(figures)}")
    finally:  # a killed node leaves its Ray temp dir (/tmp is node-local): the test removes it
        if not job.done():
            slurm.run("scancel", str(job.id), check=False)
            job.wait_end(120)
        for folder in _ray_tmp_dirs(job):
            shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------- worker jobs

WORKER_SCRIPT = REPO / "cluster" / "ray_worker.wilkes3"


def submit_worker(slurm: Slurm, tmp: Path, join: str, sbatch: list[str]) -> Job:
    """`sbatch cluster/ray_worker.wilkes3 --join JOIN`, with the head's token folder (same tmp)."""
    log = tmp / "seg_tune_worker-%j.out"
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "ampere",
            "--gres=none",
            f"--output={log}",
            *sbatch,
            str(WORKER_SCRIPT),
            "--join",
            join,
        ],
        cwd=REPO,
        env=_job_env(slurm.env, tmp),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.strip().split(";")[0])
    return Job(
        slurm, job_id, tmp / f"seg_tune_worker-{job_id}.out", tmp / "results", tmp / "tokens"
    )


def _joined_nodes(job: Job, nth: int = 1) -> set[str]:
    """The Ray node ids a worker job's nth join gave (its log line)."""
    pattern = r"joined head job \d+ \(restart \d+\) at \S+: \d+ nodes: (.*)"
    _wait_for(
        lambda: len(re.findall(pattern, job.text())) >= nth,
        300,
        f"join {nth} of {job.id}",
        on_fail=job.text,
    )
    line = re.findall(pattern, job.text())[nth - 1]
    return {node.split("@")[0] for node in line.split()}


def test_worker_jobs_join_hand_back_trials_and_rejoin_a_requeued_head(
    slurm: Slurm, tmp_path: Path
) -> None:
    """A 1-CPU head job on n1 and two 1-CPU worker jobs submitted after it (one joins by the head's
    job id, one by the experiment folder): trials run on all three jobs' Ray nodes. Worker A is
    cancelled while a trial trains there: the trial resumes on another node from its latest
    checkpoint, and with `failure.max_retries: 0` it still finishes (no failure counted). Then the
    head is requeued from outside: worker B stops its Ray node, rejoins the restarted cluster by
    itself, and exits 0 once the experiment has finished with exactly num_samples trials."""
    num_samples, max_steps = 5, 250
    space = _space(
        tmp_path,
        "elastic",
        max_retries=0,
        num_samples=num_samples,
        max_concurrent=num_samples,
        max_steps=max_steps,
    )
    one_cpu = ["--nodes=1", "--cpus-per-task=1", "--time=30"]
    head = submit(slurm, tmp_path, space, sbatch=["-w", "n1", *one_cpu])
    workers: list[Job] = []
    exp = head.storage / "elastic"
    try:
        head_nodes = {
            n.split("@")[0]
            for n in head.wait_log(r"Ray cluster up: 1 nodes alive: (.*)", 300)[1].split()
        }
        a = submit_worker(slurm, tmp_path, str(head.id), ["-w", "n2", *one_cpu])
        _wait_for(Layout(exp).head_pointer.is_file, 300, "ray_head.json", on_fail=head.text)
        b = submit_worker(slurm, tmp_path, str(exp), ["-w", "n2", *one_cpu])
        workers = [a, b]
        a_nodes, b_nodes = _joined_nodes(a), _joined_nodes(b)
        assert len(head_nodes | a_nodes | b_nodes) == 3, (head_nodes, a_nodes, b_nodes)

        # 1. worker A goes (scancel) while a trial on it has a checkpoint and has not finished
        moved, last_before = "", 0

        def trial_on_a() -> bool:
            nonlocal moved, last_before
            assert not head.done(), head.text()[-4000:]
            for tid, rs in _all_results(exp).items():
                if rs and rs[-1]["node_id"] in a_nodes and 20 <= rs[-1]["step"] < max_steps - 60:
                    moved, last_before = tid, rs[-1]["step"]
                    return True
            return False

        _wait_for(trial_on_a, 400, "a trial at step 20 on worker A", on_fail=head.text)
        slurm.run("scancel", str(a.id))
        cancelled_at = time.time()
        a.wait_end(120)

        def moved_trains_again() -> bool:
            return any(r["node_id"] not in a_nodes for r in _results(exp, moved)) or head.done()

        _wait_for(moved_trains_again, 400, f"trial {moved} training elsewhere", on_fail=head.text)
        again = next(r for r in _results(exp, moved) if r["node_id"] not in a_nodes)
        last_before = max(r["step"] for r in _results(exp, moved) if r["node_id"] in a_nodes)
        assert last_before - EVERY_STEPS <= again["resumed_from_step"] <= last_before, again

        # 2. the head is requeued: B rejoins the new cluster by itself
        assert not head.done(), head.text()[-4000:]
        slurm.run("scontrol", "requeue", str(head.id))
        requeued_at = time.time()
        b_again = _joined_nodes(b, nth=2)
        rejoined_at = time.time()  # (within the 1 s poll of _wait_for)
        state = head.wait_end(900)
        text = head.text()
        assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), text[-6000:]
        assert int(state["Restarts"]) == 1, state
        b_state = b.wait_end(120)
        b_log = b.text()
        assert (b_state["JobState"], b_state["ExitCode"]) == ("COMPLETED", "0:0"), b_log[-4000:]
        assert "restart 1" in b_log and "has ended (finished)" in b_log, b_log[-4000:]
        # (Ray logs one when it cannot drain a node whose head has gone: the requeue from outside)
        drains = b_log.count("Failed to mark the local node as draining")
        assert b_log.count("Traceback") == drains <= 1, b_log[-4000:]

        summary = json.loads((exp / "summary.json").read_text())
        assert summary["finished"] is True
        assert len(summary["trials"]) == num_samples, [t["trial_id"] for t in summary["trials"]]
        assert len(list(Layout(exp).tune.glob("trial_*"))) == num_samples
        assert all(t["status"] == "TERMINATED" for t in summary["trials"]), summary["trials"]
        assert all(t["steps_trained"] == max_steps for t in summary["trials"])
        ran_on = {r["node_id"] for rs in _all_results(exp).values() for r in rs}
        for name, nodes in (("head", head_nodes), ("A", a_nodes), ("B", b_nodes | b_again)):
            assert ran_on & nodes, f"no trial ran on {name}'s nodes {nodes}: {ran_on}"
        for job in (head, b):  # (A was killed: SLURM's KillWait, 5 s here, may cut its clean-up)
            assert not _ray_tmp_dirs(job), f"job {job.id} left its Ray temp dirs"
        figures = {
            "scancel_to_training_elsewhere_s": round(again["timestamp"] - cancelled_at, 1),
            "last_reported_step": last_before,
            "resumed_from_step": again["resumed_from_step"],
            "head_requeue_to_worker_rejoined_s": round(rejoined_at - requeued_at, 1),
        }
        print(f"\nworker-job figures: {json.dumps(figures)}")  # BENCHMARKS.md records them
        head_file = json.loads(Layout(exp).head_pointer.read_text())["head_file"]
        assert (
            "state=ended" in Path(head_file).read_text()
            and "ended=finished" in Path(head_file).read_text()
        )
    finally:
        for job in (head, *workers):
            if not job.done():
                slurm.run("scancel", str(job.id), check=False)
        for job in (head, *workers):
            job.wait_end(120)
            for folder in _ray_tmp_dirs(job):
                shutil.rmtree(folder, ignore_errors=True)
