"""The final phase on a real local Ray cluster: `python -m seg_tune.run` with a test split.

After the search, the best configurations are retrained with new seeds as Tune trials and
scored once on the test split. Checked here against the real driver: the test file is opened
only by the driver, never while the search runs (an audit hook in every process of the run
logs each open of it); exactly top_k x seeds final runs; a SIGTERM in the middle of the final
phase, then a resume that neither restarts a run from scratch nor trains one twice; wandb runs
grouped as `<experiment>-final`; the summary's `final` section, best_model/ and the report.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_run import _env, _start, _stop_and_check, _wait_for
from wandb_files import offline_runs

from seg_tune.corpus import load_tagged, synthetic_corpus, write_tagged
from seg_tune.metrics import SCORE_KEYS
from seg_tune.sweep.summary import FORMAT as SUMMARY_FORMAT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Loaded in every Python process of the run (driver, Ray workers): logs each open of the test
# split's file with the process id and the time.
_HOOK = """
import os, sys, time
_TARGET = os.environ.get("SEG_TUNE_TEST_WATCH")
_LOG = os.environ.get("SEG_TUNE_TEST_WATCH_LOG")
def _hook(event, args):
    if event == "open" and _TARGET and args and isinstance(args[0], (str, bytes, os.PathLike)):
        try:
            path = os.path.abspath(os.fsdecode(args[0]))
        except Exception:
            return
        if path == _TARGET:
            with open(_LOG, "a") as fh:
                fh.write(f"{os.getpid()} {time.time():.3f}\\n")
if _TARGET:
    sys.addaudithook(_hook)
"""


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]


def _final_trials(exp: Path) -> list[Path]:
    return sorted((exp / "final" / "tune").glob("trial_*"))


def _check_compute(exp: Path, summary: dict) -> None:
    """summary.json's compute: each trial's is the sum of Tune's time_this_iter_s over every
    result of every attempt (a final run stopped and resumed counts the steps it recomputed,
    which Tune's time_total_s, restarted from the checkpoint's value, leaves out); CPU hours =
    seconds x the 1 CPU a trial holds / 3600, per phase and in all."""
    compute = summary["compute"]
    assert (compute["unit"], compute["per_trial"]) == ("CPU", 1)
    search = {t["trial_id"]: t["compute_s"] for t in summary["trials"]}
    for trial_id, seconds in search.items():
        results = _results(exp / "tune" / f"trial_{trial_id}")
        assert seconds > 0 and seconds == pytest.approx(sum(r["time_this_iter_s"] for r in results))
    assert compute["search"] == {
        "trials": len(search),
        "compute_s": pytest.approx(sum(search.values())),
        "hours": pytest.approx(sum(search.values()) / 3600),
    }
    runs = summary["final"]["compute"]["runs"]
    assert sorted(runs) == ["r1-s1", "r1-s2", "r2-s1", "r2-s2"]
    for t in _final_trials(exp):
        results = _results(t)
        seconds = runs[results[-1]["config"]["final_run"]]
        assert seconds > 0 and seconds == pytest.approx(sum(r["time_this_iter_s"] for r in results))
        assert seconds >= results[-1]["time_total_s"] - 1e-6  # Tune's figure: the lineage
    assert compute["final"]["trials"] == 4
    assert compute["final"]["compute_s"] == pytest.approx(sum(runs.values()))
    assert compute["hours"] == pytest.approx((sum(search.values()) + sum(runs.values())) / 3600)


@pytest.fixture
def final_space(tmp_path: Path) -> tuple[Path, Path]:
    utts = synthetic_corpus(2000, seed=0)
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    write_tagged(train, utts[:1700])
    write_tagged(test, utts[1700:])
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    doc["data"] = {
        "train": {"kind": "tagged", "path": str(train)},
        "test": {"kind": "tagged", "path": str(test)},
    }
    # --smoke: 2 x 2, and a sample of at most 1,000 phonemes
    doc["final"] = {"top_k": 3, "seeds": 3, "test_phonemes": 5000}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(doc))
    return space, test


def test_final_phase_scores_on_a_test_split_the_search_never_opened_and_resumes(
    tmp_path: Path, final_space: tuple[Path, Path]
) -> None:
    space, test_file = final_space
    hook_dir, watch_log = tmp_path / "hook", tmp_path / "opens.log"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_HOOK)
    env = _env(
        PYTHONPATH=os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
        SEG_TUNE_TEST_WATCH=str(test_file.resolve()),
        SEG_TUNE_TEST_WATCH_LOG=str(watch_log),
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke-smoke"

    first = _start(space, storage, log, "--smoke", env=env)

    def final_checkpointed() -> bool:
        assert first.poll() is None, log.read_text()[-3000:]
        return any((exp / "final" / "tune").glob("trial_*/checkpoint_*/meta.json"))

    _wait_for(final_checkpointed, 420, "a final run's first checkpoint")
    before = {t.name: _results(t) for t in _final_trials(exp)}
    _stop_and_check(first, signal.SIGTERM, log)
    assert not (exp / "best_model").exists(), "best_model/ before the final phase ended"

    second = _start(space, storage, log, "--smoke", env=env)
    assert second.wait(timeout=600) == 0, log.read_text()[-4000:]
    out = log.read_text()

    # exactly top_k x seeds final runs (smoke: 2 x 2), one trial each
    trials = _final_trials(exp)
    keys = sorted(_results(t)[-1]["config"]["final_run"] for t in trials)
    assert keys == ["r1-s1", "r1-s2", "r2-s1", "r2-s2"], keys
    plan = json.loads((exp / "final" / "plan.json").read_text())
    assert len(plan["runs"]) == 4 and {r["seed"] for r in plan["runs"]} == {1, 2}

    # the resume: a run that had finished trained no further; one that had a checkpoint
    # resumed from it (never from step 0)
    for t in trials:
        old, new = before.get(t.name, []), _results(t)[len(before.get(t.name, [])) :]
        steps = plan["runs"][0]["steps"]
        if old and old[-1]["step"] >= steps:
            assert not new, (t.name, "trained again after it had finished")
        elif old and any(t.glob("checkpoint_*")):
            assert new and all(r["resumed_from_step"] > 0 for r in new), (t.name, new[:1])

    # the test split: opened only by the drivers, never while the search trained
    opens = [line.split() for line in watch_log.read_text().splitlines()]
    drivers = {first.pid, second.pid}
    assert opens and all(int(pid) in drivers for pid, _ in opens), (opens, drivers)
    search = [_results(t) for t in (exp / "tune").glob("trial_*")]
    start = min(r[0]["timestamp"] for r in search if r)
    end = max(r[-1]["timestamp"] for r in search if r) + 1
    during = [float(when) for _, when in opens if start <= float(when) <= end]
    assert not during, f"the test file was opened during the search: {during} in {start}..{end}"
    assert any(int(pid) == second.pid and float(when) > end for pid, when in opens)

    # the summary's final section: every run scored, intervals over 2 seeds, the controls
    summary = json.loads((exp / "summary.json").read_text())
    final = summary["final"]
    assert summary["format"] == SUMMARY_FORMAT and final["outcome"] == "finished", final
    assert final["n_runs"] == 4 and final["n_scored"] == 4
    # the test sample: the first whole test utterances holding 1,000 phonemes (--smoke's cap)
    lengths = [len(u) for u in load_tagged(test_file)]
    n = next(i for i in range(1, len(lengths) + 1) if sum(lengths[:i]) >= 1000)
    assert (final["n_test"], final["n_test_phonemes"]) == (n, sum(lengths[:n])), final
    assert final["test_sample"] == {"by": "phonemes", "asked": 1000}
    assert all(r["n_test"] == n for c in final["configurations"] for r in c["runs"])
    _check_compute(exp, summary)
    assert [c["rank"] for c in final["configurations"]] == [1, 2]
    for c in final["configurations"]:
        assert len(c["runs"]) == 2 and len(c["untrained"]["runs"]) == 2
        bf = c["test"]["boundary_noedge_fscore"]
        assert bf["n"] == 2 and bf["low"] <= bf["mean"] <= bf["high"]
        assert set(c["runs"][0]["test"]) >= set(SCORE_KEYS)
        assert all(r["step"] == 0 for r in c["untrained"]["runs"])
        gain = [r["test"]["boundary_noedge_fscore"] for r in c["runs"]]
        control = [r["test"]["boundary_noedge_fscore"] for r in c["untrained"]["runs"]]
        expected = (gain[0] - control[0] + gain[1] - control[1]) / 2
        assert c["gain"]["boundary_noedge_fscore"]["mean"] == pytest.approx(expected)
    assert set(final["baselines"]["simple"]) == {
        "random_gold_rate",
        "every_phoneme",
        "every_utterance",
    }
    assert len(final["baselines"]["tp"]) == 6

    # best_model/: the best final run by validation, its test scores beside it
    seg = json.loads((exp / "best_model" / "segmentation.json").read_text())
    assert seg["test"]["rank"] == final["best"]["rank"]
    assert seg["test"]["test"]["boundary_noedge_fscore"] == pytest.approx(
        final["best"]["test"]["boundary_noedge_fscore"]
    )
    # the report leads with the test results; the terminal quotes test BF with its interval
    report = (exp / "report.md").read_text()
    assert report.index("## Test results (final phase)") < report.index("used for selection")
    assert f"{n} utterances, {sum(lengths[:n]):,} phonemes" in report
    assert "- **Compute:** " in report and " CPU hours: search " in report
    assert (exp / "plots" / "final_test_bf.png").is_file()
    last = out.strip().splitlines()[-1]
    assert "test BF" in last and "±" in last and "95% CI over 2 seeds" in last, last
    assert f"{n} test utterances, {sum(lengths[:n]):,} phonemes" in last, last

    # wandb: one run per final trial, grouped as <experiment>-final
    runs = offline_runs(exp / "final" / "wandb")
    assert {r.group for r in runs} == {"smoke-smoke-final"}
    assert len({r.run_id for r in runs}) == 4

    # a rerun of the finished experiment trains nothing and scores nothing again
    done = {t.name: len(_results(t)) for t in trials}
    scores = {p.name: p.stat().st_mtime_ns for p in (exp / "final" / "scores").glob("*.json")}
    third = _start(space, storage, log, "--smoke", env=env)
    assert third.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert {t.name: len(_results(t)) for t in _final_trials(exp)} == done
    assert {
        p.name: p.stat().st_mtime_ns for p in (exp / "final" / "scores").glob("*.json")
    } == scores
    again = json.loads((exp / "summary.json").read_text())["final"]
    assert again["configurations"] == final["configurations"]
