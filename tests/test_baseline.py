"""The TP baseline: hand-computed tiny corpora, a slow literal reference, the CLI, real data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seg_tune.baseline import (
    COMBINATIONS,
    SIMPLE_BASELINE_LABELS,
    tp_all_scores,
    tp_scores,
    tp_segment,
    tp_starts,
)
from seg_tune.corpus import Utterance, load_tagged
from seg_tune.errors import ConfigError
from seg_tune.score import SCORE_KEYS, score

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "childes-en"


def utt(text: str) -> Utterance:
    """'ab cd' -> words (a, b), (c, d): one letter per phoneme, spaces between words."""
    return Utterance(tuple(tuple(word) for word in text.split()))


def shown(utterances: list[Utterance]) -> list[str]:
    return [" ".join("".join(w) for w in u.words) for u in utterances]


# --------------------------------------------------------------------------- hand-computed cases

# Corpus "ebd" + "abc" (gold words irrelevant: only phonemes are used).
# Stream (one UB between the utterances, none at the ends): e b d UB a b c
# pair k:        0:eb  1:bd  2:dUB  3:UBa  4:ab  5:bc    (all bigram counts 1, 6 types)
# unigrams: b 2, every other unit (UB included) 1.
# forward  c(xy)/c(x):  1    1/2   1      1      1     1/2   mean 5/6
# backward c(xy)/c(y):  1/2  1     1      1      1/2   1     mean 5/6
# mi log2(c/(cx cy)):   -1   -1    0      0      -1    -1    mean -4/6
# relative: only pairs 1..4 have both neighbours; a dip needs both strictly higher:
#   forward  pair 1 (1 > 1/2 < 1)              -> cut b|d        => "eb d", "abc"
#   backward pair 4 (1 > 1/2 < 1); pair 0 untested -> cut a|b    => "ebd", "a bc"
#   mi       no strict dip (-1 = -1; 0 > -1 but -1 = -1)          => "ebd", "abc"
# absolute (stat <= mean):
#   forward  pairs 1, 5 (1/2 <= 5/6)                              => "eb d", "ab c"
#   backward pairs 0, 4                                           => "e bd", "a bc"
#   mi       pairs 0, 1, 4, 5 (-1 <= -2/3)                        => "e b d", "a b c"
# Pair 1's forward dip only exists because pair 2 (d, UB) is counted: utterances scored on
# their own would give "ebd". Multiplying MI by N would shift every value and the mean alike.
TINY = [utt("e bd"), utt("abc")]
TINY_EXPECTED = {
    ("forward", "relative"): ["eb d", "abc"],
    ("forward", "absolute"): ["eb d", "ab c"],
    ("backward", "relative"): ["ebd", "a bc"],
    ("backward", "absolute"): ["e bd", "a bc"],
    ("mi", "relative"): ["ebd", "abc"],
    ("mi", "absolute"): ["e b d", "a b c"],
}

# Corpus "ab cd" + "cd ab" + "ab e". Stream: a b c d UB c d a b UB a b e
# pair k: 0:ab 1:bc 2:cd 3:dUB 4:UBc 5:cd 6:da 7:ab 8:bUB 9:UBa 10:ab 11:be
# unigrams a 3, b 3, c 2, d 2, e 1, UB 2; bigrams ab 3, cd 2, the 7 others 1 (9 types)
# forward: ab 3/3=1, bc 1/3, cd 2/2=1, dUB 1/2, UBc 1/2, da 1/2, bUB 1/3, UBa 1/2, be 1/3
#   per pair: 1, 1/3, 1, 1/2, 1/2, 1, 1/2, 1, 1/3, 1/2, 1, 1/3;  mean over types = 5/9
#   relative: dips at pair 1 (b|c) and 6 (d|a); pair 11 (b|e) is the last: never tested
#   absolute: <= 5/9 at pairs 1, 6, 11 (and the UB pairs)
# mi: ab log2(3/9), bc log2(1/6), cd log2(2/4) = -1, dUB, UBc log2(1/4) = -2, da, bUB, UBa
#   log2(1/6), be log2(1/3); mean = (2 log2(1/3) + 4 log2(1/6) - 1 - 4) / 9 = -2.057
#   relative: dips at pair 1 (-1.58 > -2.58 < -1) and 6 (-1 > -2.58 < -1.58)
#   absolute: <= -2.057 only at log2(1/6) pairs: 1, 6 (8, 9 are UB pairs); be = -1.58 is above
REPEATS = [utt("ab cd"), utt("cd ab"), utt("ab e")]
REPEATS_EXPECTED = {
    ("forward", "relative"): ["ab cd", "cd ab", "abe"],
    ("forward", "absolute"): ["ab cd", "cd ab", "ab e"],
    ("mi", "relative"): ["ab cd", "cd ab", "abe"],
    ("mi", "absolute"): ["ab cd", "cd ab", "abe"],
}


@pytest.mark.parametrize(("direction", "threshold"), list(TINY_EXPECTED))
def test_tiny_corpus_boundaries_computed_by_hand(direction: str, threshold: str) -> None:
    result = tp_segment(TINY, direction, threshold)  # type: ignore[arg-type]
    assert shown(result) == TINY_EXPECTED[direction, threshold]


@pytest.mark.parametrize(("direction", "threshold"), list(REPEATS_EXPECTED))
def test_repeated_bigrams_boundaries_computed_by_hand(direction: str, threshold: str) -> None:
    result = tp_segment(REPEATS, direction, threshold)  # type: ignore[arg-type]
    assert shown(result) == REPEATS_EXPECTED[direction, threshold]


def test_only_phonemes_are_used_not_the_input_words() -> None:
    resegmented = [utt("eb d"), utt("a b c")]
    for direction, threshold in COMBINATIONS:
        assert tp_segment(resegmented, direction, threshold) == tp_segment(  # type: ignore[arg-type]
            TINY,
            direction,  # type: ignore[arg-type]
            threshold,  # type: ignore[arg-type]
        )


def test_a_phoneme_spelled_UB_is_not_the_utterance_boundary() -> None:
    corpus = [Utterance((("UB", "b", "d"),)), utt("abc")]
    as_letters = tp_segment([utt("ebd"), utt("abc")], "forward", "absolute")
    renamed = tp_segment(corpus, "forward", "absolute")
    assert [u.word_starts for u in renamed] == [u.word_starts for u in as_letters]


def test_short_streams_do_not_crash() -> None:
    assert tp_segment([], "forward", "relative") == []
    for direction, threshold in COMBINATIONS:
        assert shown(tp_segment([utt("a")], direction, threshold)) == ["a"]  # type: ignore[arg-type]
        # two units: no pair has two neighbours, so relative never cuts; absolute: the one
        # bigram type is its own mean, and stat <= mean cuts
        two = shown(tp_segment([utt("ab")], direction, threshold))  # type: ignore[arg-type]
        assert two == (["ab"] if threshold == "relative" else ["a b"])
    # utterances of one phoneme: only UB-forced boundaries
    assert shown(tp_segment([utt("a"), utt("a"), utt("b")], "mi", "relative")) == ["a", "a", "b"]


def test_unknown_direction_or_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="direction 'sideways'"):
        tp_segment(TINY, "sideways", "relative")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold 'median'"):
        tp_segment(TINY, "forward", "median")  # type: ignore[arg-type]


def test_scores_are_the_scores_of_the_segmentation() -> None:
    for direction, threshold in COMBINATIONS:
        seg = tp_segment(REPEATS, direction, threshold)  # type: ignore[arg-type]
        assert tp_scores(REPEATS, direction, threshold) == score(REPEATS, seg)  # type: ignore[arg-type]
    # forward/absolute segments REPEATS perfectly (see above)
    assert tp_all_scores(REPEATS)["forward/absolute"] == dict.fromkeys(SCORE_KEYS, 1.0)


# --------------------------------------------------------------------------- slow reference


def slow_tp(utterances: list[Utterance], direction: str, threshold: str) -> list[list[str]]:
    """The algorithm as described, unit by unit, on a list with a None boundary marker.

    Returns each utterance's words as strings of phonemes joined by '.'."""
    stream: list[str | None] = []
    for i, u in enumerate(utterances):
        if i > 0:
            stream.append(None)
        stream.extend(u.phonemes)
    uni = Counter(stream)
    bi = Counter(pairwise(stream))
    stat: dict[tuple[str | None, str | None], float] = {}
    for (x, y), c in bi.items():  # Counter keeps first-occurrence order
        if direction == "forward":
            stat[x, y] = c / uni[x]
        elif direction == "backward":
            stat[x, y] = c / uni[y]
        else:
            stat[x, y] = math.log(c / (uni[x] * uni[y]), 2)
    mean = sum(stat.values()) / len(stat) if stat else 0.0
    words: list[list[str | None]] = [[stream[0]]] if stream else []
    for j in range(1, len(stream)):
        x, y = stream[j - 1], stream[j]
        if x is None or y is None:
            cut = True
        elif threshold == "absolute":
            cut = stat[x, y] <= mean
        elif 2 <= j <= len(stream) - 2:
            w, z = stream[j - 2], stream[j + 1]
            cut = stat[w, x] > stat[x, y] < stat[y, z]
        else:
            cut = False
        if cut:
            words.append([])
        words[-1].append(y)
    out: list[list[str]] = [[]]
    for word in words:
        if word == [None]:
            out.append([])
        else:
            out[-1].append(".".join(p for p in word if p is not None))
    return out if stream else []


utterance = st.lists(st.sampled_from("abcd"), min_size=1, max_size=7).map(
    lambda ps: Utterance((tuple(ps),))
)


@settings(max_examples=150, deadline=None)
@given(st.lists(utterance, min_size=1, max_size=6))
def test_tp_matches_a_slow_literal_reference(corpus: list[Utterance]) -> None:
    for direction, threshold in COMBINATIONS:
        result = tp_segment(corpus, direction, threshold)  # type: ignore[arg-type]
        got = [[".".join(w) for w in u.words] for u in result]
        assert got == slow_tp(corpus, direction, threshold)
        assert [u.phonemes for u in result] == [u.phonemes for u in corpus]


def test_starts_are_numpy_flags_true_at_position_zero() -> None:
    flags = tp_starts(REPEATS, "forward", "absolute")
    assert [f.tolist() for f in flags] == [u.word_starts for u in REPEATS]


# --------------------------------------------------------------------------- real data


def _spans(word_lengths: list[int]) -> set[tuple[int, int]]:
    """(start, end) of each word over the phoneme positions of one utterance."""
    spans, at = set(), 0
    for n in word_lengths:
        spans.add((at, at + n))
        at += n
    return spans


def test_childes_dev_forward_relative_matches_the_reference_and_its_own_scoring() -> None:
    """On real data: the segmentation is the slow literal reference's, and the scores are those
    of that segmentation counted here from scratch (F = 2 correct / (predicted + gold))."""
    if not DATA.is_dir():
        pytest.skip(f"shared data folder absent: {DATA}")
    corpus = load_tagged(DATA / "dev.txt")
    result = tp_scores(corpus, "forward", "relative")
    reference = slow_tp(corpus, "forward", "relative")
    got = [[".".join(w) for w in u.words] for u in tp_segment(corpus, "forward", "relative")]
    assert got == reference

    tokens = [0, 0, 0]  # correct, predicted, gold
    inner = [0, 0, 0]
    # wordseg's types: a word's phoneme symbols concatenated (seg_tune.score's default)
    gold_lexicon: set[str] = set()
    found_lexicon: set[str] = set()
    for u, words in zip(corpus, reference, strict=True):
        found = [tuple(w.split(".")) for w in words]
        gold_spans, found_spans = _spans([len(w) for w in u.words]), _spans(map(len, found))
        tokens = [
            tokens[0] + len(gold_spans & found_spans),
            tokens[1] + len(found_spans),
            tokens[2] + len(gold_spans),
        ]
        gold_inner = {a for a, _ in gold_spans} - {0}
        found_inner = {a for a, _ in found_spans} - {0}
        inner = [
            inner[0] + len(gold_inner & found_inner),
            inner[1] + len(found_inner),
            inner[2] + len(gold_inner),
        ]
        gold_lexicon.update("".join(w) for w in u.words)
        found_lexicon.update("".join(w) for w in found)
    types = [len(gold_lexicon & found_lexicon), len(found_lexicon), len(gold_lexicon)]
    for key, (correct, predicted, gold) in {
        "token": tokens,
        "type": types,
        "boundary_noedge": inner,
    }.items():
        assert result[f"{key}_precision"] == pytest.approx(correct / predicted, abs=1e-12)
        assert result[f"{key}_recall"] == pytest.approx(correct / gold, abs=1e-12)
        assert result[f"{key}_fscore"] == pytest.approx(2 * correct / (predicted + gold), abs=1e-12)
    # Literature (/work/shared/notes/segmentation.md, "Reference numbers", Brent corpus): TP
    # forward relative (BF 0.643) beats the random baseline with the oracle rate (BF about 0.28).
    # That baseline cuts each internal position with the true boundary rate r, so its expected
    # P = R = F = r: TP must beat r of this corpus.
    internal_positions = sum(len(u) - 1 for u in corpus)
    oracle_rate = inner[2] / internal_positions
    assert result["boundary_noedge_fscore"] > oracle_rate


# --------------------------------------------------------------------------- CLI


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seg_tune.baseline", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data file.txt"
    path.write_text("".join(u.tagged() + "\n" for u in REPEATS), encoding="utf-8")
    return path


def test_cli_json_prints_the_twelve_scores(data_file: Path) -> None:
    proc = run_cli("tp", data_file, "--direction", "forward", "--threshold", "relative", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert tuple(result) == SCORE_KEYS
    # "ab cd", "cd ab", "abe" against gold "ab cd", "cd ab", "ab e": tokens 4 right of 5 / 6
    assert result["token_precision"] == pytest.approx(4 / 5)
    assert result["token_recall"] == pytest.approx(4 / 6)


def test_cli_table_and_written_segmentation(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.txt"
    proc = run_cli(
        "tp", data_file, "--threshold", "absolute", "--write-segmentation", out
    )  # forward by default
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.strip().splitlines()[1:]] == [
        "token",
        "type",
        "boundary+edges",
        "boundary",
    ]
    assert shown(load_tagged(out)) == REPEATS_EXPECTED["forward", "absolute"]


def test_cli_all_prints_six_combinations(data_file: Path) -> None:
    proc = run_cli("tp", data_file, "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result) == [f"{d}/{t}" for d, t in COMBINATIONS] + list(SIMPLE_BASELINE_LABELS)
    assert all(tuple(v) == SCORE_KEYS for v in result.values())
    assert result["forward/absolute"]["token_fscore"] == 1.0
    table = run_cli("tp", data_file, "--all")
    assert table.returncode == 0, table.stderr
    rows = [line.split()[0] for line in table.stdout.strip().splitlines()[1:10]]
    assert rows == [f"{d}/{t}" for d, t in COMBINATIONS] + list(SIMPLE_BASELINE_LABELS)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tp", "MISSING", "--json"), "missing.txt"),
        (("tp", "DATA", "--direction", "sideways"), "sideways"),
        (("tp", "DATA", "--all", "--write-segmentation", "x.txt"), "--all"),
        (("nothing",), "nothing"),
    ],
)
def test_cli_errors_are_one_line_exit_2(
    data_file: Path, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    paths = {"MISSING": tmp_path / "missing.txt", "DATA": data_file}
    proc = run_cli(*(paths.get(a, a) for a in args))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert needle in proc.stderr
