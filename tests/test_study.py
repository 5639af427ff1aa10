"""Studies (`seg_tune.sweep.study`, `seg_tune.cli.study`, `seg_tune.study_report`): the cells a
study file makes, the refusals before Ray starts, and a real study on a local Ray cluster,
stopped mid-study and resumed."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CHILDES, REPO
from test_run import _env, _start, _wait_for

from seg_tune.errors import ConfigError
from seg_tune.sweep.layout import StudyLayout
from seg_tune.sweep.load import load_space
from seg_tune.sweep.study import load_study, size_label

SMOKE = REPO / "search_spaces" / "study_smoke.yaml"


def _study_file(tmp_path: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(SMOKE.read_text())
    if edit is not None:
        edit(doc)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_smoke_study_makes_one_cell_per_corpus_and_size() -> None:
    study = load_study(SMOKE)
    assert study.name == "study-smoke"
    assert [c.name for c in study.cells] == [
        "synth-a-1kw",
        "synth-a-2kw",
        "synth-b-1kw",
        "synth-b-2kw",
        "childes-en-1kw",
        "childes-en-2kw",
    ]
    by_name = {c.name: c for c in study.cells}
    cell = by_name["synth-b-2kw"]
    assert (cell.axis, cell.value, cell.size) == ("corpus", "synth-b", 2000)
    assert cell.doc["data"]["train"]["seed"] == 1 and cell.doc["data"]["test_fraction"] == 0.1
    assert cell.doc["data"]["train_size"] == {"amount": 2000, "unit": "words", "seed": 0}
    assert cell.doc["training"]["lr"] == 3.0e-3  # the size's override, merged key by key
    assert cell.doc["training"]["batch_size"] == 16  # the rest of the section kept
    assert "lr" not in by_name["synth-b-1kw"].doc["training"]
    assert cell.doc["final"] == {
        "top_k": 1,
        "seeds": 2,
        "valid_utterances": 100,
        "test_utterances": 100,
    }
    assert cell.doc["experiment"]["name"] == "synth-b-2kw" and "study" not in cell.doc
    assert cell.doc["wandb"]["group"] == "study-smoke.synth-b-2kw"
    spec = study.spec(cell)  # every cell is a valid space file
    assert spec.experiment.name == "synth-b-2kw" and spec.base.training.lr == 3.0e-3


def test_languages_fill_the_data_template(tmp_path: Path) -> None:
    def languages(doc: dict) -> None:
        study = doc["study"]
        del study["corpora"], study["overrides"]
        study.update(languages=["EnglishNA", "French"], sizes=[1000])
        doc["data"] = {
            "train": {"kind": "hf", "name": "/data/{language}", "config": "{language}"},
            "valid_fraction": 0.2,
        }

    study = load_study(_study_file(tmp_path, languages))
    assert [c.name for c in study.cells] == ["EnglishNA-1kw", "French-1kw"]
    french = study.cells[1]
    assert french.axis == "language" and french.value == "French"
    assert french.doc["data"]["train"] == {"kind": "hf", "name": "/data/French", "config": "French"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["study"].update(sizez=[1]), "study.sizez"),
        (lambda d: d["study"].update(sizes=[100, 100]), "study.sizes"),
        (lambda d: d["study"].update(corpora={}), "study: give `corpora`"),
        (lambda d: d["study"].update(languages=["French"]), "no {language} to replace"),
        (lambda d: d["study"]["overrides"].update(sizes={7: {}}), "study.overrides.sizes.7"),
        (lambda d: d["study"].update(max_concurrent_cells=0), "study.max_concurrent_cells"),
    ],
)
def test_a_bad_study_section_is_one_line_naming_the_key(tmp_path: Path, edit, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        load_study(_study_file(tmp_path, edit))
    assert expected in str(caught.value) and "\n" not in str(caught.value), caught.value


def test_a_study_file_is_not_a_space_file() -> None:
    with pytest.raises(ConfigError, match="a study file"):
        load_space(SMOKE)


def test_size_labels() -> None:
    assert [size_label(n, "words") for n in (100_000, 2_000_000, 12_345, 1500)] == [
        "100kw",
        "2Mw",
        "12345w",
        "1500w",
    ]
    assert size_label(3000, "utterances") == "3ku"
    assert size_label(500_000, "phonemes") == "500kp"


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seg_tune.run", *args, "--storage", str(tmp_path / "results")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_cell_is_refused_before_ray_starts_naming_the_cell(tmp_path: Path) -> None:
    def bad_lr(doc: dict) -> None:
        doc["study"]["overrides"]["sizes"] = {2000: {"training": {"lr": "fast"}}}

    result = _run([str(_study_file(tmp_path, bad_lr))], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "(cell synth-a-2kw)" in lines[0] and "training.lr" in lines[0]
    assert "Ray dashboard" not in result.stdout and not (tmp_path / "results").exists()
    unknown = _run([str(SMOKE), "--only", "synth-c-1kw"], tmp_path)
    assert unknown.returncode == 2 and "no cell 'synth-c-1kw'" in unknown.stderr
    assert "synth-a-1kw" in unknown.stderr  # the cells it has


def test_a_cell_whose_data_is_too_small_for_its_size_is_refused(tmp_path: Path) -> None:
    def too_big(doc: dict) -> None:
        doc["study"]["sizes"] = [1000, 300000]
        doc["study"]["overrides"] = {}

    result = _run([str(_study_file(tmp_path, too_big))], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "(cell synth-a-300kw)" in line and "data.train_size.amount" in line, line


def _cells_state(root: Path) -> dict:
    try:
        return json.loads(StudyLayout(root).study.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return {}


def test_a_study_runs_its_cells_on_one_cluster_stops_and_resumes(tmp_path: Path) -> None:
    """A real study on a local Ray cluster: the smoke study's synth-a and real English CHILDES
    (its first 2,000 utterances) at two sizes, 4 cells, 2 at a time, wandb offline. SIGINT once
    a cell has finished: exit 3. The same command then finishes the study without running the
    finished cell again, and the interrupted ones resume inside themselves. Every cell has its
    final phase's test scores; the study report, study.csv and plots are written, and
    `seg-tune report` rebuilds them."""
    train = CHILDES / "train.txt"
    if not train.is_file():
        pytest.skip(f"shared data not found at {CHILDES}")

    def with_childes(doc: dict) -> None:
        corpora = doc["study"]["corpora"]
        del corpora["synth-b"]  # 4 cells are enough here
        assert corpora["childes-en"]["train"]["max_utterances"] == 2000
        corpora["childes-en"]["train"]["path"] = str(train)

    study = _study_file(tmp_path, with_childes)
    storage, log = tmp_path / "results", tmp_path / "study.log"
    root = storage / "study-smoke"
    proc = _start(study, storage, log)

    def one_finished() -> bool:
        assert proc.poll() is None, log.read_text()[-4000:]
        return any(c.get("exit") == 0 for c in _cells_state(root).values())

    _wait_for(one_finished, 600, "a cell finished")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=180) == 3, log.read_text()[-4000:]
    assert "run the same command again to resume" in log.read_text()
    first = _cells_state(root)
    done = sorted(name for name, c in first.items() if c["exit"] == 0)
    assert done and len(done) < 4, first
    summaries = {n: (root / n / "summary.json").read_text() for n in done}

    proc = _start(study, storage, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    out = log.read_text().split("run the same command again to resume", 1)[1]  # the second run
    for name in done:
        assert f"cell {name} finished before; not run again" in out
        assert (root / name / "summary.json").read_text() == summaries[name]  # not redone
    for name in set(first) - set(done):
        cell_log = StudyLayout(root).cell_log(name).read_text()
        if first[name]["exit"] == 3:  # stopped mid-way: resumed inside itself
            first_run, second_run = cell_log.split("seg_tune.run: stopped", 1)
            if "starting experiment" in first_run:
                assert "resuming experiment" in second_run, cell_log[-3000:]
            else:  # stopped while it started up: nothing to resume
                assert second_run.startswith(" (a signal) before the sweep started"), cell_log
    for name in first:  # each cell's folder holds its own experiment's trials only
        prefixes = {d.name.split("_")[1] for d in (root / name / "tune").glob("trial_*")}
        assert len(prefixes) == 1, (name, prefixes)
    rows = list(csv.DictReader(StudyLayout(root).csv.open()))
    assert sorted(r["cell"] for r in rows) == [
        "childes-en-1kw",
        "childes-en-2kw",
        "synth-a-1kw",
        "synth-a-2kw",
    ]
    for row in rows:
        assert row["outcome"] == "finished", row
        summary = json.loads((root / row["cell"] / "summary.json").read_text())
        assert summary["final"]["n_test"] == 100  # study.eval_utterances
        bf = summary["final"]["configurations"][0]["test"]["boundary_noedge_fscore"]
        assert float(row["test_bf_mean"]) == pytest.approx(bf["mean"]) and bf["n"] == 2
        assert 0 < float(row["test_bf_low"]) <= bf["mean"] <= float(row["test_bf_high"]) <= 1
        assert row["tp_best"] and 0 < float(row["tp_best_bf"]) <= 1
        assert row["untrained_bf_mean"] and row["gain_bf_mean"]
    report = StudyLayout(root).report.read_text()
    assert "4 of 4 cells finished" in report and "`childes-en-2kw`" in report
    assert (root / "plots" / "test_bf.png").is_file()
    assert (root / "plots" / "test_bf_by_size.png").is_file()
    StudyLayout(root).report.unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "seg_tune.report", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0 and rebuilt.stdout.strip() == str(StudyLayout(root).report)
    assert StudyLayout(root).report.read_text() == report


def test_each_driver_stages_its_tune_files_in_a_folder_of_its_own(tmp_path: Path) -> None:
    """Tune stages a driver's files in <session>/artifacts/<timestamp>/tune/ (to the second):
    two cell drivers starting within a second shared it and copied each other's experiment
    state into their folders (a resumed cell then restored another cell's trials). The staging
    timestamp carries the driver's process id, in a new Tuner's context as in Tune's own."""
    import os

    from ray.train._internal.storage import StorageContext

    from seg_tune.sweep.tuner import own_staging_folder

    own_staging_folder()
    own_staging_folder()  # idempotent: one suffix
    context = StorageContext(storage_path=str(tmp_path), experiment_dir_name="tune")
    assert context._timestamp.endswith(f"_pid{os.getpid()}")
    assert context._timestamp.count("_pid") == 1


def test_a_stop_passed_on_while_a_cell_driver_starts_up_is_not_lost(tmp_path: Path) -> None:
    """A cell driver starts with SIGUSR1 blocked (as the study starts it): a stop passed on
    50 ms after its start, long before Python has imported anything, waits for main() and
    ends it with exit 3 (without the mask: SIGUSR1's default action, exit -10)."""
    import time

    from seg_tune.cli.study import _block_usr1

    space, storage = REPO / "search_spaces" / "smoke.yaml", tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seg_tune.run", space, "--storage", storage],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_block_usr1,
    )
    time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-2000:]
    assert "stopped (a signal) before the sweep started" in out


def _ipa_childes_like(folder: Path, utterances: list[list[list[str]]]) -> None:
    """A local dataset laid out like an IPA-CHILDES config: one CSV with is_child,
    target_child_age (months) and phonemized_utterance (phonemes separated by spaces,
    WORD_BOUNDARY after each word). Every third row is the child's own speech; ages run 6..59."""
    folder.mkdir(parents=True)
    lines = ["is_child,target_child_age,phonemized_utterance"]
    for i, words in enumerate(utterances):
        text = " ".join(" ".join(w) + " WORD_BOUNDARY" for w in words)
        lines.append(f"{i % 3 == 2},{6 + i % 54},{text}")
    (folder / "processed.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_languages_read_ipa_childes_like_datasets_with_their_filters(tmp_path: Path) -> None:
    """Two "languages" as local datasets laid out like IPA-CHILDES: real English CHILDES, and a
    synthetic language with another phoneme inventory and longer words. The study's data
    template names the language twice (folder and config); every cell is read through
    `datasets` as the driver reads it before Ray, with the children's speech left out and a
    target-child age range kept, and each builds its own units (tokenizer)."""
    import random

    from seg_tune.cli.prepare import read_data
    from seg_tune.corpus import parse_tagged_line

    train = CHILDES / "train.txt"
    if not train.is_file():
        pytest.skip(f"shared data not found at {CHILDES}")
    english = [
        [list(w) for w in u.words]
        for line in train.read_text(encoding="utf-8").splitlines()[:1500]
        if (u := parse_tagged_line(line)) is not None
    ]
    rng = random.Random(0)
    inventory = ["ka", "lo", "mi", "ŋu", "tsa", "ʁe"]  # units the English data has none of
    lexicon = [[rng.choice(inventory) for _ in range(rng.randint(3, 6))] for _ in range(80)]
    synthetic = [[rng.choice(lexicon) for _ in range(rng.randint(1, 4))] for _ in range(1500)]
    _ipa_childes_like(tmp_path / "data" / "EnglishNA", english)
    _ipa_childes_like(tmp_path / "data" / "Synthlang", synthetic)

    def languages(doc: dict) -> None:
        study = doc["study"]
        del study["corpora"], study["overrides"]
        study.update(languages=["EnglishNA", "Synthlang"], sizes=[500])
        doc["data"] = {
            "train": {
                "kind": "hf",
                "name": str(tmp_path / "data" / "{language}"),
                "column": "phonemized_utterance",
                "where": {"is_child": False, "target_child_age": {"min": 12, "max": 36}},
            },
            "test_fraction": 0.1,
        }

    study = load_study(_study_file(tmp_path, languages))
    assert [c.name for c in study.cells] == ["EnglishNA-500w", "Synthlang-500w"]
    units = {}
    for cell in study.cells:
        spec = study.spec(cell)
        splits = spec.base.data.load_splits()
        assert splits.n_source == sum(
            1 for i in range(1500) if i % 3 != 2 and 12 <= 6 + i % 54 <= 36
        ), cell.name  # the filters: adults only, ages 12..36
        assert 500 <= sum(len(u.words) for u in splits.train) < 520  # train_size drew it
        units[cell.value] = set(read_data(spec).units)
    assert {"ka", "ŋu", "ʁe"} <= units["Synthlang"] and not {"ka", "ŋu"} & units["EnglishNA"]


def test_the_shipped_ipa_childes_study_makes_valid_cells() -> None:
    """search_spaces/study_ipa_childes.yaml: every language at both sizes, each cell a valid
    space file reading its own IPA-CHILDES config (the hub is not reached here: only the files
    are checked), with the size's models and the fixed evaluation sample."""
    study = load_study(REPO / "search_spaces" / "study_ipa_childes.yaml")
    languages = ["EnglishNA", "EnglishUK", "French", "German", "Spanish", "Dutch"]
    assert [c.name for c in study.cells] == [
        f"{lang}-{size}" for lang in languages for size in ("100kw", "1Mw")
    ]
    for cell in study.cells:
        spec = study.spec(cell)
        train = spec.base.data.train
        assert (train.name, train.config) == ("phonemetransformers/IPA-CHILDES", cell.value)
        assert (
            spec.base.data.train_size is not None and spec.base.data.train_size.amount == cell.size
        )
        assert spec.final.test_utterances == 2000
        presets = set(spec.space["model.preset"].corners())
        assert presets == ({"400k", "800k", "1M"} if cell.size == 100000 else {"1M", "5M", "19M"})
