"""The tuning service on a real local Ray cluster: `python -m seg_tune.run`.

Every test here starts the real driver as a subprocess (its own Ray cluster, real checkpoints,
real wandb offline files) and checks what it leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import DRIVERS, REPO, fill_disk
from transformers import AutoModelForCausalLM, AutoTokenizer
from wandb_files import check_steps_logged_once, offline_runs, steps_by_run

from seg_tune.metrics import SCORE_KEYS
from seg_tune.sweep.asha import read_state
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.tracking import LOST_CHECKPOINT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAKE_WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex chars, like a real one
FAKE_HF_TOKEN = "hf_FAKEtokenFAKEtokenFAKEtokenFAKE1234"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **extra}


def _start(
    space: Path, storage: Path, log: Path, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(storage), *extra]
    out = log.open("ab")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env or _env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    DRIVERS.append(proc)  # killed with its process group after the test, should it fail
    return proc


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _checkpoint_steps(exp: Path) -> dict[str, int]:
    """trial id -> newest checkpointed step, from every checkpoint folder of the experiment."""
    found: dict[str, int] = {}
    for meta in [
        *exp.glob("tune/trial_*/checkpoint_*/meta.json"),
        *exp.glob("train_runs/*/checkpoint_*/meta.json"),
    ]:
        trial = meta.parent.parent.name.removeprefix("trial_")
        try:
            step = json.loads(meta.read_text())["step"]
        except (json.JSONDecodeError, OSError):
            continue
        found[trial] = max(found.get(trial, 0), step)
    return found


def _results(exp: Path, trial_id: str) -> list[dict]:
    path = exp / "tune" / f"trial_{trial_id}" / "result.json"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def _space(tmp_path: Path, replace: dict | None = None, **merge: dict) -> Path:
    """smoke.yaml with sections merged into (`merge`) or replaced (`replace`)."""
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    for section, values in merge.items():
        doc[section] = {**doc.get(section, {}), **values}
    doc.update(replace or {})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _fifo_space(tmp_path: Path, samples: int, max_steps: int, **merge: dict) -> Path:
    """smoke.yaml as the fault tests run it: `samples` trials at once, FIFO, an evaluation and a
    checkpoint every 10 steps; `merge`: more sections merged in."""
    return _space(
        tmp_path,
        experiment={"num_samples": samples, "max_concurrent": samples, "max_steps": max_steps},
        training={"eval_every_steps": 10, "checkpoint_every_steps": 10},
        replace={"scheduler": {"type": "fifo"}},
        **merge,
    )


def _stop_and_check(proc: subprocess.Popen, sig: int, log: Path) -> None:
    """Send `sig`; the driver must exit with 3 within 30 s and leave no Ray process behind."""
    family = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    assert any("raylet" in " ".join(p.cmdline()) for p in family[1:]), "no local Ray cluster found"
    proc.send_signal(sig)
    rc = proc.wait(timeout=30)  # within 30 s, or TimeoutExpired fails the test
    assert rc == 3, log.read_text()[-3000:]
    _, alive = psutil.wait_procs(family[1:], timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    out = log.read_text()
    assert "run the same command again to resume" in out
    assert "Tuner.restore" not in out, "Ray's own resume advice reached the terminal"


def check_pausing_quota(state: dict, trials: list[dict], budget: int) -> str:
    """ASHA by pausing, 3 samples, 2 at a time, rungs at 10 and 30, rf 3: floor(3/3) = 1 trial
    leaves rung 10 under the quota. Once no sample is left, the end game may also resume a
    paused trial into a free slot (a "fill", beyond the quota): the best paused one, so the
    rung's best always goes on, by the quota or as a fill. At most 2 reach rung 30, where
    floor(2/3) = 0 lets none go on on arrival: every trial that reached the budget waited at 30
    and was resumed from its step-30 checkpoint. Every trial that stopped early stopped where it
    paused. Returns a trial that reached the budget."""
    assert state["paused"] == {}
    promoted = set(state["promoted"]["10"])
    filled = set(state.get("filled", {}).get("10", []))
    assert len(promoted) <= 1 and not promoted & filled
    rung10 = state["rungs"][0][1]
    steps = {t["trial_id"]: t["steps_trained"] for t in trials}
    left_10 = {tid for tid, n in steps.items() if n > 10}
    assert left_10 <= promoted | filled and left_10
    assert max(rung10, key=rung10.get) in left_10
    assert state["stopped"] == {tid: n for tid, n in steps.items() if n < budget}
    assert all(n in (10, 30, budget) for n in steps.values()), steps
    fills = [tid for tid, _, what in state["decisions"] if what == "fill"]
    assert sorted(fills) == sorted(tid for ids in state.get("filled", {}).values() for tid in ids)
    return next(tid for tid, n in steps.items() if n == budget)


def test_smoke_end_to_end_with_planted_secrets(tmp_path: Path) -> None:
    """smoke.yaml --smoke: results, HF best model, report, wandb offline runs; secrets nowhere."""
    storage = tmp_path / "results"
    old = storage / "smoke-smoke"  # smoke.yaml --smoke: a folder of its own
    old.mkdir(parents=True)
    (old / "marker.txt").write_text("an earlier experiment")
    log = tmp_path / "driver.log"
    env = _env(WANDB_API_KEY=FAKE_WANDB_KEY, HF_TOKEN=FAKE_HF_TOKEN)
    proc = _start(REPO / "search_spaces/smoke.yaml", storage, log, "--smoke", "--fresh", env=env)
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    out = log.read_text()

    moved = [p for p in storage.iterdir() if p.name.startswith("smoke-smoke.old-")]
    assert len(moved) == 1 and (moved[0] / "marker.txt").read_text() == "an earlier experiment"

    exp = storage / "smoke-smoke"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["metric"] == "seg_boundary_noedge_fscore" and summary["mode"] == "max"
    assert summary["finished"] is True and summary["num_samples"] == 3
    assert len(summary["trials"]) == 3
    assert {t["status"] for t in summary["trials"]} == {"TERMINATED"}
    best = summary["best"]
    scores = [t["metrics"]["seg_boundary_noedge_fscore"] for t in summary["trials"]]
    assert best["metrics"]["seg_boundary_noedge_fscore"] == max(scores)
    for trial in summary["trials"]:
        assert set(trial) >= {
            "trial_id",
            "status",
            "config",
            "metrics",
            "steps_trained",
            "stopped_early",
        }
        assert trial["steps_trained"] == trial["metrics"]["step"] > 0
        assert set(trial["config"]) == {"training.lr", "model.dropout"}
        assert all(f"seg_{k}" in trial["metrics"] for k in SCORE_KEYS)
        steps = [h["step"] for h in trial["history"]]
        assert steps == sorted(set(steps)) and steps[-1] == trial["steps_trained"]
        assert trial["stopped_early"] == (trial["steps_trained"] < 40)
    state = read_state(exp / "scheduler_state.json")
    assert [step for step, _ in state["rungs"]] == [10, 30]
    winner = check_pausing_quota(state, summary["trials"], budget=40)
    assert 30 in {r["resumed_from_step"] for r in _results(exp, winner)}
    # Issue 17's end game: once the third trial has started, the first trial to pause while one
    # other runs leaves a slot free, and a paused trial fills it (whatever the order of arrival)
    fills = [(tid, rung) for tid, rung, what in state["decisions"] if what == "fill"]
    assert fills, state["decisions"]
    for tid, rung in fills:  # a fill goes on from its rung checkpoint
        later = [r for r in _results(exp, tid) if r["step"] > rung]
        assert later and all(r["resumed_from_step"] >= rung for r in later), (tid, later[:1])
    assert f"best trial {best['trial_id']}" in out and "report.md" in out
    assert "Ray dashboard: http://127.0.0.1:" in out

    model = AutoModelForCausalLM.from_pretrained(exp / "best_model")
    tok = AutoTokenizer.from_pretrained(exp / "best_model")
    assert model.config.vocab_size == len(tok) and tok.bos_token == "UTT_BOUNDARY"
    seg = json.loads((exp / "best_model" / "segmentation.json").read_text())
    # 8 cues x (spike, threshold, threshold_oracle) + majority x (vote_spike, vote_threshold)
    assert len({(r["cue"], r["strategy"]) for r in seg["table"]}) == len(seg["table"]) == 26
    assert set(seg["tp_baseline"]) >= {
        "forward/relative",
        "mi/relative",
    }
    report = (exp / "report.md").read_text()
    assert (
        best["trial_id"] in report and (exp / "plots" / "learning_curves.png").stat().st_size > 5000
    )

    runs = offline_runs(exp / "wandb")
    assert sorted(r.run_id for r in runs) == sorted(t["trial_id"] for t in summary["trials"])
    for run in runs:
        trial = next(t for t in summary["trials"] if t["trial_id"] == run.run_id)
        assert run.group == "smoke-smoke" and run.steps == [h["step"] for h in trial["history"]]
        assert run.config["training.lr"] == pytest.approx(trial["config"]["training.lr"])

    for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
        assert secret not in out
        leaks = [p for p in exp.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert leaks == []


def test_signals_stop_gracefully_and_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT, then SIGUSR1, then SIGTERM mid-sweep; each run resumes the last; the sweep ends
    with exactly num_samples trials, no finished trial re-run, interrupted trials resumed at
    the checkpointed step it had at each stop (per stop and trial), ASHA's rungs kept, and each
    trial's wandb steps exactly Tune's, each once."""
    space = _space(
        tmp_path,
        experiment={"num_samples": 3, "max_concurrent": 2, "max_steps": 120},
        training={"eval_every_steps": 10, "checkpoint_every_steps": 10},
        scheduler={"type": "asha", "grace_period_steps": 30, "reduction_factor": 2},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    # (stop, trial, its newest checkpointed step then or 0, its result lines then), every stop
    interrupted: list[tuple[str, str, int, int]] = []
    done_before: dict[str, int] = {}  # trial -> size of its result.json when already finished
    rungs_before: list[dict] = []
    paused_at: dict[str, int] = {}  # trial -> the rung it first waited at when a stop came
    for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):
        baseline = _checkpoint_steps(exp)
        proc = _start(space, storage, log)
        _wait_for(
            lambda b=baseline: _checkpoint_steps(exp).items() - b.items(), 240, "a new checkpoint"
        )
        _stop_and_check(proc, sig, log)
        summary = json.loads((exp / "summary.json").read_text())
        assert summary["finished"] is False
        ckpts = _checkpoint_steps(exp)
        state = read_state(exp / "scheduler_state.json")
        for trial in summary["trials"]:
            tid = trial["trial_id"]
            if trial["status"] == "TERMINATED":
                done_before.setdefault(
                    tid, (exp / "tune" / f"trial_{tid}" / "result.json").stat().st_size
                )
            # held at a rung by ASHA (Tune may still show it RUNNING while it saves): it waits,
            # it was not cut off; checked below
            elif tid not in state["paused"]:
                lines = len(_results(exp, tid))
                interrupted.append((sig.name, tid, ckpts.get(tid, 0), lines))
        rungs_before = state["rungs"]
        for tid, step in state["paused"].items():  # waiting at a rung when the stop came
            paused_at.setdefault(tid, step)

    proc = _start(space, storage, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    assert log.read_text().count("resuming experiment smoke") == 3

    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True and len(summary["trials"]) == 3
    for tid, size in done_before.items():
        assert (exp / "tune" / f"trial_{tid}" / "result.json").stat().st_size == size, (
            f"{tid} re-ran"
        )
    assert any(step > 0 for _, _, step, _ in interrupted), f"none cut off mid-way: {interrupted}"
    steps_trained = {t["trial_id"]: t["steps_trained"] for t in summary["trials"]}
    for stop, tid, step, lines in interrupted:
        results = _results(exp, tid)
        after = results[lines:]  # what the trial reported after this stop
        if not after:  # cut off between its last result and its end: nothing was left to do
            assert results and results[-1]["step"] == step == steps_trained[tid], (
                f"trial {tid} never ran after {stop} (checkpointed step {step})"
            )
            continue
        # Tune may not have registered the newest checkpoint when the stop came: at most one
        # checkpoint interval (10 steps) is lost, never more.
        start = after[0]["resumed_from_step"]
        assert step - 10 <= start <= step, (
            f"trial {tid} checkpointed step {step} before {stop} but then resumed from {start}"
        )

    for (
        tid,
        step,
    ) in paused_at.items():  # a paused trial goes on from its rung checkpoint, if at all
        later = [r for r in _results(exp, tid) if r["step"] > step]
        assert all(r["resumed_from_step"] >= step for r in later), (tid, step, later[:1])

    rungs_after = {m: rec for m, rec in read_state(exp / "scheduler_state.json")["rungs"]}
    for milestone, recorded in rungs_before:
        assert recorded.items() <= rungs_after[milestone].items()

    # Each trial's wandb steps, over all its run files (a file that wandb had written nothing to
    # when a stop came is a bare header: no id, no history), are Tune's: the steps of its
    # result.json, de-duplicated (a trial resumed from an older checkpoint reports again steps it
    # had reported before the stop; wandb logs each step once), in increasing order.
    check_steps_logged_once(
        exp / "wandb", {tid: [r["step"] for r in _results(exp, tid)] for tid in steps_trained}
    )


def _one_trial_stopped_past_step_30(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A sweep of one 60-step trial keeping 4 checkpoints, stopped by SIGINT once it has
    checkpointed step 30: its space, storage and driver log."""
    space = _fifo_space(tmp_path, 1, 60, checkpoints={"keep": 4})
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    proc = _start(space, storage, log)
    exp = storage / "smoke"
    _wait_for(lambda: max(_checkpoint_steps(exp).values(), default=0) >= 30, 240, "step 30")
    _stop_and_check(proc, signal.SIGINT, log)
    return space, storage, log


def test_a_trial_whose_checkpoint_is_corrupt_resumes_from_an_older_one(tmp_path: Path) -> None:
    """Issue 13.3 with Tune's own checkpoints: stop a sweep, damage every checkpoint of its
    trial but the oldest (Tune restores its newest registered one), and run again. The trial
    falls back to the oldest, without a failed attempt: each bad folder tried is moved to
    <name>.corrupt and an empty one is left for Tune to prune, and the sweep finishes."""
    space, storage, log = _one_trial_stopped_past_step_30(tmp_path)
    exp = storage / "smoke"
    (trial_dir,) = exp.glob("tune/trial_*")
    folders = sorted(trial_dir.glob("checkpoint_*"))
    assert len(folders) >= 3, folders
    oldest = json.loads((folders[0] / "meta.json").read_text())["step"]
    for folder in folders[1:]:
        state = folder / "state.pt"
        state.write_bytes(state.read_bytes()[:1000])
    lines_before = len(_results(exp, trial_dir.name[6:]))

    proc = _start(space, storage, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    summary = json.loads((exp / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 60
    assert trial["error"] is None
    after = _results(exp, trial["trial_id"])[lines_before:]
    assert after and after[0]["resumed_from_step"] == oldest, after[:1]
    aside = sorted(trial_dir.glob("checkpoint_*.corrupt"))
    assert aside, sorted(p.name for p in trial_dir.iterdir())
    for moved in aside:
        assert (moved / "meta.json").is_file()  # moved whole, nothing deleted
        place = moved.with_name(moved.name.removesuffix(".corrupt"))
        assert not place.exists() or not any(place.iterdir())  # empty, or pruned by Tune
    out = log.read_text()
    assert out.count("cannot be read (") >= len(aside)
    assert f"resuming from step {oldest}" in out
    best = json.loads((exp / "best_model" / "segmentation.json").read_text())
    assert best  # the export found a readable checkpoint, not a set-aside one


def test_a_sigkilled_driver_loses_no_wandb_step(tmp_path: Path) -> None:
    """Issue 13.4: SIGKILL the driver's whole process group mid-sweep (the OOM killer, a node
    reset): nothing is flushed, wandb's service dies with it. The same command takes over the
    stale lock and resumes; every trial's wandb history then holds each step Tune recorded,
    exactly once."""
    space = _fifo_space(tmp_path, 2, 60)
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    proc = _start(space, storage, log)
    _wait_for(
        lambda: len([s for s in _checkpoint_steps(exp).values() if s >= 20]) == 2,
        240,
        "two trials at step 20",
    )
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:  # what left the group too (as a job's cgroup is killed whole)
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait(timeout=30)
    psutil.wait_procs(family, timeout=10)
    assert (exp / "driver.lock").exists()  # nobody cleaned up

    proc = _start(space, storage, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert "took over a stale lock" in out, out[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True and len(summary["trials"]) == 2
    tune_steps = {
        t["trial_id"]: [r["step"] for r in _results(exp, t["trial_id"])] for t in summary["trials"]
    }
    assert all(max(steps) == 60 for steps in tune_steps.values())
    # The kill can land between Ray pruning a trial's checkpoint and saving the state that names
    # it (ResumeFromAKeptCheckpoint): that trial resumes from a newer one, with a warning naming
    # both steps; Tune never saved the results between them, which wandb may have logged.
    for tid, lost, kept in re.findall(
        rf"trial (\w+): its latest checkpoint checkpoint_\d+ \(step (\d+)\) {LOST_CHECKPOINT}; "
        r"it resumes from checkpoint_\d+ \(step (\d+)\)",
        out,
    ):
        between = set(range(int(lost) + 1, int(kept) + 1))
        tune_steps[tid] += [s for s in steps_by_run(exp / "wandb")[tid] if s in between]
    check_steps_logged_once(exp / "wandb", tune_steps)


def test_a_trial_whose_latest_checkpoint_was_pruned_resumes_from_the_newest_kept(
    tmp_path: Path,
) -> None:
    """The race above made certain: Ray prunes a trial's old checkpoints before it saves the
    experiment state that names the new latest, so a driver killed in between leaves a state
    whose latest checkpoint is gone, and Tune alone fails that trial on every retry. Stop a
    sweep and move each checkpoint of its trial to a later name: the state names a folder that
    is gone, newer ones are kept. Run again: the trial resumes from the newest kept, with one
    warning line, no failed attempt, and the sweep finishes."""
    space, storage, log = _one_trial_stopped_past_step_30(tmp_path)
    exp = storage / "smoke"
    (trial_dir,) = exp.glob("tune/trial_*")
    moved = {}  # new name -> step
    for folder in sorted(trial_dir.glob("checkpoint_*"), reverse=True):
        later = f"checkpoint_{int(folder.name.removeprefix('checkpoint_')) + 10:06d}"
        os.rename(folder, folder.with_name(later))
        moved[later] = json.loads((trial_dir / later / "meta.json").read_text())["step"]
    newest, step = max(moved.items(), key=lambda kv: kv[1])
    trial_id = trial_dir.name.removeprefix("trial_")
    lines_before = len(_results(exp, trial_id))

    proc = _start(space, storage, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    (line,) = [x for x in log.read_text().splitlines() if LOST_CHECKPOINT in x]
    assert f"trial {trial_id}: its latest checkpoint checkpoint_" in line, line
    assert f"it resumes from {newest} (step {step}), the newest kept" in line, line
    summary = json.loads((exp / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 60
    assert trial["error"] is None
    after = _results(exp, trial_id)[lines_before:]
    assert after and after[0]["resumed_from_step"] == step, after[:1]
    check_steps_logged_once(exp / "wandb", {trial_id: [r["step"] for r in _results(exp, trial_id)]})


def test_a_storage_filling_up_stops_the_sweep_whole_and_it_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    """Issue 13.5 on a real small filesystem (a tmpfs): fill it mid-sweep. The driver stops
    gracefully with one line naming the folder and its free space (exit 1), the state it had
    is whole, a start while it is still full is refused before Ray, and once space is freed the
    same command resumes: exactly num_samples trials, none from scratch that had a checkpoint."""
    space = _fifo_space(tmp_path, 2, 80)
    storage, log = small_disk / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    proc = _start(space, storage, log)
    # step 20 of each: Tune may not have registered the newest checkpoint when the stop comes,
    # so a trial resumes from up to 10 steps before it, never from scratch
    _wait_for(
        lambda: len([s for s in _checkpoint_steps(exp).values() if s >= 20]) == 2,
        240,
        "two trials at step 20",
    )
    ballast = fill_disk(small_disk, 20 * 2**20)  # 20 MiB left: under the 64 MiB floor
    assert proc.wait(timeout=60) == 1, log.read_text()[-3000:]
    out = log.read_text()
    (line,) = [x for x in out.splitlines() if x.startswith("seg_tune.run: FAILED: storage")]
    assert f"storage {exp}: " in line and " MiB free, under the 64.0 MiB" in line
    assert "run the same command again to resume" in line
    summary = json.loads((exp / "summary.json").read_text())  # whole, and says stopped
    assert summary["finished"] is False
    states = list((exp / "tune").glob("experiment_state*.json"))
    assert states and all(json.loads(path.read_text()) for path in states)  # Tune's, whole
    before = _checkpoint_steps(exp)

    refused = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(storage)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"error: storage {exp}: " in refused.stderr
    assert "Ray dashboard" not in refused.stdout  # refused before Ray started

    ballast.unlink()
    proc = _start(space, storage, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["finished"] is True and len(summary["trials"]) == 2
    for trial in summary["trials"]:
        assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 80
        restarts = [r["resumed_from_step"] for r in _results(exp, trial["trial_id"])]
        resumed = [r for r in restarts if r]
        assert resumed and min(resumed) >= before[trial["trial_id"]] - 10, (restarts, before)


def test_a_trial_killed_like_the_oom_killer_is_retried_and_its_failure_kept(
    tmp_path: Path,
) -> None:
    """Issue 13.5: SIGKILL a trial's process mid-run (what the OOM killer does). It counts as one
    failed attempt, is retried from its checkpoint, and summary.json keeps the attempt's reason
    though the trial then finished."""
    space = _fifo_space(tmp_path, 1, 60, failure={"max_retries": 1})
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    proc = _start(space, storage, log)
    _wait_for(lambda: max(_checkpoint_steps(exp).values(), default=0) >= 20, 240, "step 20")
    step = max(_checkpoint_steps(exp).values())
    (trainable,) = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "ImplicitFunc" in " ".join(p.cmdline())
    ]
    trainable.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    summary = json.loads((exp / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 60
    assert trial["error"] is None
    (failure,) = trial["failures"]
    assert failure["attempt"] == 1 and "died" in failure["reason"], failure
    # the killed attempt's last lines in the trial's log: its header, then its evaluations up
    # to the last one before the kill (a SIGKILLed process writes nothing more)
    tail = failure["log_tail"]
    assert tail and tail[0].startswith("=== seg_tune attempt ") and " trial on " in tail[0], tail
    steps = [int(m[1]) for line in tail if (m := re.match(r"step=(\d+) ", line))]
    assert steps and step <= max(steps) <= 60, (steps, step, tail)
    log = Layout(exp).trial_log(trial["trial_id"]).read_text()
    assert log.count("=== seg_tune attempt ") == 2 and "from step " in log  # the retry resumed
    restarts = [r["resumed_from_step"] for r in _results(exp, trial["trial_id"])]
    assert any(step - 10 <= r <= step and r > 0 for r in restarts), (restarts, step)
    report = (exp / "report.md").read_text()
    assert "## Retried attempts" in report and failure["at"] in report


def test_killed_train_worker_resumes_from_checkpoint(tmp_path: Path) -> None:
    """A 2-worker DDP trial (Ray Train path): SIGKILL one Train worker mid-trial; Train restarts
    the worker group from the last checkpoint and the sweep completes."""
    space = _fifo_space(
        tmp_path,
        1,
        80,
        resources={"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
        failure={"max_retries": 2},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    proc = _start(space, storage, log)

    def registered() -> list[int]:  # checkpointed steps Tune has received (via Train)
        results = [r for d in exp.glob("tune/trial_*") for r in _results(exp, d.name[6:])]
        return [r["step"] for r in results if r.get("checkpoint_path")]

    _wait_for(lambda: (exp / "summary.json").exists() or registered(), 300, "a checkpoint")
    step = max(registered())
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "RayTrainWorker" in " ".join(p.cmdline())
    ]
    assert len(workers) == 2, [
        p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)
    ]
    workers[-1].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    summary = json.loads((exp / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 80
    history = _results(exp, trial["trial_id"])
    assert any(r["resumed_from_step"] >= step > 0 for r in history), [
        r["resumed_from_step"] for r in history
    ]
    # Tune's time_total_s starts again from 0 in the retried attempt (Tune holds no checkpoint
    # of a Ray Train trial), so summary.json's compute_s sums every result's time_this_iter_s
    retried = next(r for r in history if r["resumed_from_step"] > 0)
    assert retried["time_total_s"] == pytest.approx(retried["time_this_iter_s"])
    assert trial["compute_s"] == pytest.approx(sum(r["time_this_iter_s"] for r in history))
    assert trial["compute_s"] > history[-1]["time_total_s"] + 0.5
    compute = summary["compute"]
    assert (compute["unit"], compute["per_trial"]) == ("CPU", 2)  # 2 workers x 1 CPU
    assert compute["hours"] == pytest.approx(2 * trial["compute_s"] / 3600)


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("space", {"training.lr": {"type": "loguniform", "min": 0, "max": 1}}, "space.training.lr"),
        ("space", {"model.dropout": {"type": "choice", "values": []}}, "model.dropout"),
        ("space", {"training.lr": {"type": "uniform", "min": 2, "max": 1}}, "training.lr"),
        ("experiment", {"metric": "valid_accuracy"}, "valid_accuracy"),
        ("experiment", {"num_samplez": 3}, "num_samplez"),
        (
            "data",
            {"train": {"kind": "tagged", "path": "/no/such/corpus.txt"}},
            "/no/such/corpus.txt",
        ),
        ("training", {"lr": "fast"}, "training.lr"),
    ],
)
def test_bad_space_files_exit_2_in_seconds(
    tmp_path: Path, section: str, values: dict, expected: str
) -> None:
    space = (
        _space(tmp_path, replace={section: values})
        if section == "space"
        else _space(tmp_path, **{section: values})
    )
    result = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, (
        result.stderr
    )
    assert not (tmp_path / "smoke").exists()


def _intervals(exp: Path, trial_id: str) -> tuple[float, float]:
    """When a trial trained: (start, end) in seconds, from Tune's per-report time stamps."""
    history = _results(exp, trial_id)
    first, last = history[0], history[-1]
    return first["timestamp"] - first["time_total_s"], float(last["timestamp"])


# A CPU torch that says it is a CUDA build (tests/faults/sitecustomize.py): GPU trials pass
# seg_tune's refusal of a CPU torch, and train on the CPU (there is no GPU here).
FAKE_CUDA_BUILD = {
    "PYTHONPATH": str(REPO / "tests" / "faults"),
    "SEG_TUNE_TEST_FAKE_CUDA_BUILD": "1",
}


def test_fractional_gpus_share_a_gpu(tmp_path: Path) -> None:
    """gpus_per_worker 0.5 on a cluster with one GPU and CPUs for three: two trials share the GPU
    at a time, never three. (No GPU here: Ray is told the node has one and the trials' torch
    falls back to the CPU; only Ray's GPU accounting is under test.)"""
    space = _space(
        tmp_path,
        experiment={"num_samples": 3, "max_concurrent": 3},
        resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.5},
        wandb={"mode": "disabled"},
        replace={"scheduler": {"type": "fifo"}},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    env = _env(RAY_OVERRIDE_RESOURCES=json.dumps({"GPU": 1, "CPU": 3}), **FAKE_CUDA_BUILD)
    proc = _start(space, storage, log, "--no-report", env=env)
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    exp = storage / "smoke"
    summary = json.loads((exp / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED"] * 3
    # Shrink each interval by the 1 s resolution of Tune's time stamps (and a margin), then count
    # the most trials training at one moment.
    spans = [_intervals(exp, t["trial_id"]) for t in summary["trials"]]
    inner = [(start + 2, end - 2) for start, end in spans]
    edges = sorted([(s, 1) for s, e in inner if e > s] + [(e, -1) for s, e in inner if e > s])
    running, most = 0, 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most == 2, spans


def test_gpu_trials_with_a_cpu_torch_are_refused_before_ray_starts(tmp_path: Path) -> None:
    """Trials that ask for GPUs while torch is a CPU build (./setup.sh on a login node without
    nvidia-smi installs one) would all train on the CPU: exit 2 at once, saying how to get the
    CUDA build, with nothing started or written."""
    import torch

    assert torch.version.cuda is None  # the CPU build these tests run with
    space = _space(
        tmp_path,
        experiment={"num_samples": 1, "max_concurrent": 1},
        resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1},
        wandb={"mode": "disabled"},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    proc = _start(space, storage, log, env=_env(RAY_OVERRIDE_RESOURCES='{"GPU": 1}'))
    assert proc.wait(timeout=120) == 2, log.read_text()[-4000:]
    out = log.read_text()
    [line] = [line for line in out.splitlines() if line.startswith("error:")]
    assert "resources.gpus_per_worker = 1" in line and "CPU build" in line
    assert "TORCH_SPEC=torch ./setup.sh" in line
    assert "Ray" not in out and not storage.exists()


def test_trial_that_fits_nowhere_exits_2(tmp_path: Path) -> None:
    """A trial asking for more GPUs than any node has: one line naming the key, exit 2, instead
    of Tune waiting forever for resources."""
    space = _space(tmp_path, resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 2})
    env = _env(RAY_OVERRIDE_RESOURCES=json.dumps({"GPU": 1}), **FAKE_CUDA_BUILD)
    result = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(tmp_path / "r")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpus_per_worker" in lines[0] and "1 GPUs" in lines[0], result.stderr
    assert str(space) in lines[0]
    assert not (tmp_path / "r" / "smoke").exists()
