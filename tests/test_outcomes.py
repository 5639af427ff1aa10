"""Honest outcomes of `python -m seg_tune.run`: bad data refused before Ray, the exit status of a
sweep whose trials fail, post-sweep steps that fail without eating the results, and a changed
space file refused on resume. Real driver, real local Ray cluster, real trial failures (planted
with tests/faults/sitecustomize.py, which patches nothing in seg_tune's files)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO
from test_run import _env, _space, _start

from seg_tune.cli.run import EXIT_FAILED, EXIT_FINISHED, _final_line
from seg_tune.sweep import trial_log
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.load import load_space, smoke
from seg_tune.sweep.spec import changed_keys
from seg_tune.sweep.summary import FORMAT as SUMMARY_FORMAT

FAULTS = REPO / "tests" / "faults"


def _run(space: Path, storage: Path, *extra: str, env: dict | None = None, timeout: float = 120):
    cmd = [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(storage), *extra]
    return subprocess.run(
        cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- bad data, before Ray


def _dataset_without_the_column(tmp: Path) -> dict:
    import datasets

    folder = tmp / "ds"
    datasets.Dataset.from_dict({"text": ["a b ;eword"]}).save_to_disk(str(folder))
    return {"kind": "hf", "name": str(folder), "column": "phonemized_utterance"}


def _tagged(tmp: Path, content: bytes) -> dict:
    path = tmp / "corpus.txt"
    path.write_bytes(content)
    return {"kind": "tagged", "path": str(path)}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            lambda tmp: _tagged(tmp, b"a b ;eword c ;eword\nd \xff e ;eword\n"),
            "corpus.txt:2: bytes that are not UTF-8",
        ),
        (lambda tmp: _tagged(tmp, b"\n  \n\n"), "corpus.txt: empty corpus"),
        (
            lambda tmp: _tagged(tmp, b"a b ;eword\n;eword ;eword\n"),
            "corpus.txt:2: the line holds only word-boundary tokens",
        ),
        (_dataset_without_the_column, "no column 'phonemized_utterance'"),
    ],
    ids=["not-utf8", "empty", "boundaries-only", "hf-column-missing"],
)
def test_bad_data_exits_2_before_ray_starts(tmp_path: Path, source, expected: str) -> None:
    space = _space(tmp_path, data={"train": source(tmp_path), "valid_fraction": 0.5})
    result = _run(space, tmp_path / "results")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "Ray dashboard" not in result.stdout  # refused before a cluster was started
    assert not (tmp_path / "results").exists()  # nothing written


def test_a_corpus_shorter_than_two_blocks_exits_2(tmp_path: Path) -> None:
    space = _space(
        tmp_path,
        data={"train": {"kind": "synthetic", "n_utterances": 8, "seed": 0}, "valid_fraction": 0.5},
    )
    result = _run(space, tmp_path / "results")
    assert result.returncode == 2
    assert "fewer than two blocks of training.block_size 64" in result.stderr


# --------------------------------------------------------------------------- failed trials


def test_a_sweep_whose_trials_all_fail_exits_1_and_says_why(tmp_path: Path) -> None:
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    env = _env(PYTHONPATH=str(FAULTS), SEG_TUNE_TEST_FAIL="planted failure: no GPU on fire")
    proc = _start(REPO / "search_spaces/smoke.yaml", storage, log, "--smoke", env=env)
    assert proc.wait(timeout=400) == EXIT_FAILED, log.read_text()[-4000:]
    out = log.read_text()
    exp = storage / "smoke-smoke"  # a --smoke run has a folder of its own
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["format"] == SUMMARY_FORMAT and summary["outcome"] == "failed"
    assert summary["finished"] is False and summary["n_failed"] == 3
    assert [t["status"] for t in summary["trials"]] == ["ERROR"] * 3
    for trial in summary["trials"]:
        error = trial["error"]
        assert error["reason"] == "RuntimeError: planted failure: no GPU on fire"
        assert Path(error["file"]).is_file() and Path(error["file"]).is_relative_to(exp)
        assert "planted failure" in Path(error["file"]).read_text()
        # the trial's own log, on storage: the failed attempt's last lines end in its traceback
        assert Path(error["log"]) == Layout(exp).trial_log(trial["trial_id"])
        assert error["log_tail"][0].startswith(trial_log.HEADER), error["log_tail"]
        assert "RuntimeError: planted failure: no GPU on fire" in error["log_tail"][-1]
        assert any(line.startswith("Traceback") for line in error["log_tail"])
    (final,) = [line for line in out.splitlines() if line.startswith("seg_tune.run: FAILED: ")]
    match = re.fullmatch(
        r"seg_tune.run: FAILED: 3 of 3 trials failed \(failure.allow_failed_trials: 0\); "
        r"first: trial (\w+): (.+); error file: (.+); its log: (.+)",
        final,
    )
    assert match, final
    named = next(t for t in summary["trials"] if t["trial_id"] == match[1])
    assert list(match.groups()[1:]) == [named["error"][k] for k in ("reason", "file", "log")]
    assert "done." not in out
    report = (exp / "report.md").read_text()
    failed = report.split("## Failed trials", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in failed.splitlines() if line.startswith("| `")]
    assert len(rows) == 3 and all("planted failure" in row for row in rows), rows
    assert failed.count("the last lines of its log</summary>") == 3


def test_exit_status_counts_failures_against_the_allowance() -> None:
    """The final line's arithmetic: 0 within failure.allow_failed_trials, 1 beyond it or when a
    post-sweep step failed."""
    failed = [SimpleNamespace(trial_id="t1", error="E: x", error_file="/f", error_log=None)]

    def spec(allowed: int) -> SimpleNamespace:
        return SimpleNamespace(
            failure=SimpleNamespace(allow_failed_trials=allowed),
            experiment=SimpleNamespace(num_samples=4),
        )

    def outcome(failed_trials: list, steps: list[str]) -> SimpleNamespace:
        state = "failed" if failed_trials else "finished"
        return SimpleNamespace(
            outcome=state, failed=failed_trials, best_line="best", step_failures=steps
        )

    exp = Path("/exp")
    assert _final_line(outcome([], []), spec(0), exp, []) == EXIT_FINISHED
    assert _final_line(outcome(failed, []), spec(0), exp, []) == EXIT_FAILED
    assert _final_line(outcome(failed, []), spec(1), exp, []) == EXIT_FINISHED
    assert _final_line(outcome([], ["report: OSError: disk full"]), spec(0), exp, []) == 1
    assert _final_line(outcome(failed * 2, []), spec(1), exp, []) == EXIT_FAILED


# --------------------------------------------------------------------------- post-sweep steps


def test_a_failing_hub_push_keeps_summary_model_and_report(tmp_path: Path) -> None:
    """The hub is unreachable here (HF_HUB_OFFLINE): the push fails, everything before it stays
    written, and the sweep exits 1 naming the step."""
    space = _space(
        tmp_path,
        replace={"scheduler": {"type": "fifo"}},
        experiment={"num_samples": 1, "max_concurrent": 1, "max_steps": 20},
        hub={"repo_id": "someone/seg-tune-test", "private": True},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    proc = _start(space, storage, log, env=_env(HF_HUB_OFFLINE="1", HF_TOKEN="hf_x"))
    assert proc.wait(timeout=400) == EXIT_FAILED, log.read_text()[-4000:]
    out = log.read_text()
    assert "seg_tune.run: FAILED after the sweep: hub push: " in out
    exp = storage / "smoke"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcome"] == "finished" and summary["n_failed"] == 0
    assert (exp / "best_model" / "model.safetensors").is_file()
    assert (exp / "best_model" / "segmentation.json").is_file()
    assert summary["best"]["trial_id"] in (exp / "report.md").read_text()


# --------------------------------------------------------------------------- resume


def test_a_changed_space_file_is_refused_on_resume(tmp_path: Path) -> None:
    """An experiment folder started with num_samples 3 is not resumed with 4 (Tune would keep 3
    and every resume would end 'stopped'), nor by a --smoke run sent into it with --name; wandb
    changes are fine."""
    space = _space(tmp_path)
    storage = tmp_path / "results"
    exp = storage / "smoke"
    exp.mkdir(parents=True)
    (exp / "space.json").write_text(json.dumps(load_space(space).to_dict()))
    doc = yaml.safe_load(space.read_text())
    doc["experiment"]["num_samples"] = 4
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    result = _run(changed, storage)
    assert result.returncode == 2
    assert "experiment.num_samples" in result.stderr and "--fresh" in result.stderr
    result = _run(space, storage, "--smoke", "--name", "smoke")  # a smoke run into the real folder
    assert result.returncode == 2 and "give it its own --name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    old = load_space(space).to_dict()
    doc = yaml.safe_load(space.read_text())
    doc["wandb"] = {"mode": "disabled"}
    doc["failure"] = {"max_retries": 0, "allow_failed_trials": 2}
    doc["experiment"]["max_concurrent"] = 1
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text(yaml.safe_dump(doc))
    assert changed_keys(old, load_space(relaxed).to_dict()) == []
    doc["space"]["training.lr"]["max"] = 9e-3
    doc["training"]["batch_size"] = 16
    relaxed.write_text(yaml.safe_dump(doc))
    assert changed_keys(old, load_space(relaxed).to_dict()) == [
        "base.training.batch_size",
        "space.training.lr.max",
    ]


def test_a_smoke_run_has_a_folder_and_wandb_group_of_its_own(tmp_path: Path) -> None:
    """`run f.yaml --smoke` then `run f.yaml`: the real run must not resume the finished smoke run
    (it would end 'stopped', exit 3, on every try), nor share its wandb group."""
    space = _space(tmp_path)
    spec = load_space(space)
    small = smoke(spec)
    assert (spec.experiment.name, small.experiment.name) == ("smoke", "smoke-smoke")
    assert (spec.wandb.group, small.wandb.group) == ("smoke", "smoke-smoke")
    doc = yaml.safe_load(space.read_text())
    doc["wandb"] = {"group": "mine", "mode": "disabled"}
    space.write_text(yaml.safe_dump(doc))
    assert smoke(load_space(space)).wandb.group == "mine"  # a group the file sets is kept


def test_failure_history_reads_every_attempt_of_a_tune_error_file() -> None:
    """Tune appends `Failure # N (occurred at DATE)` and the error to error.txt at each failure."""
    from seg_tune.sweep.results import failure_history

    text = (
        "Failure # 1 (occurred at 2026-12-03_06-10-01)\n"
        "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n"
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        "Failure # 2 (occurred at 2026-12-03_06-12-30)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        # a lost node is not counted (seg_tune.sweep.faults): Tune's number repeats
        "Failure # 2 (occurred at 2026-12-03_06-15-00)\n"
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: ImplicitFunc\n"
        "The actor died because its node has died. Node Id: 3f2a\n"
    )
    assert failure_history(text) == [
        {
            "attempt": 1,
            "at": "2026-12-03_06-10-01",
            "reason": "ActorDiedError: The actor died unexpectedly before finishing this task.",
            "node_lost": False,
        },
        {
            "attempt": 2,
            "at": "2026-12-03_06-12-30",
            "reason": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "node_lost": False,
        },
        {
            "attempt": 3,
            "at": "2026-12-03_06-15-00",
            "reason": "ActorDiedError: The actor died unexpectedly before finishing this task.",
            "node_lost": True,
        },
    ]
    assert failure_history("") == []
