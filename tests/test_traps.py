"""Traps a new user falls into (issue: a researcher's first hour): wrong formats that used to
train and score F = 0 (or 'learn' from the letters of `;eword`), a run folder given where a model
folder is wanted, an output folder that does not exist yet, a finished run trained again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_run_config

from seg_tune.corpus import (
    Utterance,
    format_warnings,
    load_hf,
    load_tagged,
    load_text,
    synthetic_corpus,
    write_tagged,
)
from seg_tune.errors import DataError


def _cli(module: str, *args: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", f"seg_tune.{module}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_a_tagged_file_without_boundary_tokens_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("d ɪ s ɪ z\nw ʌ t s ð æ t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"plain.txt: no word-boundary token \(;eword, "):
        load_tagged(path)
    result = _cli("baseline", "tp", path)
    assert result.returncode == 2 and "kind: text" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # one-word utterances in the `between` convention are fine when some line has a boundary
    path.write_text("d ɪ s\nw ʌ t WORD_BOUNDARY ð æ t\n", encoding="utf-8")
    assert [len(u.words) for u in load_tagged(path)] == [1, 2]


def test_a_tagged_file_read_as_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tagged.txt"
    path.write_text("the dog\nd ɪ s ;eword ɪ z ;eword\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"tagged.txt:2: ';eword' in orthographic text.*kind: tagged"
    ):
        load_text(path)
    path.write_text("the dog\nis; here\n", encoding="utf-8")  # ';' alone is no token
    assert [len(u.words) for u in load_text(path)] == [2, 2]


def test_datasets_get_the_same_checks(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"u": ["a b ;eword c ;eword", "d e ;eword"]}).save_to_disk(folder)
    with pytest.raises(DataError, match=r"row 0: ';eword' in orthographic text"):
        load_hf(str(folder), column="u", fmt="text")
    assert len(load_hf(str(folder), column="u", fmt="tagged")) == 2
    datasets.Dataset.from_dict({"u": ["a b", "d e"]}).save_to_disk(tmp_path / "plain")
    with pytest.raises(DataError, match=r"column 'u': no word-boundary token"):
        load_hf(str(tmp_path / "plain"), column="u", fmt="tagged")


def test_words_all_one_unit_long_are_warned_about() -> None:
    one_unit = [Utterance((("a",), ("b",), ("c",))), Utterance((("d",),))]
    (warning,) = format_warnings(one_unit, "data.train (tagged file x.txt)")
    assert warning.startswith("data.train (tagged file x.txt): every one of its 4 words")
    assert format_warnings(synthetic_corpus(50, seed=1), "synthetic") == []


def test_run_folder_missing_output_folder_and_a_finished_rerun(tmp_path: Path) -> None:
    """`seg-tune train` twice (the second says it is already done, with no empty metrics), then
    `seg-tune segment RUN_FOLDER` (takes RUN_FOLDER/best_model, saying so) writing into a folder
    that does not exist yet, and `baseline tp --write-segmentation` likewise, with a line."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(steps=10)))
    run = tmp_path / "runs" / "first"
    first = _cli("train", config, "--out", run)
    assert first.returncode == 0, first.stderr
    again = _cli("train", config, "--out", run)
    assert again.returncode == 0, again.stderr
    assert "seg_tune.train: already done:" in again.stdout and "done: ;" not in again.stdout

    data = tmp_path / "dev.txt"
    write_tagged(data, synthetic_corpus(40, seed=9, lexicon_size=60))
    out = tmp_path / "out" / "deeper" / "pred.txt"
    seg = _cli(
        "segment", run, data, "--write-segmentation", out, "--cue", "boundary_prob",
        "--strategy", "spike", "--context", "32",
    )  # fmt: skip
    assert seg.returncode == 0, seg.stderr
    assert f"{run} is a run folder; using {run / 'best_model'}" in seg.stderr
    assert "Unrecognized model" not in seg.stderr
    assert len(load_tagged(out)) == 40

    tp_out = tmp_path / "tp" / "pred.txt"
    tp = _cli("baseline", "tp", data, "--write-segmentation", tp_out)
    assert tp.returncode == 0, tp.stderr
    assert f"wrote the forward/relative TP segmentation to {tp_out}" in tp.stderr
    assert len(load_tagged(tp_out)) == 40


def test_fresh_says_how_much_the_moved_aside_folders_hold(tmp_path: Path) -> None:
    """`--fresh` never deletes: the line it prints counts the `.old-*` folders of the name and
    their size, so that they do not pile up unseen."""
    from seg_tune.cli.run import _kept
    from seg_tune.sweep.layout import Layout

    layout = Layout.of(tmp_path, "exp")
    for name, size in (
        ("exp.old-20261201-101010", 1_500_000),
        ("exp.old-20261202-090909", 500_000),
    ):
        (tmp_path / name / "tune").mkdir(parents=True)
        (tmp_path / name / "tune" / "blob").write_bytes(b"x" * size)
    (tmp_path / "exp2.old-20261201-101010").mkdir()  # another experiment's: not counted
    (tmp_path / "exp2.old-20261201-101010" / "blob").write_bytes(b"x" * 9_000_000)
    assert _kept(layout) == (
        "2 moved-aside folders of exp, 2.0 MB in all; never deleted: remove them yourself when done"
    )


def test_every_table_names_the_scores_alike() -> None:
    """segment, baseline, score and the report call each score by one name (`SCORE_LABELS`);
    no `BR` column (read as the Brent corpus) is left."""
    from seg_tune.baseline import format_all_table
    from seg_tune.metrics import LEVEL_LABELS, SCORE_KEYS, SCORE_LABELS, TABLE_SCORES
    from seg_tune.report import _baseline_table
    from seg_tune.score import LEVELS
    from seg_tune.score import format_table as score_table
    from seg_tune.segment import format_table as segment_table

    scores = {key: 0.5 for key in SCORE_KEYS}
    row = {"cue": "loss", "strategy": "spike", "oracle": False, "cutoffs": None, **scores}
    tables = {
        "segment": segment_table([row]),
        "baseline": format_all_table({"forward/relative": scores}),
        "report": _baseline_table({"best": row, "tp_baseline": {"forward/relative": scores}}),
    }
    for name, text in tables.items():
        for key in TABLE_SCORES:
            assert SCORE_LABELS[key] in text, (name, key, text)
        header = text.splitlines()[0]
        assert "BR" not in header.split() and "b_noedge" not in text, (name, header)
    levels = [line[:16].strip() for line in score_table(scores).splitlines()[1:]]
    assert levels == [LEVEL_LABELS[level] for level in LEVELS]
    assert levels == ["token", "type", "boundary+edges", "boundary"]


def test_print_defaults_lists_every_key_with_its_default_and_meaning(tmp_path: Path) -> None:
    """`seg-tune train --print-defaults` and `seg-tune run --print-defaults`: valid YAML that
    loads to the defaults, every key commented with its type (and a meaning where the model has
    one), the distributions listed."""
    from seg_tune.config import RunConfig, validate
    from seg_tune.sweep.distributions import _DISTRIBUTIONS
    from seg_tune.sweep.keys import OUR_SECTIONS, SPACE_KEYS
    from seg_tune.sweep.load import load_space

    train = _cli("train", "--print-defaults")
    assert train.returncode == 0, train.stderr
    assert validate(RunConfig, yaml.safe_load(train.stdout), source="printed") == RunConfig()
    for key in SPACE_KEYS:  # every dotted field of a run config, with a comment
        leaf = key.rsplit(".", 1)[1]
        assert any(  # a key of a section that is off by default is listed commented out
            line.strip().lstrip("# ").startswith(f"{leaf}:") and "  # " in line
            for line in train.stdout.splitlines()
        ), key
    assert "lr: 0.001  # float; peak learning rate (after warmup)" in train.stdout

    run = _cli("run", "--print-defaults")
    assert run.returncode == 0, run.stderr
    printed, empty = tmp_path / "printed.yaml", tmp_path / "empty.yaml"
    printed.write_text(run.stdout)
    empty.write_text("")
    doc = yaml.safe_load(run.stdout)
    assert set(doc) == set(OUR_SECTIONS)
    got, want = load_space(printed).to_dict(), load_space(empty).to_dict()
    for d in (got, want):
        d.pop("source_path")
        d["experiment"].pop("name")
        d["wandb"].pop("group")
    assert got == want  # the printout is the defaults
    for kind in _DISTRIBUTIONS:
        assert f"#   {kind}: " in run.stdout
