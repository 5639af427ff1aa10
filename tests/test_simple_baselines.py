"""wordseg's simple baselines: hand-computed tiny corpora, the random one on real data, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seg_tune.baseline import (
    SIMPLE_BASELINE_LABELS,
    gold_boundary_rate,
    simple_baselines,
    tp_all_scores,
)
from seg_tune.cli.baseline import main
from seg_tune.corpus import Utterance, load_tagged
from seg_tune.score import SCORE_KEYS

NAMES = ["random_gold_rate", "every_phoneme", "every_utterance"]


def utt(text: str) -> Utterance:
    """'a bc' -> words (a,), (b, c): one letter per phoneme, spaces between words."""
    return Utterance(tuple(tuple(word) for word in text.split()))


# Gold "a bc" | "de" | "f g h": 8 phonemes, 6 words, of which 4 (a, f, g, h) one phoneme long.
# Internal positions 2 + 1 + 2 = 5; internal gold boundaries 1 + 0 + 2 = 3 (gold rate 3/5).
# Gold lexicon {a, bc, de, f, g, h}: 6 types.
CORPUS = [utt("a bc"), utt("de"), utt("f g h")]


def test_names_labels_and_keys() -> None:
    result = simple_baselines(CORPUS)
    assert list(result) == NAMES == list(SIMPLE_BASELINE_LABELS)
    assert all(tuple(scores) == SCORE_KEYS for scores in result.values())
    assert "gold" in SIMPLE_BASELINE_LABELS["random_gold_rate"]
    assert gold_boundary_rate(CORPUS) == pytest.approx(3 / 5)


def test_every_phoneme_by_hand() -> None:
    s = simple_baselines(CORPUS)["every_phoneme"]
    # 8 one-phoneme words predicted; the 4 one-phoneme gold words are right
    assert s["token_precision"] == pytest.approx(4 / 8)
    assert s["token_recall"] == pytest.approx(4 / 6)
    # lexicon {a..h}: 8 types, 4 of them (a, f, g, h) gold
    assert s["type_precision"] == pytest.approx(4 / 8)
    assert s["type_recall"] == pytest.approx(4 / 6)
    # internal: 5 predicted, 3 gold, all 3 found
    assert s["boundary_noedge_recall"] == 1.0
    assert s["boundary_noedge_precision"] == pytest.approx(3 / 5)
    assert s["boundary_noedge_fscore"] == pytest.approx(2 * 3 / (5 + 3))
    # with the 2 edges of each of 3 utterances: 9 of 11 predicted, 9 gold
    assert s["boundary_all_recall"] == 1.0
    assert s["boundary_all_precision"] == pytest.approx(9 / 11)


def test_every_utterance_by_hand() -> None:
    s = simple_baselines(CORPUS)["every_utterance"]
    # words "abc", "de", "fgh": only "de" is a gold word (token and type)
    assert s["token_precision"] == pytest.approx(1 / 3)
    assert s["token_recall"] == pytest.approx(1 / 6)
    assert s["type_precision"] == pytest.approx(1 / 3)
    assert s["type_recall"] == pytest.approx(1 / 6)
    # no internal boundary predicted: recall 0, and the Scorer's zero-denominator precision is 0.0
    assert s["boundary_noedge_recall"] == 0.0
    assert s["boundary_noedge_precision"] == 0.0
    assert s["boundary_noedge_fscore"] == 0.0
    # edges only: 6 predicted, all right, of 9 gold
    assert s["boundary_all_precision"] == 1.0
    assert s["boundary_all_recall"] == pytest.approx(6 / 9)


def test_random_at_the_extreme_rates_is_the_trivial_segmentations() -> None:
    # every gold word one phoneme: rate 1, every internal position cut
    singles = [utt("a b c"), utt("d e")]
    assert simple_baselines(singles)["random_gold_rate"] == dict.fromkeys(SCORE_KEYS, 1.0)
    # every utterance one word: rate 0, nothing cut
    wholes = [utt("abc"), utt("de"), utt("f")]
    result = simple_baselines(wholes, seed=3)
    assert result["random_gold_rate"] == result["every_utterance"]


def test_empty_corpus_scores_zero() -> None:
    assert simple_baselines([]) == {name: dict.fromkeys(SCORE_KEYS, 0.0) for name in NAMES}


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def dev2000() -> list[Utterance]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "childes-en" / "dev.txt"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    return load_tagged(path)[:2000]


def test_random_gold_rate_on_dev(dev2000: list[Utterance]) -> None:
    first = simple_baselines(dev2000, seed=0)
    assert simple_baselines(dev2000, seed=0) == first  # deterministic for a seed
    other = simple_baselines(dev2000, seed=1)
    assert other["random_gold_rate"] != first["random_gold_rate"]
    assert other["every_phoneme"] == first["every_phoneme"]  # only the random one is seeded

    internal = sum(len(u) - 1 for u in dev2000)
    gold = sum(len(u.words) - 1 for u in dev2000)
    gold_rate = gold / internal
    for result in (first, other):
        s = result["random_gold_rate"]
        correct = s["boundary_noedge_recall"] * gold  # recall = correct / gold
        predicted = correct / s["boundary_noedge_precision"]  # precision = correct / predicted
        assert abs(predicted / internal - gold_rate) < 0.01
        # boundaries placed at random at rate p: precision and recall both near p
        assert abs(s["boundary_noedge_precision"] - gold_rate) < 0.02
        assert abs(s["boundary_noedge_recall"] - gold_rate) < 0.02


def test_every_phoneme_token_precision_on_dev(dev2000: list[Utterance]) -> None:
    phonemes = sum(len(u) for u in dev2000)
    single = sum(len(w) == 1 for u in dev2000 for w in u.words)
    s = simple_baselines(dev2000)["every_phoneme"]
    assert s["token_precision"] == pytest.approx(single / phonemes)
    assert s["boundary_noedge_recall"] == 1.0
    assert simple_baselines(dev2000)["every_utterance"]["boundary_noedge_recall"] == 0.0


# --------------------------------------------------------------------------- CLI


def test_cli_all_prints_the_simple_rows_below_the_tp_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("".join(u.tagged() + "\n" for u in CORPUS), encoding="utf-8")
    assert main(["tp", str(data), "--all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result)[6:] == NAMES
    assert result["every_phoneme"] == simple_baselines(CORPUS)["every_phoneme"]
    assert main(["tp", str(data), "--all", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[7:10]] == NAMES
    assert f"random_gold_rate = {SIMPLE_BASELINE_LABELS['random_gold_rate']}, seed 5" in lines


# Gold "a ɪ" (one word, two phonemes) | "aɪ" (one word, one phoneme): wordseg's concatenation
# makes them one type "aɪ"; keyed by phonemes they are two.
MERGED = [Utterance((("a", "ɪ"),)), Utterance((("aɪ",),))]


def test_type_key_reaches_every_baseline_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every phoneme a word predicts {a, ɪ, aɪ}: the one gold type is found (wordseg), or one
    # of two (phonemes)
    wordseg = simple_baselines(MERGED)["every_phoneme"]
    phonemes = simple_baselines(MERGED, type_key="phonemes")["every_phoneme"]
    assert (wordseg["type_recall"], phonemes["type_recall"]) == (1.0, 0.5)
    assert wordseg["type_precision"] == phonemes["type_precision"] == pytest.approx(1 / 3)
    assert wordseg["token_fscore"] == phonemes["token_fscore"]  # only types differ
    tp_w, tp_p = tp_all_scores(MERGED), tp_all_scores(MERGED, type_key="phonemes")
    assert any(tp_w[k]["type_recall"] != tp_p[k]["type_recall"] for k in tp_w)
    assert all(tp_w[k]["boundary_all_fscore"] == tp_p[k]["boundary_all_fscore"] for k in tp_w)
    data = tmp_path / "merged.txt"
    data.write_text("".join(u.tagged() + "\n" for u in MERGED), encoding="utf-8")
    for key, expected in (("wordseg", wordseg), ("phonemes", phonemes)):
        assert main(["tp", str(data), "--all", "--json", "--type-key", key]) == 0
        assert json.loads(capsys.readouterr().out)["every_phoneme"] == expected
    assert main(["tp", str(data), "--type-key", "letters"]) == 2
    assert "--type-key: invalid choice: 'letters'" in capsys.readouterr().err
