"""Real sweeps for what the README promises beyond the smoke run, and the `seg-tune` command.

- a W&B sweep file (grid over choices, an `epochs` budget) with Ray's own ASHA
  (`scheduler.promotion: continue`, `seg_tune.sweep.asha.PersistentASHA`): the whole grid once, trials
  stopped early, every other trial trained for exactly ceil(epochs x batches per epoch) steps;
- the random searcher with the default pausing ASHA (`PromotingASHA` with
  `PauseAwareVariantGenerator`) on a Ray cluster the test starts itself and the run joins with
  `--address`; interrupted (SIGINT) while a trial waits at a rung, its report then shows the
  trial PAUSED in an interrupted, resumable experiment; the same command then finishes it;
- the `seg-tune` console script is `python -m seg_tune.SUBCOMMAND` (not slow: no Ray).

Timing on this 2-core machine (shared): the grid sweep 30-40 s, the joined-cluster sweep (both
runs) 80-110 s, the console script 2-10 s; about 2 minutes for the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import REPO
from ray_cluster import VENV_BIN, ray_head
from test_run import _results, _space, _start, _wait_for, check_pausing_quota

from seg_tune.sweep.asha import FORMAT_VERSION, read_state

# ------------------------------------------------------------------------------- helpers


def _state(exp: Path) -> dict[str, Any]:
    """The scheduler's state (snapshot and journal), or {} while it is missing."""
    try:
        return read_state(exp / "scheduler_state.json")
    except (OSError, json.JSONDecodeError):
        return {}


class _TrainingTrials(threading.Thread):
    """Watches a process tree (a Ray head's): the most trial processes inside a trial's
    `train()` at one moment, sampled every 0.1 s. Ray titles a worker `ray::<actor>.<method>`
    while it runs an actor method, and Tune's function trainables run in `train()` while Tune
    waits for their next result, i.e. while the trial is RUNNING (not paused, not cached)."""

    TITLE = "ray::ImplicitFunc.train"

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.most = 0
        self.busy_samples = 0  # samples with at least one trial training
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                tree = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.Error:
                continue
            training = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    training += " ".join(p.cmdline()).startswith(self.TITLE)
            self.most = max(self.most, training)
            self.busy_samples += training > 0

    def __enter__(self) -> _TrainingTrials:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()


# ------------------------------------------------------------------------------- grid + epochs


PHONEMES = ("p", "t", "k", "a", "i", "u", "m", "s")
# One good learning rate, first in grid order, and two that barely move the model: at each rung
# the good trial ranks first, and the third trial (it starts when a slot frees, so after the
# good one has reached rung 5) ranks below the cutoff there, so at least one trial stops.
GRID_LRS = [2.0e-3, 1.0e-6, 2.0e-6]
EPOCHS = 1.5
BATCH, BLOCK = 8, 32


def _tagged_corpus(path: Path, n_utterances: int, seed: int) -> list[int]:
    """A tagged corpus (`;eword` after every word) of utterances of pseudo-words drawn from one
    fixed lexicon (whatever the seed); returns the number of phonemes of each line."""
    lex = random.Random(0)
    lexicon = [" ".join(lex.choice(PHONEMES) for _ in range(lex.randint(2, 4))) for _ in range(30)]
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(lexicon))]  # Zipfian
    lines, sizes = [], []
    for _ in range(n_utterances):
        words = rng.choices(lexicon, weights, k=rng.randint(1, 5))
        lines.append(" ".join(f"{w} ;eword" for w in words))
        sizes.append(sum(len(w.split()) for w in words))
    path.write_text("\n".join(lines) + "\n")
    return sizes


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_grid_file_with_ray_asha_and_an_epoch_budget(tmp_path: Path) -> None:
    """A W&B sweep file: `method: grid` over a choice of learning rates, `epochs: 1.5`, with
    `scheduler.promotion: continue` (Ray's ASHA). Exactly one trial per grid point, ASHA stopped
    at least one at a rung where it ranked below the best, never paused anyone, and each trial
    it did not stop trained for ceil(1.5 x batches per epoch) steps, counted here from the
    corpus (well under experiment.max_steps, so the budget came from the epochs)."""
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    n = 300
    sizes = _tagged_corpus(train, n, seed=1)
    # The training stream: a boundary token before, between and after the utterances.
    tokens = 1 + sum(size + 1 for size in sizes)
    per_epoch = (tokens - BLOCK) // BLOCK // BATCH  # whole batches of whole blocks, any offset
    while (EPOCHS * per_epoch).is_integer():  # an odd count: ceil() has something to round
        n += 1
        sizes = _tagged_corpus(train, n, seed=1)
        tokens = 1 + sum(size + 1 for size in sizes)
        per_epoch = (tokens - BLOCK) // BLOCK // BATCH
    budget = math.ceil(EPOCHS * per_epoch)
    _tagged_corpus(valid, 40, seed=2)
    max_steps = 100
    assert 10 < budget < max_steps // 2, budget
    doc = {
        "method": "grid",
        "metric": {"name": "valid.loss", "goal": "minimize"},
        "parameters": {"lr": {"values": GRID_LRS}, "epochs": {"value": EPOCHS}},
        "experiment": {"name": "grid", "max_concurrent": 2, "max_steps": max_steps},
        "data": {
            "train": {"kind": "tagged", "path": str(train)},
            "valid": {"kind": "tagged", "path": str(valid)},
        },
        "model": {"preset": "400k", "n_positions": 64},
        "training": {
            "batch_size": BATCH,
            "block_size": BLOCK,
            "warmup_steps": 2,
            "eval_every_steps": 5,
            "checkpoint_every_steps": 5,
            "segment_utterances": 0,
            "log_every_steps": 5,
            "threads": 1,
        },
        "scheduler": {
            "type": "asha",
            "promotion": "continue",
            "grace_period_steps": 5,
            "reduction_factor": 2,
        },
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "failure": {"max_retries": 0},
        "checkpoints": {"keep": 1},
        "wandb": {"mode": "disabled"},
    }
    space = tmp_path / "sweep.yaml"
    space.write_text(yaml.safe_dump(doc))
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    proc = _start(space, storage, log, "--no-report")
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert f"{tokens:,} training" in out, out[-3000:]  # the driver counted the same stream

    exp = storage / "grid"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcome"] == "finished" and summary["finished"] is True
    trials = summary["trials"]
    assert len(trials) == len(GRID_LRS)
    assert sorted(t["config"]["training.lr"] for t in trials) == pytest.approx(sorted(GRID_LRS))
    assert {t["config"]["training.epochs"] for t in trials} == {EPOCHS}
    assert {t["status"] for t in trials} == {"TERMINATED"}

    state = _state(exp)
    assert state["format"] == FORMAT_VERSION and "brackets" in state  # Ray's ASHA, not pausing
    stopped = state["stopped"]
    assert stopped, "ASHA stopped no trial early"
    (bracket,) = state["brackets"]
    rungs = {int(m): rec for m, rec in bracket["rungs"]}
    for t in trials:
        tid = t["trial_id"]
        results = _results(exp, tid)
        assert len({r["pid"] for r in results}) == 1, f"{tid} ran in several processes"
        assert {r["resumed_from_step"] for r in results} == {0}, f"{tid} was paused or restored"
        if tid in stopped:
            rung = stopped[tid]
            assert t["steps_trained"] == rung < budget and t["stopped_early"] is True, t
            assert rungs[rung][tid] < max(rungs[rung].values()), (tid, rungs[rung])
        else:
            assert t["steps_trained"] == budget and t["stopped_early"] is False, t
            assert results[-1]["step"] == budget
    (good,) = [t for t in trials if t["config"]["training.lr"] == pytest.approx(GRID_LRS[0])]
    assert good["steps_trained"] == budget, good  # the best trial at every rung went on


# ------------------------------------------------------------------------------- joined cluster


@pytest.mark.ray
@pytest.mark.slow
def test_random_pausing_sweep_joins_a_cluster_is_interrupted_while_paused_and_resumes(
    tmp_path: Path,
) -> None:
    """The random searcher with the default pausing ASHA (3 samples, 2 at a time, rungs at 10
    and 30 of 40 steps, rf 3) on a Ray head started here with 3 CPUs, joined with --address and
    the head's token. SIGINT once a trial waits at a rung: exit 3, and the report (the driver's
    and `seg-tune report`'s) shows the experiment interrupted (resumable) and that trial PAUSED.
    The same command then finishes the sweep: exactly 3 trials, ASHA's quota (one trial leaves
    rung 10 under it, the best there; `check_pausing_quota`), never more than 2 trials training at once
    though the cluster had CPUs for 3, every trial process one of the head's workers."""
    space = _space(
        tmp_path,
        experiment={
            "num_samples": 3,
            "max_concurrent": 2,
            "max_steps": 40,
            "metric": "valid_loss",
            "mode": "min",
        },
        training={"eval_every_steps": 10, "checkpoint_every_steps": 20, "segment_utterances": 0},
        scheduler={"type": "asha", "grace_period_steps": 10, "reduction_factor": 3},
        searcher={"type": "random", "seed": 0},
        wandb={"mode": "disabled"},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    with ray_head(tmp_path, num_cpus=3) as head, _TrainingTrials(head.pid) as watch:
        args = ("--address", head.address)
        proc = _start(space, storage, log, *args, env=head.env)

        def paused() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return bool(_state(exp).get("paused"))

        # (Tune marks the trial PAUSED in the same controller step that asks the scheduler, and
        # a stop takes effect between steps: the stop finds it PAUSED)
        _wait_for(paused, 300, "a trial paused at a rung")
        tree = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
        assert not [c for c in tree if "raylet" in c or "gcs_server" in c], tree  # joined
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 3, log.read_text()[-4000:]
        out = log.read_text()
        assert "run the same command again to resume" in out
        assert "Tuner.restore" not in out and "Trials did not complete" not in out  # Ray's advice
        assert "from another machine" not in out  # the hint for a cluster of its own

        waiting = _state(exp)["paused"]  # trial -> rung, as the stop left it
        assert waiting
        summary = json.loads((exp / "summary.json").read_text())
        assert summary["outcome"] == "stopped" and summary["finished"] is False
        status = {t["trial_id"]: t["status"] for t in summary["trials"]}
        assert {status[tid] for tid in waiting} == {"PAUSED"}, (waiting, status)
        driver_report = (exp / "report.md").read_text()
        made = subprocess.run(
            [str(VENV_BIN / "seg-tune"), "report", str(exp)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0 and made.stdout.strip() == str(exp / "report.md"), made
        for report in (driver_report, (exp / "report.md").read_text()):
            assert "interrupted (resumable)" in report
            for tid in waiting:
                rows = [line for line in report.splitlines() if f"`{tid}`" in line]
                assert any("| PAUSED |" in row for row in rows), (tid, rows)

        proc = _start(space, storage, log, *args, env=head.env)
        assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
        watch.done.set()
        first, resumed = log.read_text().split("resuming experiment smoke")
        # Tune's status table shows the searched keys, after the resume as before it
        assert "training.lr" in first and "training.lr" in resumed, resumed[-3000:]

        summary = json.loads((exp / "summary.json").read_text())
        assert summary["outcome"] == "finished" and summary["num_samples"] == 3
        trials = summary["trials"]
        assert len(trials) == 3 and {t["status"] for t in trials} == {"TERMINATED"}
        state = _state(exp)
        assert state["kind"] == "promotion" and state["paused"] == {}
        assert any(what == "pause" for _, _, what in state["decisions"])
        check_pausing_quota(state, trials, budget=40)
        for tid, rung in waiting.items():  # a paused trial went on from its rung, if at all
            later = [r for r in _results(exp, tid) if r["step"] > rung]
            assert all(r["resumed_from_step"] >= rung for r in later), (tid, rung, later[:1])

        results = {t["trial_id"]: _results(exp, t["trial_id"]) for t in trials}
        assert watch.busy_samples > 0, "no trial process seen training"
        assert watch.most <= 2, f"{watch.most} trials trained at once (max_concurrent 2)"
        # Every trial process was a worker of the head started here: its log is in its session.
        logs = {p.name for p in head.temp_dir.glob("session_2*/logs/worker-*.out")}
        pids = {r["pid"] for rs in results.values() for r in rs}
        missing = [pid for pid in pids if not any(n.endswith(f"-{pid}.out") for n in logs)]
        assert pids and not missing, (missing, sorted(logs)[:5])


# ------------------------------------------------------------------------------- console script


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_seg_tune_console_script_is_python_m_seg_tune(tmp_path: Path) -> None:
    """`seg-tune SUBCOMMAND ...` (the installed console script) prints and exits exactly as
    `python -m seg_tune.SUBCOMMAND ...`; `seg-tune --help` lists subcommands that exist; an
    unknown subcommand exits 2 with one line."""
    exe = VENV_BIN / "seg-tune"
    assert exe.is_file(), "the seg-tune console script is not installed (pip install -e .)"
    top = _run([str(exe), "--help"])
    assert top.returncode == 0 and top.stderr == "", top
    names = re.findall(r"^  (\w+) ", top.stdout, flags=re.M)
    assert {"run", "train", "segment", "score", "baseline", "report"} <= set(names), top.stdout
    for name in names:
        assert (REPO / "seg_tune" / f"{name}.py").is_file(), name

    gold, pred = tmp_path / "gold.txt", tmp_path / "pred.txt"
    gold.write_text("a b ;eword c ;eword\nd ;eword e f ;eword\n")
    pred.write_text("a b ;eword c ;eword\nd e f ;eword\n")
    for args in (
        ["score", str(gold), str(pred), "--json"],
        ["score", str(gold), str(pred)],
        ["score", "--help"],
    ):
        script = _run([str(exe), *args])
        module = _run([sys.executable, "-m", f"seg_tune.{args[0]}", *args[1:]])
        assert script.returncode == 0, script
        assert (script.returncode, script.stdout, script.stderr) == (
            module.returncode,
            module.stdout,
            module.stderr,
        )
    scores = json.loads(_run([str(exe), "score", str(gold), str(pred), "--json"]).stdout)
    # gold words ab c | d ef, predicted ab c | def: 2 of 3 predicted words right, of 4 gold;
    # inner boundaries: gold 2 (after b, after d), predicted 1 (after b), 1 right
    assert scores["token_precision"] == pytest.approx(2 / 3)
    assert scores["token_recall"] == pytest.approx(1 / 2)
    assert scores["boundary_noedge_precision"] == pytest.approx(1.0)
    assert scores["boundary_noedge_fscore"] == pytest.approx(2 / 3)

    bad = _run([str(exe), "nosuch"])
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert len(bad.stderr.strip().splitlines()) == 1 and "nosuch" in bad.stderr, bad.stderr
    bare = _run([str(exe)])
    assert bare.returncode == 2 and "usage: seg-tune" in bare.stdout, bare


# ------------------------------------------------------------------------------- reused processes


def _attempt_pids(log: Path) -> list[int]:
    """The process of each attempt in a trial's log, in order (`trial_log.header`)."""
    return [
        int(line.rsplit(" pid ", 1)[1])
        for line in log.read_text().splitlines()
        if line.startswith("=== seg_tune attempt ")
    ]


@pytest.mark.ray
@pytest.mark.slow
def test_paused_trials_resume_in_reused_processes_as_if_never_paused(tmp_path: Path) -> None:
    """The default pausing ASHA with one slot (4 samples, rungs at 10 and 30 of 60 steps, rf 3,
    dropout on): trial processes are reused (`resources.reuse_processes`, Tune's reuse_actors),
    so one process trains every trial in turn and a promoted trial resumes from its rung's
    checkpoint in a process that trained other trials meanwhile. Its results equal those of the
    same configuration trained without a pause in this test's process, step by step; each
    attempt's first result says when its first step began; a pause writes one line to the trial
    log, not Ray's SystemExit traceback."""
    from seg_tune.metrics import FIRST_STEP_AT, REPORTED_AT
    from seg_tune.sweep.load import load_space
    from seg_tune.train import LocalSession, train_loop

    space = _space(
        tmp_path,
        experiment={"num_samples": 4, "max_concurrent": 1, "max_steps": 60},
        training={"eval_every_steps": 10, "checkpoint_every_steps": 30, "segment_utterances": 30},
        scheduler={"type": "asha", "grace_period_steps": 10, "reduction_factor": 3},
        space={
            "training.lr": {"type": "loguniform", "min": 1.0e-3, "max": 5.0e-3},
            "model.dropout": {"type": "choice", "values": [0.1]},
        },
        wandb={"mode": "disabled"},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    proc = _start(space, storage, log, "--no-report")
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]

    summary = json.loads((exp / "summary.json").read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert len(trials) == 4 and {t["status"] for t in trials.values()} == {"TERMINATED"}
    pids = {tid: _attempt_pids(exp / "logs" / f"{tid}.log") for tid in trials}
    attempts = sum(len(p) for p in pids.values())
    assert len({pid for p in pids.values() for pid in p}) < attempts, pids  # reused
    promoted = [tid for tid, p in pids.items() if len(p) > 1]
    assert promoted, pids  # at least the rung's best went on after a pause
    for tid in promoted:
        others = {pid for other, p in pids.items() if other != tid for pid in p}
        assert set(pids[tid][1:]) & others, (tid, pids)  # resumed where other trials trained
        text = (exp / "logs" / f"{tid}.log").read_text()
        assert "attempt stopped by Ray Tune" in text and "SystemExit" not in text, text[-2000:]

    spec = load_space(space)
    full = max(promoted, key=lambda tid: max(r["step"] for r in _results(exp, tid)))
    results = _results(exp, full)
    assert results[-1]["step"] == 60
    starts = [r for r in results if FIRST_STEP_AT in r]
    assert len(starts) == len(pids[full]), (len(starts), pids[full])  # one per attempt
    assert starts[0]["resumed_from_step"] == 0
    assert all(r["resumed_from_step"] > 0 for r in starts[1:])
    times = [r[REPORTED_AT] for r in results]  # float times, in order, after each first step
    assert times == sorted(times) and all(
        abs(t - r["timestamp"]) < 2 for t, r in zip(times, results, strict=True)
    )
    assert all(r[REPORTED_AT] > r[FIRST_STEP_AT] for r in starts)
    params = dict(results[0]["config"])
    cfg = spec.trial_config(params).with_overrides({"training.threads": 1})
    straight = LocalSession(tmp_path / "straight", keep=1)
    train_loop(cfg, straight, progress=False)
    by_step = {m["step"]: m for m in straight.history}
    assert sorted(by_step) == [r["step"] for r in results]
    for r in results:
        for key in ("train_loss", "valid_loss"):
            assert r[key] == pytest.approx(by_step[r["step"]][key], rel=1e-5, abs=1e-6), (key, r)
