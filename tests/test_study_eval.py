"""The study's evaluation sample and compute, without Ray: `final.test_phonemes` (the first whole
test utterances holding at least N phonemes) and `study.eval_phonemes` mapped onto it, the
refusals (both sample keys; a test split with too few phonemes, before Ray starts), and the GPU
or CPU hours per trial and phase in summary.json, the experiment report and the study table.
The real runs that record them are in tests/test_final.py and tests/test_run.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import REPO
from test_run import _env

from seg_tune.corpus import Utterance, synthetic_corpus, write_tagged
from seg_tune.errors import ConfigError
from seg_tune.metrics import SCORE_KEYS
from seg_tune.report import render_markdown as render_report
from seg_tune.study_report import chosen_rows, rows, to_csv
from seg_tune.study_report import render_markdown as render_study
from seg_tune.sweep import summary
from seg_tune.sweep.final import FinalRun, headline, sample_rule, section
from seg_tune.sweep.layout import Layout, StudyLayout
from seg_tune.sweep.load import load_space, smoke
from seg_tune.sweep.spec import sample_test
from seg_tune.sweep.study import STUDY_FORMAT, load_study, write_state
from seg_tune.sweep.summary import (
    TrialRecord,
    compute_seconds,
    compute_section,
    held_per_trial,
    read_experiment,
)

SMOKE = REPO / "search_spaces" / "smoke.yaml"


def _utt(*lengths: int) -> Utterance:
    """An utterance of words of these lengths (phonemes "p0", "p1", ...)."""
    return Utterance(tuple(tuple(f"p{i}" for i in range(n)) for n in lengths))


# --------------------------------------------------------------------------- the sample rule

# 5, 3, 4, 2 phonemes (word boundaries are not phonemes): cumulative 5, 8, 12, 14
SPLIT = [_utt(2, 3), _utt(3), _utt(1, 1, 2), _utt(2)]


@pytest.mark.parametrize(
    ("phonemes", "kept"),
    [(1, 1), (5, 1), (6, 2), (8, 2), (9, 3), (12, 3), (13, 4), (14, 4)],
)
def test_the_sample_is_the_shortest_prefix_holding_at_least_n_phonemes(
    phonemes: int, kept: int
) -> None:
    sample = sample_test(SPLIT, utterances=None, phonemes=phonemes, where="test.txt")
    assert sample == SPLIT[:kept]
    held = sum(len(u) for u in sample)
    assert held >= phonemes and held - len(sample[-1]) < phonemes  # overshoot < one utterance


def test_a_split_with_too_few_phonemes_is_one_line_naming_the_key_and_both_numbers() -> None:
    with pytest.raises(ConfigError) as caught:
        sample_test(SPLIT, utterances=None, phonemes=15, where="tagged file test.txt")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("final.test_phonemes: 15 phonemes")
    assert "test split (tagged file test.txt) has 14 in 4 utterances" in message, message


def test_utterances_and_all_are_as_before() -> None:
    assert sample_test(SPLIT, utterances=2, phonemes=None, where="") == SPLIT[:2]
    assert sample_test(SPLIT, utterances=9, phonemes=None, where="") == SPLIT  # all it has
    assert sample_test(SPLIT, utterances=None, phonemes=None, where="") == SPLIT


# --------------------------------------------------------------------------- the keys


def _space_file(tmp_path: Path, final: dict[str, Any], n_test: int = 300) -> Path:
    utts = synthetic_corpus(1200 + n_test, seed=0)
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    write_tagged(train, utts[:1200])
    write_tagged(test, utts[1200:])
    doc = yaml.safe_load(SMOKE.read_text())
    doc["data"] = {
        "train": {"kind": "tagged", "path": str(train)},
        "test": {"kind": "tagged", "path": str(test)},
    }
    doc["final"] = final
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_final_test_utterances_and_test_phonemes_exclude_each_other(tmp_path: Path) -> None:
    path = _space_file(tmp_path, {"test_utterances": 100, "test_phonemes": 2000})
    with pytest.raises(ConfigError) as caught:
        load_space(path)
    message = str(caught.value)
    assert "\n" not in message and f"{path}: key 'final'" in message, message
    assert "test_utterances 100 and test_phonemes 2000: give one of them" in message
    assert load_space(_space_file(tmp_path, {"test_phonemes": 2000})).final.test_phonemes == 2000


def test_smoke_keeps_a_phoneme_sample_one_and_caps_it(tmp_path: Path) -> None:
    by_phonemes = smoke(load_space(_space_file(tmp_path, {"test_phonemes": 20000})))
    assert (by_phonemes.final.test_phonemes, by_phonemes.final.test_utterances) == (1000, None)
    by_utterances = smoke(load_space(_space_file(tmp_path, {})))
    assert (by_utterances.final.test_phonemes, by_utterances.final.test_utterances) == (None, 200)


def _study(tmp_path: Path, study: dict[str, Any], **sections: Any) -> Path:
    doc = yaml.safe_load(SMOKE.read_text())
    doc.pop("data", None)
    doc["study"] = {
        "name": "eval",
        "corpora": {
            name: {
                "train": {"kind": "synthetic", "n_utterances": 1500, "seed": seed},
                "test_fraction": 0.1,
            }
            for name, seed in (("synth-a", 0), ("synth-b", 1))
        },
        "sizes": [1000],
        **study,
    }
    doc.update(sections)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_study_eval_phonemes_is_every_cells_final_test_phonemes(tmp_path: Path) -> None:
    study = load_study(_study(tmp_path, {"eval_phonemes": 1500}, final={"top_k": 1}))
    for cell in study.cells:
        assert cell.doc["final"] == {"top_k": 1, "test_phonemes": 1500}
        spec = study.spec(cell)
        assert (spec.final.test_phonemes, spec.final.test_utterances) == (1500, None)


@pytest.mark.parametrize(
    ("study", "final", "expected"),
    [
        (
            {"eval_utterances": 100, "eval_phonemes": 1500},
            {},
            "study.eval_utterances 100 and study.eval_phonemes 1500: give one of them",
        ),
        (
            {"eval_phonemes": 1500},
            {"test_utterances": 100},
            "study.eval_phonemes 1500 and final.test_utterances 100: give one of them",
        ),
        (
            {"eval_utterances": 100},
            {"test_phonemes": 1500},
            "study.eval_utterances 100 and final.test_phonemes 1500: give one of them",
        ),
        ({"eval_phonemes": 0}, {}, "study.eval_phonemes: Input should be greater than"),
    ],
)
def test_two_evaluation_samples_are_one_line_naming_the_keys(
    tmp_path: Path, study: dict, final: dict, expected: str
) -> None:
    path = _study(tmp_path, study, final=final)
    with pytest.raises(ConfigError) as caught:
        load_study(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and expected in message


def test_an_override_giving_the_other_sample_is_refused_naming_the_cell(tmp_path: Path) -> None:
    overrides = {"corpora": {"synth-b": {"final": {"test_utterances": 100}}}}
    study = load_study(_study(tmp_path, {"eval_phonemes": 1500, "overrides": overrides}))
    study.spec(study.cell("synth-a-1kw"))  # the other cell is fine
    with pytest.raises(ConfigError) as caught:
        study.spec(study.cell("synth-b-1kw"))
    message = str(caught.value)
    assert "\n" not in message and "(cell synth-b-1kw): key 'final'" in message, message
    assert "test_utterances 100 and test_phonemes 1500" in message


# --------------------------------------------------------------------------- before Ray


def test_read_data_refuses_a_test_split_with_too_few_phonemes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seg_tune.cli.prepare import read_data

    path = _space_file(tmp_path, {"test_phonemes": 10**6}, n_test=50)
    with pytest.raises(ConfigError) as caught:
        read_data(load_space(path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("final.test_phonemes: 1,000,000 phonemes")
    assert "has " in message and " in 50 utterances; lower it" in message, message

    read_data(load_space(_space_file(tmp_path, {"test_phonemes": 100}, n_test=50)))
    out = capsys.readouterr().out
    assert "seg_tune.run: test split: 50 utterances (" in out
    assert "held out until the final phase (which scores its first " in out, out


def test_the_study_refuses_a_cell_whose_test_split_is_too_small_before_ray(
    tmp_path: Path,
) -> None:
    """synth-a's test split (150 utterances) holds about 1,800 phonemes: 20,000 is refused,
    naming the cell, with exit 2 and nothing written."""
    path = _study(tmp_path, {"eval_phonemes": 20000})
    result = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(path), "--storage", str(tmp_path / "res")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{path} (cell synth-a-1kw): final.test_phonemes: 20,000 phonemes" in line, line
    assert "Ray dashboard" not in result.stdout and not (tmp_path / "res").exists()


# --------------------------------------------------------------------------- hours


def _result_json(path: Path, seconds: list[float], cut: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"step": 10 * (i + 1), "time_this_iter_s": s}) for i, s in enumerate(seconds)
    ]
    path.write_text("\n".join(lines) + ('\n{"step": 99, "time_this' if cut else "\n"))
    return path


def test_compute_seconds_sums_every_result_of_every_attempt(tmp_path: Path) -> None:
    # steps 10, 20, 30, then a retry from 20 recomputes 30: both count, a cut line does not
    path = _result_json(tmp_path / "result.json", [1.5, 2.0, 2.5, 2.5], cut=True)
    assert compute_seconds(path) == pytest.approx(8.5)
    assert compute_seconds(tmp_path / "none.json") is None


@pytest.mark.parametrize(
    ("resources", "held"),
    [
        ({"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}, (1, "CPU")),
        ({"workers": 2, "cpus_per_worker": 4, "gpus_per_worker": 0}, (8, "CPU")),
        ({"workers": 2, "cpus_per_worker": 8, "gpus_per_worker": 1}, (2, "GPU")),
        ({"workers": 1, "cpus_per_worker": 4, "gpus_per_worker": 0.25}, (0.25, "GPU")),
    ],
)
def test_a_trial_holds_its_workers_gpus_else_their_cpus(
    resources: dict, held: tuple[float, str]
) -> None:
    assert held_per_trial(resources) == held


def test_hours_are_seconds_times_what_a_trial_holds_per_phase_and_in_all() -> None:
    resources = {"workers": 2, "cpus_per_worker": 8, "gpus_per_worker": 1}
    out = compute_section(resources, [3600.0, 1800.0, None], [900.0, 900.0])
    assert (out["unit"], out["per_trial"], out["resources"]) == ("GPU", 2, resources)
    assert out["search"] == {"trials": 3, "compute_s": 5400.0, "hours": 3.0}
    assert out["final"] == {"trials": 2, "compute_s": 1800.0, "hours": 1.0}
    assert out["hours"] == 4.0
    cpu = compute_section({"workers": 1, "cpus_per_worker": 2}, [720.0], None)
    assert (cpu["unit"], cpu["search"]["hours"], cpu["final"], cpu["hours"]) == (
        "CPU",
        0.4,
        None,
        0.4,
    )


def _final_section() -> dict[str, Any]:
    runs = [FinalRun(1, s, "t1", {"training.lr": 0.002}, 40) for s in (1, 2)]
    scores = {key: 0.7 for key in SCORE_KEYS}
    chosen = [("entropy", "spike"), ("surprisal", "threshold")]

    def doc(run: FinalRun, kind: str) -> dict[str, Any]:
        cue, strategy = chosen[run.seed - 1]
        return {
            "kind": kind,
            "rank": run.rank,
            "seed": run.seed,
            "final_trial_id": f"f{run.seed}",
            "step": 40 if kind == "trained" else 0,
            "valid_objective": 0.8,
            "chosen": {"cue": cue, "strategy": strategy, **scores},
            "test": scores,
            "test_data": "tagged file test.txt",
            "n_test": 81,
            "n_test_phonemes": 1004,
            "n_valid": 50,
        }

    return section(
        runs,
        {r.key: doc(r, "trained") for r in runs},
        {r.key: doc(r, "untrained") for r in runs},
        {"tp": {"tp_forward": {"boundary_noedge_fscore": 0.6}}, "simple": {}, "labels": {}},
        mode="max",
        search_values={"t1": 0.8},
        outcome="finished",
        sample=sample_rule(SimpleNamespace(test_utterances=None, test_phonemes=1000)),
        compute={"r1-s1": 30.0, "r1-s2": 42.0},
    )


def _write_summary(exp: Path, resources: dict[str, Any], final: dict | None) -> dict[str, Any]:
    trials = [
        TrialRecord("t1", "TERMINATED", {"training.lr": 0.002}, {"step": 40}, compute_s=60.0),
        TrialRecord("t2", "TERMINATED", {"training.lr": 0.004}, {"step": 20}, compute_s=30.0),
    ]
    space = {"resources": resources, "experiment": {"max_steps": 40}, "source_path": "s.yaml"}
    content = summary.build(
        trials,
        name=exp.name,
        space=space,
        metric="seg_boundary_noedge_fscore",
        mode="max",
        num_samples=2,
        max_steps=40,
        outcome="finished",
        final=final,
    )
    exp.mkdir(parents=True)
    summary.write(Layout(exp), content)
    return content


def test_the_summary_records_compute_per_trial_and_phase_and_the_test_sample(
    tmp_path: Path,
) -> None:
    final = _final_section()
    assert (final["n_test"], final["n_test_phonemes"]) == (81, 1004)
    assert final["test_sample"] == {"by": "phonemes", "asked": 1000}
    assert final["compute"] == {"compute_s": 72.0, "runs": {"r1-s1": 30.0, "r1-s2": 42.0}}
    assert headline(final).endswith("; 81 test utterances, 1,004 phonemes)")
    resources = {"workers": 1, "cpus_per_worker": 4, "gpus_per_worker": 0.5}
    content = _write_summary(tmp_path / "exp", resources, final)
    assert content["format"] == summary.FORMAT == 5
    assert [t["compute_s"] for t in content["trials"]] == [60.0, 30.0]
    compute = content["compute"]
    assert (compute["unit"], compute["per_trial"]) == ("GPU", 0.5)
    assert compute["search"] == {"trials": 2, "compute_s": 90.0, "hours": 90 * 0.5 / 3600}
    assert compute["final"] == {"trials": 2, "compute_s": 72.0, "hours": 72 * 0.5 / 3600}
    exp = read_experiment(tmp_path / "exp")
    assert exp.compute == compute and [t.compute_s for t in exp.trials] == [60.0, 30.0]
    text = render_report(exp, {})
    assert (
        "- **Compute:** 0.0225 GPU hours: search 0.0125 (2 trials, 90 s); final phase 0.01 " in text
    )
    assert (
        "(81 utterances, 1,004 phonemes: the first whole utterances holding at least 1000)" in text
    )


def test_an_older_summary_is_read_without_compute(tmp_path: Path) -> None:
    exp = tmp_path / "old"
    content = _write_summary(exp, {"workers": 1}, None)
    content.pop("compute")
    for trial in content["trials"]:
        trial.pop("compute_s")
    content["format"] = 4
    summary.write(Layout(exp), content)
    read = read_experiment(exp)
    assert read.compute is None and all(t.compute_s is None for t in read.trials)
    assert "**Compute:**" not in render_report(read, {})


def test_the_study_table_has_the_sample_the_chosen_row_and_the_hours(tmp_path: Path) -> None:
    root = tmp_path / "eval"
    layout = StudyLayout(root)
    cells = {
        "synth-a-1kw": {"axis": "corpus", "value": "synth-a", "size": 1000, "exit": 0},
        "synth-b-1kw": {"axis": "corpus", "value": "synth-b", "size": 1000, "exit": 0},
        "old-1kw": {"axis": "corpus", "value": "old", "size": 1000, "exit": 0},
    }
    write_state(layout, {"format": STUDY_FORMAT, "name": "eval", "unit": "words", "cells": cells})
    gpus = {"workers": 2, "cpus_per_worker": 8, "gpus_per_worker": 1}
    _write_summary(layout.cell("synth-a-1kw").root, gpus, _final_section())
    _write_summary(layout.cell("synth-b-1kw").root, {"workers": 1, "cpus_per_worker": 2}, None)
    old = _write_summary(layout.cell("old-1kw").root, {"workers": 1}, None)
    old.pop("compute")
    old["format"] = 4
    summary.write(layout.cell("old-1kw"), old)

    table = {r["cell"]: r for r in rows(root)}
    a, b = table["synth-a-1kw"], table["synth-b-1kw"]
    assert a["gpu_hours"] == pytest.approx((90 + 72) * 2 / 3600) and a["cpu_hours"] is None
    assert (a["test_utterances"], a["test_phonemes"]) == (81, 1004)
    assert a["chosen"] == "entropy/spike (1/2); surprisal/threshold (1/2)"
    assert json.loads(a["params"]) == {"training.lr": 0.002} and a["steps"] == 40
    assert b["cpu_hours"] == pytest.approx(90 * 2 / 3600) and b["gpu_hours"] is None
    assert b["test_utterances"] is None and b["chosen"] is None
    assert table["old-1kw"]["gpu_hours"] is None and table["old-1kw"]["cpu_hours"] is None
    header = to_csv(list(table.values())).splitlines()[0].split(",")
    assert {"test_utterances", "test_phonemes", "chosen", "gpu_hours", "cpu_hours"} <= set(header)
    text = render_study("eval", list(table.values()), [])
    assert "| 81 u / 1,004 ph |" in text and "| 0.09 GPU h |" in text and "| 0.05 CPU h |" in text
    assert "`entropy/spike (1/2); surprisal/threshold (1/2)`" in text


def test_chosen_rows_when_the_seeds_agree() -> None:
    runs = [{"chosen": {"cue": "entropy", "strategy": "spike"}}] * 3
    assert chosen_rows(runs) == "entropy/spike"
    assert chosen_rows([]) is None
