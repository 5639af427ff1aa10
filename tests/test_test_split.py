"""The held-out test split (data.test / data.test_fraction), its overlap refusal, and
score.type_key: from the config to the training loop's segmentation scores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, tiny_run_config

import seg_tune.segment as segment
from seg_tune.config import DataConfig, DataSource, RunConfig, validate
from seg_tune.corpus import (
    OVERLAP_SHARE,
    Utterance,
    load_tagged,
    shared_run_share,
    synthetic_corpus,
    write_tagged,
)
from seg_tune.errors import ConfigError, DataError
from seg_tune.sweep.load import load_space, smoke
from seg_tune.sweep.spec import changed_keys


def _data(**data: Any) -> DataConfig:
    return validate(RunConfig, {"data": data}, source="test").data


def _tagged(path: Path) -> dict[str, str]:
    return {"kind": "tagged", "path": str(path)}


@pytest.fixture
def corpus_file(tmp_path: Path) -> tuple[Path, list[Utterance]]:
    utts = synthetic_corpus(1000, seed=5)
    path = tmp_path / "train.txt"
    write_tagged(path, utts)
    return path, load_tagged(path)


# --------------------------------------------------------------------------- test_fraction


def test_test_fraction_is_a_block_before_an_unchanged_valid_tail(
    corpus_file: tuple[Path, list[Utterance]],
) -> None:
    path, full = corpus_file
    plain_train, plain_valid = _data(train=_tagged(path)).load()
    cfg = _data(train=_tagged(path), test_fraction=0.15)
    train, valid = cfg.load()
    test = cfg.load_test()
    assert test is not None and cfg.has_test
    assert valid == plain_valid  # existing experiments keep their validation split
    assert len(valid) == 100 and len(test) == 150 and len(train) == 750
    assert train + test + valid == full  # [train | test | valid]: whole utterances, in order
    assert plain_train == train + test  # test is carved out of train, nowhere else
    assert (train, valid, test) == (*cfg.load(), cfg.load_test())  # deterministic
    assert cfg.describe_test() == (
        f"utterances 751..900 of tagged file {path} (test_fraction 0.15 of its 1,000)"
    )


def test_test_fraction_with_valid_given_is_the_tail_of_train(
    corpus_file: tuple[Path, list[Utterance]], tmp_path: Path
) -> None:
    path, full = corpus_file
    valid_file = tmp_path / "valid.txt"
    write_tagged(valid_file, synthetic_corpus(50, seed=9))
    cfg = _data(train=_tagged(path), valid=_tagged(valid_file), test_fraction=0.1)
    train, valid = cfg.load()
    test = cfg.load_test()
    assert test is not None
    assert train + test == full and len(test) == 100
    assert valid == load_tagged(valid_file)


def test_no_test_split() -> None:
    cfg = _data()
    assert not cfg.has_test and cfg.load_test() is None and cfg.describe_test() == ""


def test_test_refusals(tmp_path: Path, corpus_file: tuple[Path, list[Utterance]]) -> None:
    path, _ = corpus_file
    with pytest.raises(
        ConfigError, match=re.escape("key 'data': test and test_fraction (0.2) are both")
    ):
        _data(train=_tagged(path), test=_tagged(path), test_fraction=0.2)
    with pytest.raises(
        ConfigError, match=re.escape("test_fraction 0.6 + valid_fraction 0.5 leave no")
    ):
        _data(train=_tagged(path), test_fraction=0.6, valid_fraction=0.5)
    with pytest.raises(ConfigError, match=re.escape("key 'data.test_fraction' = 1.5")):
        _data(train=_tagged(path), test_fraction=1.5)
    with pytest.raises(ConfigError, match=re.escape("key 'data.test': path")):
        _data(train=_tagged(path), test=_tagged(tmp_path / "missing.txt"))
    tiny = tmp_path / "tiny.txt"
    write_tagged(tiny, synthetic_corpus(2, seed=1))
    cfg = _data(train=_tagged(tiny), test_fraction=0.1)
    with pytest.raises(ConfigError, match=r"2 utterance\(s\) cannot be split into train and held"):
        cfg.load()


def test_load_never_opens_the_test_source(
    tmp_path: Path, corpus_file: tuple[Path, list[Utterance]]
) -> None:
    path, full = corpus_file
    test_file = tmp_path / "test.txt"
    write_tagged(test_file, synthetic_corpus(100, seed=7))
    cfg = _data(train=_tagged(path), test=_tagged(test_file))  # validated: the file exists
    test_file.unlink()
    test_file.mkdir()  # opening it now fails
    train, valid = cfg.load()
    assert train + valid == full  # a test source takes nothing from train
    assert cfg.describe_test() == f"tagged file {test_file}"
    with pytest.raises(DataError, match="is a directory"):
        cfg.load_test()


# --------------------------------------------------------------------------- overlap


def _refusal(cfg: DataConfig) -> str:
    splits = cfg.load_splits()
    assert splits.test is not None
    with pytest.raises(ConfigError) as info:
        cfg.refuse_overlap(splits)
    line = str(info.value)
    assert "\n" not in line
    return line


def test_overlap_is_refused(tmp_path: Path, corpus_file: tuple[Path, list[Utterance]]) -> None:
    path, full = corpus_file
    valid_file, chunk = tmp_path / "valid.txt", tmp_path / "chunk.txt"
    write_tagged(valid_file, synthetic_corpus(200, seed=11))
    write_tagged(chunk, full[300:420])

    line = _refusal(_data(train=_tagged(path), test=_tagged(path)))
    assert f"data.test (tagged file {path}) overlaps data.train (tagged file {path})" in line
    assert "90% of its runs of 4 consecutive utterances also occur there" in line  # valid: 10%

    line = _refusal(_data(train=_tagged(path), valid=_tagged(valid_file), test=_tagged(valid_file)))
    assert f"overlaps data.valid (tagged file {valid_file})" in line

    line = _refusal(_data(train=_tagged(path), test=_tagged(chunk)))
    assert f"data.test (tagged file {chunk}) overlaps data.train (tagged file {path})" in line


def test_a_test_block_of_train_is_not_refused(corpus_file: tuple[Path, list[Utterance]]) -> None:
    path, _ = corpus_file
    cfg = _data(train=_tagged(path), test_fraction=0.1)
    cfg.refuse_overlap(cfg.load_splits())


def test_short_splits() -> None:
    utts = synthetic_corpus(10, seed=2)
    assert shared_run_share(utts[:2], utts) == 1.0  # shorter than a run: the whole split
    assert shared_run_share(utts, utts[:2]) == 0.0
    assert shared_run_share([], utts) == 0.0


def test_the_shipped_childes_split_is_not_refused_and_the_check_is_fast(
    childes: Path, tmp_path: Path
) -> None:
    """dev's first half as valid and its second half as test, beside train: natural repeats of
    child-directed speech stay far below the line; a copy stays far above it."""
    dev = load_tagged(childes / "dev.txt")
    half = len(dev) // 2
    first, second = tmp_path / "dev1.txt", tmp_path / "dev2.txt"
    write_tagged(first, dev[:half])
    write_tagged(second, dev[half:])
    cfg = _data(train=_tagged(childes / "train.txt"), valid=_tagged(first), test=_tagged(second))
    splits = cfg.load_splits()
    train, valid, test = splits.train, splits.valid, splits.test
    assert test is not None
    start = time.perf_counter()
    cfg.refuse_overlap(splits)
    shares = [shared_run_share(test, train), shared_run_share(test, valid)]
    shares.append(shared_run_share(dev, train))
    assert time.perf_counter() - start < 1.0
    assert max(shares) < OVERLAP_SHARE / 10
    assert shared_run_share(dev, dev) == 1.0
    assert shared_run_share(dev, train + dev[:half]) > 5 * OVERLAP_SHARE  # half a copy
    assert shared_run_share(test, train, k=1) > 0.3  # single utterances repeat: not a rule


# --------------------------------------------------------------------------- the sweep


def _space(tmp_path: Path, **doc: Any) -> Path:
    base = {"experiment": {"name": "split", "max_steps": 10}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**base, **doc}))
    return path


def test_run_refuses_an_overlapping_test_split_before_ray(
    tmp_path: Path, corpus_file: tuple[Path, list[Utterance]]
) -> None:
    path, _ = corpus_file
    space = _space(tmp_path, data={"train": _tagged(path), "test": _tagged(path)})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(tmp_path / "res")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"data.test (tagged file {path}) overlaps data.train (tagged file {path})" in lines[0]
    assert "starting experiment" not in proc.stdout
    assert not (tmp_path / "res" / "split").exists()


def test_read_data_checks_then_drops_the_test_block(
    tmp_path: Path,
    corpus_file: tuple[Path, list[Utterance]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from seg_tune.cli.prepare import read_data
    from seg_tune.train import prepare_corpus

    path, full = corpus_file
    spec = load_space(_space(tmp_path, data={"train": _tagged(path), "test_fraction": 0.2}))
    corpus = read_data(spec)
    out = capsys.readouterr().out
    assert "seg_tune.run: test split: 200 utterances (utterances 701..900 of tagged file" in out
    assert "held out until the final phase; no trial reads it" in out
    train_only, valid_only = tmp_path / "t.txt", tmp_path / "v.txt"
    write_tagged(train_only, full[:700])
    write_tagged(valid_only, full[900:])
    expected = prepare_corpus(_data(train=_tagged(train_only), valid=_tagged(valid_only)))
    assert corpus.units == expected.units
    assert corpus.train_stream.equal(expected.train_stream)  # nothing of the test block
    assert corpus.valid_utterances == full[900:]


def test_smoke_shrinks_a_test_source_and_paths_become_absolute(
    tmp_path: Path, corpus_file: tuple[Path, list[Utterance]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = corpus_file
    monkeypatch.chdir(path.parent)
    spec = load_space(
        _space(
            tmp_path, data={"train": _tagged(path), "test": {"kind": "tagged", "path": path.name}}
        )
    )
    assert spec.base.data.test is not None and spec.base.data.test.path == str(path)
    assert smoke(spec).base.data.test.max_utterances == 300  # type: ignore[union-attr]
    synthetic = load_space(_space(tmp_path, data={"test": {"kind": "synthetic", "seed": 4}}))
    assert smoke(synthetic).base.data.test.n_utterances == 300  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"test_fraction": 0.1}, "data.test_fraction", "the test split is the same for every"),
        ({"test": {"kind": "synthetic"}}, "data.test.seed", "the test split is the same for"),
        ({"test_fraction": 0.1}, "data.train.n_utterances", "would move the test block"),
        ({"test_fraction": 0.1}, "data.valid_fraction", "would move the test block"),
        ({}, "score.type_key", "it defines the scores trials are compared on"),
    ],
)
def test_space_cannot_move_the_test_split(
    tmp_path: Path, data: dict, key: str, message: str
) -> None:
    dist = {
        "type": "choice",
        "values": ["wordseg", "phonemes"]
        if key.startswith("score")
        else [0.1, 0.2]
        if "fraction" in key
        else [1000, 2000],
    }
    with pytest.raises(ConfigError, match=f"key 'space.{key}' cannot be searched.*{message}"):
        load_space(_space(tmp_path, data=data, space={key: dist}))


# --------------------------------------------------------------------------- score.type_key


def _merged_types() -> tuple[list[Utterance], np.ndarray]:
    """Gold words `a ɪ` and `aɪ` (one type under wordseg's concatenation, two as phoneme
    sequences); the prediction splits the first into `a` + `ɪ`."""
    gold = [Utterance((("a", "ɪ"),)), Utterance((("aɪ",),)), Utterance((("aɪ",), ("b",)))]
    pred = np.array([True, True, True, True, True])
    return gold, pred


def test_type_key_changes_type_scores_on_merged_types() -> None:
    gold, pred = _merged_types()
    wordseg = segment.Gold(gold).score(pred)
    phonemes = segment.Gold(gold, "phonemes").score(pred)
    assert wordseg["type_recall"] == 1.0  # gold {aɪ, b}, predicted {a, ɪ, aɪ, b}
    assert phonemes["type_recall"] == pytest.approx(2 / 3)  # gold {a+ɪ, aɪ, b}
    assert wordseg["token_fscore"] == phonemes["token_fscore"]  # only types differ
    halves = segment.Gold(gold, "phonemes").halves()
    assert all(h.type_key == "phonemes" for h in halves)  # cross-fitting keeps it


def test_score_type_key_from_a_space_reaches_every_trial(tmp_path: Path) -> None:
    spec = load_space(
        _space(
            tmp_path,
            score={"type_key": "phonemes"},
            space={"training.lr": {"type": "loguniform", "min": 1e-4, "max": 1e-2}},
        )
    )
    assert spec.base.score.type_key == "phonemes"
    assert spec.trial_config({"training.lr": 1e-3}).score.type_key == "phonemes"
    assert smoke(spec).base.score.type_key == "phonemes"
    with pytest.raises(ConfigError, match=re.escape("key 'score.type_key' = 'chars'")):
        load_space(_space(tmp_path, score={"type_key": "chars"}))
    old = spec.to_dict()
    del old["base"]["score"]  # saved before score existed: resumes with the default only
    default = load_space(_space(tmp_path, space=spec.document()["space"])).to_dict()
    assert changed_keys(old, default) == []
    assert changed_keys(old, spec.to_dict()) == ["base.score.type_key"]


def test_score_type_key_reaches_evaluate_segmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg_tune.train import LocalSession, train_loop

    seen: list[str] = []
    real = segment.evaluate_segmentation

    def spy(*args: Any, **kwargs: Any) -> dict[str, float | str]:
        seen.append(kwargs["type_key"])
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "evaluate_segmentation", spy)
    doc = tiny_run_config(steps=5, eval_every_steps=5, segment_utterances=20)
    doc["score"] = {"type_key": "phonemes"}
    cfg = validate(RunConfig, doc, source="test")
    metrics = train_loop(cfg, LocalSession(tmp_path / "run", keep=1), progress=False)
    assert seen == ["phonemes"]
    assert "seg_type_fscore" in metrics


def test_skip_utterances_takes_a_later_block_of_a_file(tmp_path: Path) -> None:
    """`skip_utterances` (then `max_utterances`) cuts a file into disjoint blocks, e.g. dev's
    two halves as valid and test, and says which utterances in its description."""
    from seg_tune.config import DataSource
    from seg_tune.errors import ConfigError

    path = tmp_path / "c.txt"
    write_tagged(path, synthetic_corpus(50, seed=1))
    whole = DataSource(kind="tagged", path=str(path)).load()
    first = DataSource(kind="tagged", path=str(path), max_utterances=20)
    second = DataSource(kind="tagged", path=str(path), skip_utterances=20)
    middle = DataSource(kind="tagged", path=str(path), skip_utterances=10, max_utterances=5)
    assert first.load() == whole[:20] and second.load() == whole[20:]
    assert middle.load() == whole[10:15]
    assert second.describe() == f"tagged file {path}, utterances 21.."
    assert middle.describe() == f"tagged file {path}, utterances 11..15"
    with pytest.raises(ConfigError, match=r"skip_utterances 50: .* has only 50 utterance"):
        DataSource(kind="tagged", path=str(path), skip_utterances=50).load()


# --------------------------------------------------------------------------- cut by transcript


def _transcript_dataset(folder: Path, lengths: list[int]) -> list[Utterance]:
    """An IPA-CHILDES-like CSV (transcript_id, is_child, phonemized_utterance): transcript t has
    lengths[t] rows, every third of them a child's. Each adult utterance ends with a word naming
    its transcript ("T<t>"), so a split's transcripts can be read back from its utterances."""
    folder.mkdir()
    words = iter(synthetic_corpus(sum(lengths), seed=3))
    lines, adults = ["transcript_id,is_child,phonemized_utterance"], []
    for t, length in enumerate(lengths):
        for i in range(length):
            utt = Utterance((*next(words).words, (f"T{t}",)))
            text = " WORD_BOUNDARY ".join(" ".join(w) for w in utt.words)
            child = i % 3 == 0  # the first row of every transcript is a child's
            lines.append(f"{1000 + t},{child},{text}")
            if not child:
                adults.append(utt)
    (folder / "processed.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return adults


def _transcripts(utts: list[Utterance]) -> set[str]:
    return {u.words[-1][0] for u in utts}


def test_test_fraction_cuts_between_transcripts(tmp_path: Path) -> None:
    """With transcript_column, test and valid are blocks of whole transcripts, at the transcript
    starts nearest the fractional cuts; the child rows `where` drops do not move them."""
    lengths = [30, 45, 60, 24, 51, 36, 27, 66, 42, 39, 33, 48]  # rows; 2/3 of each are adults'
    adults = _transcript_dataset(tmp_path / "Eng-NA", lengths)
    source = {
        "kind": "hf",
        "name": str(tmp_path / "Eng-NA"),
        "column": "phonemized_utterance",
        "where": {"is_child": False},
        "transcript_column": "transcript_id",
    }
    cfg = _data(train=source, test_fraction=0.2, valid_fraction=0.15)
    splits = cfg.load_splits()
    assert splits.test is not None and splits.by_transcript
    assert splits.train + splits.test + splits.valid == adults  # in order, nothing lost
    parts = [_transcripts(x) for x in (splits.train, splits.test, splits.valid)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert (splits.train, splits.valid) == cfg.load() and splits.test == cfg.load_test()
    # each cut is the transcript start nearest the cut by utterances
    starts = [sum(n * 2 // 3 for n in lengths[:t]) for t in range(len(lengths))]
    n = len(adults)
    for cut, raw in (
        (len(splits.train), n - round(0.15 * n) - round(0.2 * n)),
        (n - len(splits.valid), n - round(0.15 * n)),
    ):
        assert cut in starts and all(abs(cut - raw) <= abs(s - raw) for s in starts[1:])
    without = _data(
        train={**source, "transcript_column": None}, test_fraction=0.2, valid_fraction=0.15
    )
    assert len(without.load_test() or []) == round(0.2 * n) != len(splits.test)
    assert cfg.describe_test(splits).endswith(f"of its {n:,}, whole transcripts)")
    # a later block of the source: its starts shift with skip_utterances
    later, starts_later = DataSource(**{**source, "skip_utterances": 25}).load_marked()
    assert later == adults[25:]
    assert starts_later == (0, *(s - 25 for s in starts if s > 25))


def test_transcript_cuts_refused_when_too_few(tmp_path: Path) -> None:
    _transcript_dataset(tmp_path / "one", [90])
    source = {
        "kind": "hf",
        "name": str(tmp_path / "one"),
        "column": "phonemized_utterance",
        "transcript_column": "transcript_id",
    }
    with pytest.raises(ConfigError, match=r"1 transcript\(s\) \(column 'transcript_id'\)"):
        _data(train=source, test_fraction=0.2).load()
    with pytest.raises(DataError, match="transcript_column 'session' is not a column"):
        _data(train={**source, "transcript_column": "session"}).load()
    with pytest.raises(ConfigError, match="transcript_column 'transcript_id' names a dataset"):
        _data(train={"kind": "synthetic", "transcript_column": "transcript_id"})
