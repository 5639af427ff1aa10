"""Corpora, tokenizer, stream and config: loading, edge cases, round trips, errors."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from seg_tune import corpus
from seg_tune.config import DataSource, ModelConfig, RunConfig, load_run_config, validate
from seg_tune.corpus import (
    Utterance,
    load_hf,
    load_tagged,
    load_text,
    parse_tagged_line,
    synthetic_corpus,
    write_tagged,
)
from seg_tune.errors import ConfigError, DataError
from seg_tune.stream import BlockSampler, blocks, token_stream
from seg_tune.tokenizer import boundary_id, build_tokenizer, encode, load_tokenizer

AB_CD = Utterance((("a", "b"), ("c", "d")))


def _write(tmp_path: Path, content: bytes | str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_both_tagging_conventions_parse_to_the_same_words() -> None:
    after = parse_tagged_line("a b ;eword c d ;eword")
    between = parse_tagged_line("a b WORD_BOUNDARY c d")
    assert after == between == AB_CD
    assert AB_CD.phonemes == ("a", "b", "c", "d")
    assert AB_CD.word_starts == [True, False, True, False]
    assert Utterance.from_word_starts(AB_CD.phonemes, AB_CD.word_starts) == AB_CD


def test_tagged_file_quirks(tmp_path: Path) -> None:
    """Runs of spaces, trailing spaces, blank lines, CRLF and multi-character phonemes."""
    text = "oʊ  k eɪ ;eword  \r\n\r\n   \nd ɑːɹ ;eword ɪ ;eword \r\n"
    utts = load_tagged(_write(tmp_path, text))
    assert utts == [
        Utterance((("oʊ", "k", "eɪ"),)),
        Utterance((("d", "ɑːɹ"), ("ɪ",))),
    ]


def test_custom_boundary_token(tmp_path: Path) -> None:
    utts = load_tagged(_write(tmp_path, "a b | c\n"), boundary_tokens=("|",))
    assert utts == [Utterance((("a", "b"), ("c",)))]


def test_round_trip_through_tagged_writer(tmp_path: Path) -> None:
    utts = synthetic_corpus(50, seed=4)
    for convention in ("after", "between"):
        path = tmp_path / f"{convention}.txt"
        write_tagged(path, utts, boundary_token="WB", convention=convention)
        assert load_tagged(path, boundary_tokens=("WB",)) == utts


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a b ;eword\n;eword ;eword\n", "corpus.txt:2: the line holds only word-boundary tokens"),
        (b"a b ;eword\nc \xff d ;eword\n", "corpus.txt:2: bytes that are not UTF-8"),
        (b"\n  \n", "empty corpus"),
    ],
)
def test_bad_tagged_files_name_file_and_line(tmp_path: Path, content: bytes, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_tagged(_write(tmp_path, content))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_tagged(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        load_text(tmp_path)


def test_orthographic_text(tmp_path: Path) -> None:
    utts = load_text(_write(tmp_path, "the dog  ran \nhi\n\n"))
    assert utts[0].words == (("t", "h", "e"), ("d", "o", "g"), ("r", "a", "n"))
    assert utts[1].text() == "hi" and len(utts) == 2


def test_hf_dataset_from_local_files_and_saved_folder(tmp_path: Path) -> None:
    """The `datasets` code path the hub uses, with local data (the hub is unreachable here)."""
    rows = [
        {"phonemized_utterance": "a b WORD_BOUNDARY c", "speaker": "x"},
        {"phonemized_utterance": "d e", "speaker": "y"},
    ]
    ds = datasets.Dataset.from_list(rows)
    ds.to_json(tmp_path / "data.jsonl")
    from_json_folder = load_hf(str(tmp_path), split="train", column="phonemized_utterance")
    assert from_json_folder == [Utterance((("a", "b"), ("c",))), Utterance((("d", "e"),))]
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    saved = load_hf(str(tmp_path / "saved"), split="train", column="phonemized_utterance")
    assert saved == from_json_folder
    with pytest.raises(DataError, match="no column 'text'"):
        load_hf(str(tmp_path / "saved"), split="train", column="text")


def test_hf_rows_filtered_by_where_before_max_rows(tmp_path: Path) -> None:
    """IPA-CHILDES' layout (one CSV, `is_child` beside `phonemized_utterance`): `where` keeps the
    adults' rows, and max_rows counts the rows kept."""
    folder = tmp_path / "Eng-NA"
    folder.mkdir()
    lines = ["is_child,target_child_age,phonemized_utterance"]
    for i in range(6):
        child = i % 2 == 1
        lines.append(f"{child},{20 + i},{'c h' if child else 'a d'} WORD_BOUNDARY u {i}")
    (folder / "processed.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    adults = load_hf(str(folder), column="phonemized_utterance", where={"is_child": False})
    assert [u.words[0] for u in adults] == [("a", "d")] * 3
    assert [u.words[1][-1] for u in adults] == ["0", "2", "4"]
    first_two = load_hf(
        str(folder), column="phonemized_utterance", where={"is_child": False}, max_rows=2
    )
    assert first_two == adults[:2]
    with pytest.raises(DataError, match="'where' names no column 'speaker'"):
        load_hf(str(folder), column="phonemized_utterance", where={"speaker": "MOT"})


def test_synthetic_corpus_is_seeded_zipfian_and_varied() -> None:
    a, b, c = (
        synthetic_corpus(3000, seed=1),
        synthetic_corpus(3000, seed=1),
        synthetic_corpus(3000, seed=2),
    )
    assert a == b and a != c
    counts: dict[tuple[str, ...], int] = {}
    for u in a:
        for w in u.words:
            counts[w] = counts.get(w, 0) + 1
    freqs = sorted(counts.values(), reverse=True)
    assert freqs[0] > 10 * freqs[len(freqs) // 2]  # a long-tailed word distribution
    assert {len(u.words) for u in a} >= {1, 2, 3, 4}
    assert len({len(w) for w in counts}) >= 4  # words of varied lengths


def test_a_synthetic_language_has_its_own_inventory_and_word_lengths() -> None:
    """`consonants`, `vowels` and `syllable_weights` make another "language": only its phonemes,
    its word lengths, and the default corpus unchanged by the options' existence."""

    source = DataSource(
        kind="synthetic",
        n_utterances=2000,
        seed=3,
        lexicon_size=100,
        consonants=("k", "ʁ", "ŋ", "ts"),
        vowels=("a", "ɛ"),
        syllable_weights=(0, 0, 1, 1),  # 3 or 4 syllables
    )
    utts = source.load()
    assert utts == source.load()  # seeded
    words = {w for u in utts for w in u.words}
    assert {p for w in words for p in w} == {"k", "ʁ", "ŋ", "ts", "a", "ɛ"}
    syllables = {sum(p in ("a", "ɛ") for p in w) for w in words}  # one vowel per syllable
    assert syllables == {3, 4}
    default = synthetic_corpus(2000, seed=3, lexicon_size=100)
    assert {p for u in default for w in u.words for p in w} <= {
        *corpus.SYNTHETIC_CONSONANTS,
        *corpus.SYNTHETIC_VOWELS,
    }
    assert (
        default == DataSource(kind="synthetic", n_utterances=2000, seed=3, lexicon_size=100).load()
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"vowels": ["a", "a"]}, "vowels ['a', 'a']: give distinct phonemes"),
        ({"consonants": ["k t"]}, "consonants ['k t']: give distinct phonemes"),
        ({"consonants": ["UTT_BOUNDARY"]}, "no boundary or special token"),
        ({"syllable_weights": [0, 0]}, "syllable_weights [0.0, 0.0]: the weights"),
        ({"syllable_weights": [1, -1]}, "non-negative"),
    ],
)
def test_a_bad_synthetic_inventory_is_refused_naming_the_key(fields, expected) -> None:  # type: ignore[no-untyped-def]

    with pytest.raises(ValueError, match=re.escape(expected)):
        DataSource(kind="synthetic", **fields)


def test_an_inventory_on_a_file_source_or_too_small_for_its_lexicon_is_refused(
    tmp_path: Path,
) -> None:

    path = tmp_path / "c.txt"
    write_tagged(path, synthetic_corpus(5))
    with pytest.raises(ValueError, match="vowels make a synthetic language: kind 'tagged'"):
        DataSource(kind="tagged", path=str(path), vowels=("a",))
    tiny = DataSource(
        kind="synthetic", consonants=("k",), vowels=("a",), syllable_weights=(1,), lexicon_size=5
    )
    with pytest.raises(ConfigError, match=r"lexicon_size 5: 1 consonant\(s\), 1 vowel\(s\)"):
        tiny.load()


def test_tokenizer_round_trip(tmp_path: Path) -> None:
    utts = [Utterance((("oʊ", "k"), ("eɪ",))), Utterance((("d", "ɑːɹ"),))]
    tok = build_tokenizer(utts)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).get_vocab() == tok.get_vocab() == again.get_vocab()
    assert again.bos_token == again.eos_token == "UTT_BOUNDARY"
    assert again.pad_token == "PAD" and again.unk_token == "UNK"
    ids = again("oʊ k eɪ").input_ids
    assert again.convert_ids_to_tokens(ids) == ["oʊ", "k", "eɪ"]
    assert encode(again, utts)[0] == ids
    assert again("zz").input_ids == [again.unk_token_id]  # unseen phoneme


def test_stream_and_blocks() -> None:
    stream = token_stream([[5, 6], [7]], boundary_id=2)
    assert stream.tolist() == [2, 5, 6, 2, 7, 2]
    assert blocks(stream, 2, offset=1).tolist() == [[5, 6], [2, 7]]


def test_block_sampler_is_a_function_of_the_batch_index() -> None:
    stream = torch.arange(1000)
    a = BlockSampler(stream, block_size=10, batch_size=4, seed=0)
    b = BlockSampler(stream, block_size=10, batch_size=4, seed=0)
    late = [a.batch(i) for i in (0, 30, 3, 30)]
    assert torch.equal(late[1], late[3])
    assert torch.equal(late[0], b.batch(0)) and torch.equal(late[2], b.batch(3))
    epoch0 = torch.cat([a.batch(i) for i in range(a.batches_per_epoch)])
    assert epoch0.unique(dim=0).shape[0] == epoch0.shape[0]  # no block twice in an epoch


def test_model_presets_and_explicit_shapes() -> None:
    assert ModelConfig(preset="1M").n_layer == 6
    explicit = ModelConfig(preset=None, n_layer=3, n_embd=64, n_head=4)
    assert (explicit.n_layer, explicit.n_embd, explicit.n_head) == (3, 64, 4)
    overridden = ModelConfig(preset="5M", n_layer=2)
    assert (overridden.n_layer, overridden.n_embd) == (2, 256)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": {"n_head": 3}}, "n_embd 128 must be divisible by n_head 3"),
        ({"model": {"preset": None, "n_layer": 2}}, "n_embd is needed when preset is null"),
        ({"training": {"block_size": 512}}, "exceeds model.n_positions"),
        ({"data": {"train": {"kind": "hf"}}}, "needs 'name'"),
        ({"training": {"optimizer": "adam"}}, "training.optimizer"),
    ],
)
def test_config_errors_are_one_line(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(RunConfig, data, source="x.yaml")
    message = str(info.value)
    assert message.startswith("x.yaml: ") and expected in message and "\n" not in message


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "training: {lr: 0.003}\nmodel: {preset: 400k}\n", "run.yaml")
    cfg = load_run_config(path)
    assert cfg.training.lr == 0.003 and cfg.model.n_layer == 2
    changed = cfg.with_overrides({"training.lr": 0.01, "model.n_layer": 3})
    assert changed.training.lr == 0.01 and changed.model.n_layer == 3 and cfg.training.lr == 0.003
    bigger = changed.with_overrides({"model.preset": "5M"})
    assert (bigger.model.n_layer, bigger.model.n_embd, bigger.model.n_head) == (6, 256, 8)
    with pytest.raises(ConfigError, match=r"training\.lrr"):
        cfg.with_overrides({"training.lrr": 1})
    assert boundary_id(build_tokenizer(synthetic_corpus(5))) == 2
