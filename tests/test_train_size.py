"""`data.train_size`: N words (or utterances) of the training split, whole utterances in one
seeded order (nested samples), valid and test untouched; too large an amount is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHILDES

from seg_tune.config import DataConfig
from seg_tune.errors import ConfigError


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = CHILDES / "train.txt"
    if not train.is_file():
        pytest.skip(f"shared data not found at {CHILDES}")
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(train.read_text(encoding="utf-8").splitlines(True)[:3000]))
    return path


def _data(path: Path, **size: object) -> DataConfig:
    return DataConfig.model_validate(
        {
            "train": {"kind": "tagged", "path": str(path)},
            "test_fraction": 0.1,
            **({"train_size": size} if size else {}),
        }
    )


def _in_order(sample: list, whole: list) -> bool:
    """`sample` is a subsequence of `whole` (utterances may repeat: "yeah")."""
    rest = iter(whole)
    return all(any(u == w for w in rest) for u in sample)


def _words(utts: list) -> int:
    return sum(len(u.words) for u in utts)


def test_a_size_is_a_nested_seeded_draw_of_whole_training_utterances(corpus_file: Path) -> None:
    whole = _data(corpus_file).load_splits()
    small = _data(corpus_file, amount=2000).load_splits()
    large = _data(corpus_file, amount=5000).load_splits()
    assert small.train == _data(corpus_file, amount=2000).load_splits().train  # deterministic
    for sample, amount in ((small, 2000), (large, 5000)):
        assert _words(sample.train) >= amount  # the shortest prefix that reaches it
        assert _words(sample.train) - max(len(u.words) for u in sample.train) < amount
        assert _in_order(sample.train, whole.train)  # training utterances, in corpus order
        # valid and the test block are the same as without train_size
        assert sample.valid == whole.valid and sample.test == whole.test
    assert set(small.train) <= set(large.train) and len(small.train) < len(large.train)
    other = _data(corpus_file, amount=2000, seed=1).load_splits()
    assert set(other.train) != set(small.train)
    assert _data(corpus_file, amount=2000).load()[0] == small.train  # a trial's read, too
    counted = _data(corpus_file, amount=300, unit="utterances").load_splits().train
    assert len(counted) == 300
    # the test block is still described by where it is in the file
    assert _data(corpus_file, amount=2000).describe_test() == _data(corpus_file).describe_test()


def test_an_amount_above_the_training_split_is_one_line_naming_the_key(corpus_file: Path) -> None:
    have = _words(_data(corpus_file).load_splits().train)
    with pytest.raises(ConfigError) as caught:
        _data(corpus_file, amount=have + 1).load()
    message = str(caught.value)
    assert "data.train_size.amount" in message and f"has {have:,}" in message
    assert "\n" not in message
    _data(corpus_file, amount=have).load()  # exactly all of it is fine
