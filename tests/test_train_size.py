"""`data.train_size`: N words (or phonemes, or utterances) of the training split, whole utterances in one
seeded order (nested samples), valid and test untouched; too large an amount is refused, on the
driver's read before Ray too."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHILDES, REPO

from seg_tune.config import DataConfig, RunConfig, validate
from seg_tune.corpus import Utterance
from seg_tune.errors import ConfigError
from seg_tune.sweep.load import load_space


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 3,000 utterances of the shared CHILDES training file (tagged, ';eword')."""
    train = CHILDES / "train.txt"
    if not train.is_file():
        pytest.skip(f"shared data not found at {CHILDES}")
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(train.read_text(encoding="utf-8").splitlines(True)[:3000]))
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local dataset laid out like IPA-CHILDES (a CSV with a transcript column): 40
    transcripts of 1..6 utterances, every utterance distinct."""
    folder = tmp_path_factory.mktemp("hf") / "Eng-NA"
    folder.mkdir()
    rng = random.Random(5)
    lines = ["transcript_id,phonemized_utterance"]
    for t in range(40):
        for u in range(rng.randint(1, 6)):
            words = [f"t{t} u{u}", *["a b", "k a t", "d o"][: rng.randint(0, 3)]]
            lines.append(f"{t},{' WORD_BOUNDARY '.join(words)}")
    (folder / "processed.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _tagged(path: Path) -> dict[str, Any]:
    return {"kind": "tagged", "path": str(path)}


def _hf(folder: Path) -> dict[str, Any]:
    return {
        "kind": "hf",
        "name": str(folder),
        "column": "phonemized_utterance",
        "transcript_column": "transcript_id",
    }


def _data(train: dict[str, Any], size: dict[str, Any] | None = None, **data: Any) -> DataConfig:
    doc = {"train": train, **data, **({"train_size": size} if size else {})}
    return validate(RunConfig, {"data": doc}, source="test").data


def _words(utts: list[Utterance]) -> int:
    return sum(len(u.words) for u in utts)


def _expected(fit: list[Utterance], amount: int, unit: str, seed: int) -> list[int]:
    """The spec, independently: the shortest prefix of random.Random(seed)'s shuffle of the
    indices that holds `amount` words (or phonemes, or is `amount` utterances long), sorted."""
    order = list(range(len(fit)))
    random.Random(seed).shuffle(order)
    count = 0
    for k, i in enumerate(order, 1):
        words = fit[i].words
        count += {"words": len(words), "phonemes": sum(map(len, words)), "utterances": 1}[unit]
        if count >= amount:
            return sorted(order[:k])
    raise AssertionError("amount above the split")


def _positions(sample: list[Utterance], fit: list[Utterance]) -> list[int]:
    """Where each sampled utterance is in `fit` (by identity: `sized` returns fit's objects;
    utterances repeat by value, "yeah")."""
    where = {id(u): i for i, u in enumerate(fit)}
    return [where[id(u)] for u in sample]


# --------------------------------------------------------------------------- the draw


def test_a_size_is_the_shortest_prefix_of_one_seeded_order_in_corpus_order(
    corpus_file: Path,
) -> None:
    whole = _data(_tagged(corpus_file), test_fraction=0.1).load_splits()
    fit = whole.train
    assert 20_000 > _words(fit) > 8_000  # room for every size below
    chain = []
    for amount in (500, 2000, 5000, _words(fit)):
        data = _data(_tagged(corpus_file), {"amount": amount}, test_fraction=0.1)
        at = _positions(data.sized(fit), fit)
        assert at == _expected(fit, amount, "words", 0)  # exactly the spec's draw
        assert at == sorted(set(at))  # corpus order, no utterance twice
        # it reaches the amount, and would not without the utterance drawn last
        order = list(range(len(fit)))
        random.Random(0).shuffle(order)
        last = max(at, key=order.index)
        assert _words([fit[i] for i in at]) >= amount > _words([fit[i] for i in at if i != last])
        chain.append(set(at))
    assert chain[-1] == set(range(len(fit)))  # the whole split's words: all of it
    for smaller, larger in itertools.pairwise(chain):
        assert smaller < larger  # nested: a smaller sample is part of a larger one
    # not the first utterances of the split: drawn from all over it
    assert max(chain[0]) > len(fit) // 2 and min(chain[0]) < len(fit) // 2
    assert len(chain[0]) < 0.1 * len(fit)


def test_the_draw_is_deterministic_per_seed_and_leaves_valid_and_test_alone(
    corpus_file: Path,
) -> None:
    plain = _data(_tagged(corpus_file), test_fraction=0.1)
    whole = plain.load_splits()

    def splits(**size: Any) -> Any:
        return _data(_tagged(corpus_file), {"amount": 2000, **size}, test_fraction=0.1)

    first, again, other = splits().load_splits(), splits().load_splits(), splits(seed=1)
    assert first.train == again.train  # the same seed twice: the same utterances, in order
    drawn = other.sized(whole.train)
    assert _positions(drawn, whole.train) != _positions(splits().sized(whole.train), whole.train)
    assert _words(drawn) >= 2000
    # valid and the test block are those of the same config without train_size
    assert first.valid == whole.valid and first.test == whole.test and whole.test
    assert first.n_source == whole.n_source and first.n_train_block == len(whole.train)
    assert splits().describe_test() == plain.describe_test()
    assert splits().describe_valid() == plain.describe_valid()
    # a trial's read (`load`) gets the same sample and the same valid
    train, valid = splits().load()
    assert train == first.train and valid == whole.valid


def test_unit_utterances_keeps_exactly_n_nested(corpus_file: Path) -> None:
    fit = _data(_tagged(corpus_file)).load()[0]  # no test split: train minus valid's tail
    samples = []
    for amount in (300, 1000):
        data = _data(_tagged(corpus_file), {"amount": amount, "unit": "utterances", "seed": 7})
        sample = data.load()[0]
        assert len(sample) == amount
        at = _positions(data.sized(fit), fit)
        assert at == _expected(fit, amount, "utterances", 7)
        assert sample == [fit[i] for i in at]
        samples.append(set(at))
    assert samples[0] < samples[1]


def test_unit_phonemes_counts_the_phonemes_without_boundaries_nested(corpus_file: Path) -> None:
    fit = _data(_tagged(corpus_file)).load()[0]
    samples = []
    for amount in (2000, 6000):
        data = _data(_tagged(corpus_file), {"amount": amount, "unit": "phonemes", "seed": 3})
        at = _positions(data.sized(fit), fit)
        assert at == _expected(fit, amount, "phonemes", 3)
        phonemes = sum(len(p) for i in at for p in fit[i].words)
        assert amount <= phonemes < amount + max(len(u) for u in fit)  # whole utterances
        assert _words([fit[i] for i in at]) < phonemes  # not counted in words
        samples.append(set(at))
    assert samples[0] < samples[1]
    too_many = _data(_tagged(corpus_file), {"amount": 10**7, "unit": "phonemes"})
    with pytest.raises(ConfigError, match=r"10,000,000 phonemes, but the training split"):
        too_many.sized(fit)


def test_every_source_kind_is_sized_after_its_cuts(tmp_path: Path, hf_folder: Path) -> None:
    synthetic = {"kind": "synthetic", "n_utterances": 800, "seed": 2}
    plain = _data(synthetic, test_fraction=0.2).load_splits()
    sized = _data(synthetic, {"amount": 400}, test_fraction=0.2).load_splits()
    assert sized.valid == plain.valid and sized.test == plain.test
    assert 400 <= _words(sized.train) < 400 + max(len(u.words) for u in plain.train)
    assert len(sized.train) < len(plain.train) // 2
    assert sized.train == [plain.train[i] for i in _expected(plain.train, 400, "words", 0)]

    # a text file, valid given as its own source: the whole file is the training split
    text = tmp_path / "t.txt"
    text.write_text("".join(f"w{i} the dog\nhi\n" for i in range(200)), encoding="utf-8")
    with_valid = _data({"kind": "text", "path": str(text)}, valid=synthetic)
    fit = with_valid.load()[0]
    assert len(fit) == 400
    train, valid = _data(
        {"kind": "text", "path": str(text)}, {"amount": 50, "unit": "utterances"}, valid=synthetic
    ).load()
    assert len(train) == 50 and valid == with_valid.load()[1]

    # a dataset whose held-out blocks are cut between transcripts: the cuts stay where they were
    plain = _data(_hf(hf_folder), test_fraction=0.2).load_splits()
    sized = _data(_hf(hf_folder), {"amount": 60, "seed": 3}, test_fraction=0.2).load_splits()
    assert plain.by_transcript and sized.by_transcript
    assert sized.valid == plain.valid and sized.test == plain.test and plain.test
    assert set(sized.train) < set(plain.train)  # every utterance of this dataset is distinct
    assert sized.train == [plain.train[i] for i in _expected(plain.train, 60, "words", 3)]


# --------------------------------------------------------------------------- too large


def test_an_amount_above_the_training_split_is_one_line_naming_the_key(corpus_file: Path) -> None:
    data = _data(_tagged(corpus_file), test_fraction=0.1)
    fit = data.load_splits().train
    have = _words(fit)
    for unit, count in (("words", have), ("utterances", len(fit))):
        too_large = _data(
            _tagged(corpus_file), {"amount": count + 1, "unit": unit}, test_fraction=0.1
        )
        for read in (too_large.load, too_large.load_splits):
            with pytest.raises(ConfigError) as caught:
                read()
            message = str(caught.value)
            assert "\n" not in message
            assert message.startswith(f"data.train_size.amount: {count + 1:,} {unit}")
            assert f"data.train (tagged file {corpus_file})" in message
            assert f"has {count:,} {unit}" in message and "lower the amount" in message
        # exactly all of it is fine, and is the whole split
        exact = _data(_tagged(corpus_file), {"amount": count, "unit": unit}, test_fraction=0.1)
        assert exact.load()[0] == fit


def _space(tmp_path: Path, data: dict[str, Any], **doc: Any) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        yaml.safe_dump({"experiment": {"name": "sized", "max_steps": 10}, "data": data, **doc})
    )
    return path


def test_the_drivers_read_draws_the_sample_and_refuses_too_large_an_amount(
    tmp_path: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seg_tune.cli.run import read_data
    from seg_tune.train import prepare_corpus

    data = {"train": _tagged(corpus_file), "test_fraction": 0.1}
    sized = {**data, "train_size": {"amount": 2000}}
    corpus = read_data(load_space(_space(tmp_path, sized)))
    expected = prepare_corpus(_data(**sized))
    whole = prepare_corpus(_data(**data))
    assert corpus.train_stream.equal(expected.train_stream)  # the trials get the sample
    assert corpus.train_stream.numel() < whole.train_stream.numel() / 3
    assert corpus.valid_utterances == whole.valid_utterances
    assert "test split: " in capsys.readouterr().out

    have = _words(_data(**data).load_splits().train)
    for space_file in (
        _space(tmp_path, {**data, "train_size": {"amount": have + 1}}),
        # the base is fine; a searched amount that a trial could get is not
        _space(
            tmp_path,
            sized,
            space={"data.train_size.amount": {"type": "choice", "values": [2000, have + 1]}},
        ),
    ):
        spec = load_space(space_file)
        with pytest.raises(ConfigError, match=f"data.train_size.amount: {have + 1:,} words"):
            read_data(spec)


def test_run_refuses_too_large_an_amount_before_ray(tmp_path: Path, corpus_file: Path) -> None:
    have = _words(_data(_tagged(corpus_file), test_fraction=0.1).load_splits().train)
    space = _space(
        tmp_path,
        {"train": _tagged(corpus_file), "test_fraction": 0.1, "train_size": {"amount": have + 1}},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(tmp_path / "res")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"data.train_size.amount: {have + 1:,} words" in lines[0]
    assert f"has {have:,} words; lower the amount" in lines[0]
    assert "starting experiment" not in proc.stdout
    assert not (tmp_path / "res" / "sized").exists()
