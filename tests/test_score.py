"""The scorer: hand-computed cases, a slow obviously-correct reference, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seg_tune.corpus import Utterance, load_tagged
from seg_tune.errors import DataError
from seg_tune.score import SCORE_KEYS, Scorer, score, score_starts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "childes-en"


def utt(text: str) -> Utterance:
    """'ab cd' -> words (a, b), (c, d): one letter per phoneme, spaces between words."""
    return Utterance(tuple(tuple(word) for word in text.split()))


def utts(*texts: str) -> list[Utterance]:
    return [utt(t) for t in texts]


def approx(expected: dict[str, float]) -> dict[str, object]:
    return {k: pytest.approx(v, abs=1e-12) for k, v in expected.items()}


def prf(level: str, p: float, r: float, f: float) -> dict[str, float]:
    return {f"{level}_precision": p, f"{level}_recall": r, f"{level}_fscore": f}


# --------------------------------------------------------------------------- hand-computed cases


def test_score_keys_are_the_twelve_wordseg_keys_in_order() -> None:
    levels = ("token", "type", "boundary_all", "boundary_noedge")
    expected = tuple(f"{lv}_{m}" for lv in levels for m in ("precision", "recall", "fscore"))
    assert expected == SCORE_KEYS
    assert tuple(score(utts("ab"), utts("ab"))) == SCORE_KEYS


def test_worked_example_from_the_notes() -> None:
    # gold "ab cd", predicted "a bcd": spans {(0,2),(2,4)} vs {(0,1),(1,4)}: no token right;
    # types {ab, cd} vs {a, bcd}: none; internal boundaries {2} vs {1}: none right;
    # with edges {0,2,4} vs {0,1,4}: 2 of 3 on each side.
    result = score(utts("ab cd"), utts("a bcd"))
    expected = (
        prf("token", 0, 0, 0)
        | prf("type", 0, 0, 0)
        | prf("boundary_all", 2 / 3, 2 / 3, 2 / 3)
        | prf("boundary_noedge", 0, 0, 0)
    )
    assert result == approx(expected)


def test_perfect_segmentation_scores_one_everywhere() -> None:
    gold = utts("ab cd", "cd", "a b c", "abc d")
    assert score(gold, gold) == approx(dict.fromkeys(SCORE_KEYS, 1.0))


def test_no_internal_boundary_predicted_gives_zero_noedge_precision_without_crash() -> None:
    # gold "ab cd" vs "abcd": noedge 0 predicted (precision 0/0 -> 0), 1 gold, 0 right;
    # with edges: predicted {0,4}, gold {0,2,4}: P = 2/2, R = 2/3, F = 2*2/(2+3) = 0.8;
    # token: (0,4) is not a gold span; type: {abcd} vs {ab, cd}.
    result = score(utts("ab cd"), utts("abcd"))
    expected = (
        prf("token", 0, 0, 0)
        | prf("type", 0, 0, 0)
        | prf("boundary_all", 1.0, 2 / 3, 0.8)
        | prf("boundary_noedge", 0, 0, 0)
    )
    assert result == approx(expected)


def test_gold_without_internal_boundaries_gives_zero_noedge_recall_without_crash() -> None:
    # one-word gold utterances: noedge gold count 0 (recall 0/0 -> 0); predicted 1 wrong one
    result = score(utts("abc", "d"), utts("a bc", "d"))
    assert result["boundary_noedge_recall"] == 0.0
    assert result["boundary_noedge_precision"] == 0.0
    assert result["boundary_noedge_fscore"] == 0.0
    # tokens: gold {abc, d}, predicted {a, bc, d}: 1 right -> P 1/3, R 1/2, F 2/5
    assert result["token_precision"] == pytest.approx(1 / 3)
    assert result["token_fscore"] == pytest.approx(2 / 5)


def test_token_type_and_boundary_counts_on_a_small_lexicon() -> None:
    gold = utts("ab cd", "ab ef", "cd")
    pred = utts("ab cd", "a bef", "cd")
    # tokens: gold 5, predicted 5, right: ab, cd (utt 1) and cd (utt 3) = 3 -> 3/5 each
    # types: gold {ab, cd, ef} (3), predicted {ab, cd, a, bef} (4), shared {ab, cd} (2):
    #   P = 2/4, R = 2/3, F = 2*2/(4+3) = 4/7 (cd occurs twice but is one type)
    # noedge: gold {2} + {2} + {} = 2, predicted {2} + {1} = 2, right 1 -> 1/2 each
    # with edges: each side + 2 per utterance (6): right 7, predicted 8, gold 8 -> 7/8
    expected = (
        prf("token", 3 / 5, 3 / 5, 3 / 5)
        | prf("type", 1 / 2, 2 / 3, 4 / 7)
        | prf("boundary_all", 7 / 8, 7 / 8, 7 / 8)
        | prf("boundary_noedge", 1 / 2, 1 / 2, 1 / 2)
    )
    assert score(gold, pred) == approx(expected)


def test_type_key_phonemes_keeps_phoneme_sequences_apart() -> None:
    # ("ab",) and ("a", "b") join to the same string but are different phoneme sequences
    gold = [Utterance((("ab",), ("a", "b")))]
    pred = [Utterance((("ab", "a"), ("b",)))]
    result = score(gold, pred, type_key="phonemes")
    assert result["type_precision"] == 0.0  # predicted {ab+a, b}; gold {ab, a+b}
    assert result["token_recall"] == 0.0
    assert Scorer(gold, type_key="phonemes")._gold_lexicon.__len__() == 2
    assert Scorer(gold)._gold_lexicon == {"ab"}  # wordseg: one type


def test_wordseg_types_merge_when_the_symbols_concatenate_alike() -> None:
    """wordseg joins a word's phoneme symbols with no separator: the diphthong `aɪ` and the
    sequence `a ɪ` are one type there, two with type_key phonemes."""
    gold = [Utterance((("aɪ",),)), Utterance((("a", "ɪ"),))]
    pred = [Utterance((("aɪ",),)), Utterance((("a",), ("ɪ",)))]
    wordseg = score(gold, pred)  # gold {aɪ}; predicted {aɪ, a, ɪ}
    assert wordseg["type_precision"] == pytest.approx(1 / 3)
    assert wordseg["type_recall"] == 1.0
    phonemes = score(gold, pred, type_key="phonemes")  # gold {aɪ, a+ɪ}; predicted {aɪ, a, ɪ}
    assert phonemes["type_precision"] == pytest.approx(1 / 3)
    assert phonemes["type_recall"] == 0.5
    assert {k: v for k, v in wordseg.items() if "type" not in k} == {
        k: v for k, v in phonemes.items() if "type" not in k
    }
    with pytest.raises(ValueError, match="type_key 'chars': use one of wordseg, phonemes"):
        Scorer(gold, type_key="chars")  # type: ignore[arg-type]


def test_empty_corpus_scores_zero_without_crash() -> None:
    assert score([], []) == dict.fromkeys(SCORE_KEYS, 0.0)


def test_mismatched_phonemes_raise_data_error_naming_the_utterance() -> None:
    gold = utts("ab cd", "ef gh", "ij")
    pred = utts("ab cd", "ef gx", "ij")
    with pytest.raises(DataError) as exc:
        score(gold, pred)
    message = str(exc.value)
    assert "utterance 2" in message
    assert "'e f g h'" in message and "'e f g x'" in message
    assert "\n" not in message


def test_long_mismatched_utterances_are_shortened_in_the_message() -> None:
    gold = [utt("a" * 300)]
    pred = [utt("a" * 299 + "b")]
    with pytest.raises(DataError, match="utterance 1") as exc:
        score(gold, pred)
    assert len(str(exc.value)) < 250


def test_different_utterance_counts_raise_data_error() -> None:
    with pytest.raises(DataError, match=r"2 utterances.*has 1"):
        score(utts("ab", "cd"), utts("ab"))
    with pytest.raises(DataError, match=r"2 utterances.*has 3"):
        score_starts(utts("ab", "cd"), [[True, False]] * 3)


def test_score_starts_with_wrong_flag_count_raises_data_error() -> None:
    with pytest.raises(DataError, match="utterance 2: 3 word-start flags for 2 phonemes"):
        score_starts(utts("ab", "cd"), [[True, False], [True, False, True]])


def test_score_starts_treats_position_zero_as_a_start_whatever_its_flag() -> None:
    gold = utts("ab cd", "ef")
    as_given = score_starts(gold, [np.array([False, False, True, False]), np.array([False, True])])
    assert as_given == score(gold, utts("ab cd", "e f"))


def test_a_prepared_scorer_gives_the_same_scores_again_and_again() -> None:
    gold = utts("ab cd", "ab ef", "cd")
    scorer = Scorer(gold)
    first = scorer.score(utts("a bcd", "abef", "c d"))
    assert scorer.score(gold) == dict.fromkeys(SCORE_KEYS, 1.0)
    assert scorer.score(utts("a bcd", "abef", "c d")) == first
    assert scorer.score_starts([u.word_starts for u in gold]) == dict.fromkeys(SCORE_KEYS, 1.0)


# --------------------------------------------------------------------------- slow reference


def slow_reference(
    gold: list[Utterance], pred: list[Utterance], type_key: str = "wordseg"
) -> dict[str, float]:
    """The definitions, spelled out word by word: obviously right, and slow. A type is a word's
    phoneme symbols joined with nothing between them (wordseg), or its phoneme tuple."""

    def spans(u: Utterance) -> list[tuple[int, int]]:
        out, pos = [], 0
        for w in u.words:
            out.append((pos, pos + len(w)))
            pos += len(w)
        return out

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    def level(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
        p, r = ratio(correct, n_pred), ratio(correct, n_gold)
        return p, r, ratio(2 * correct, n_pred + n_gold)

    tok = [0, 0, 0]
    b_all = [0, 0, 0]
    b_in = [0, 0, 0]
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(spans(g)), set(spans(p))
        tok = [tok[0] + len(gs & ps), tok[1] + len(ps), tok[2] + len(gs)]
        gb = {s for s, _ in gs} | {e for _, e in gs}
        pb = {s for s, _ in ps} | {e for _, e in ps}
        b_all = [b_all[0] + len(gb & pb), b_all[1] + len(pb), b_all[2] + len(gb)]
        edges = {0, len(g)}
        gi, pi = gb - edges, pb - edges
        b_in = [b_in[0] + len(gi & pi), b_in[1] + len(pi), b_in[2] + len(gi)]

    def key(w: tuple[str, ...]) -> object:
        return "".join(w) if type_key == "wordseg" else w

    gl = {key(w) for u in gold for w in u.words}
    pl = {key(w) for u in pred for w in u.words}
    counts = {
        "token": tok,
        "type": [len(gl & pl), len(pl), len(gl)],
        "boundary_all": b_all,
        "boundary_noedge": b_in,
    }
    result = {}
    for name, (c, n_pred, n_gold) in counts.items():
        result |= prf(name, *level(c, n_pred, n_gold))
    return result


words = st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=3).map(tuple)
utterance = st.lists(words, min_size=1, max_size=4).map(lambda ws: Utterance(tuple(ws)))


@st.composite
def gold_and_flags(draw: st.DrawFn) -> tuple[list[Utterance], list[list[bool]]]:
    gold = draw(st.lists(utterance, min_size=1, max_size=6))
    flags = [draw(st.lists(st.booleans(), min_size=len(u), max_size=len(u))) for u in gold]
    return gold, flags


@settings(max_examples=300, deadline=None)
@given(gold_and_flags())
def test_score_matches_the_slow_reference_on_random_segmentations(
    case: tuple[list[Utterance], list[list[bool]]],
) -> None:
    gold, flags = case
    pred = [Utterance.from_word_starts(u.phonemes, f) for u, f in zip(gold, flags, strict=True)]
    expected = slow_reference(gold, pred)
    result = score(gold, pred)
    assert result == approx(expected)
    assert score(gold, pred, type_key="phonemes") == approx(slow_reference(gold, pred, "phonemes"))
    assert all(0.0 <= v <= 1.0 for v in result.values())
    # flags straight in (numpy or lists, position 0 forced): the same numbers
    assert score_starts(gold, [np.array(f, dtype=bool) for f in flags]) == result
    assert score_starts(gold, flags) == result


# --------------------------------------------------------------------------- real data


def test_scoring_childes_dev_matches_the_slow_reference() -> None:
    """The whole dev set (14,000 utterances) with random boundaries: every score equals the slow
    reference's. Its speed is a benchmark: bench/speed_targets.py (BENCHMARKS.md)."""
    if not DATA.is_dir():
        pytest.skip(f"shared data folder absent: {DATA}")
    gold = load_tagged(DATA / "dev.txt")
    rng = np.random.default_rng(0)
    flags = [rng.random(len(u)) < 0.3 for u in gold]
    result = score_starts(gold, flags)
    pred = [Utterance.from_word_starts(u.phonemes, f) for u, f in zip(gold, flags, strict=True)]
    reference = slow_reference(gold, pred)
    assert all(abs(result[k] - reference[k]) < 1e-9 for k in SCORE_KEYS), (result, reference)
    strict = score_starts(gold, flags, type_key="phonemes")
    strict_reference = slow_reference(gold, pred, "phonemes")
    assert all(abs(strict[k] - strict_reference[k]) < 1e-9 for k in SCORE_KEYS)
    # the conventions differ in the type scores only (English CHILDES has multi-symbol phonemes)
    assert result["type_recall"] != strict["type_recall"]
    assert {k for k in SCORE_KEYS if result[k] != strict[k]} <= {
        "type_precision",
        "type_recall",
        "type_fscore",
    }


# --------------------------------------------------------------------------- CLI


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seg_tune.score", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def worked_files(tmp_path: Path) -> tuple[Path, Path]:
    gold = tmp_path / "gold file.txt"  # a space in the path on purpose
    pred = tmp_path / "pred.txt"
    gold.write_text("a b ;eword c d ;eword\n", encoding="utf-8")
    pred.write_text("a ;eword  b c d ;eword \n\n", encoding="utf-8")  # double/trailing spaces
    return gold, pred


def test_cli_json_prints_exactly_the_twelve_keys(worked_files: tuple[Path, Path]) -> None:
    proc = run_cli(*worked_files, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert tuple(result) == SCORE_KEYS
    assert result["boundary_all_fscore"] == pytest.approx(2 / 3)
    assert result["token_fscore"] == 0.0


def test_cli_table_has_one_row_per_level(worked_files: tuple[Path, Path]) -> None:
    proc = run_cli(*worked_files)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["P", "R", "F"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == ["token", "type", "boundary+edges", "boundary"]  # metrics.LEVEL_LABELS
    assert [float(v) for v in rows["boundary+edges"]] == pytest.approx([2 / 3] * 3, abs=1e-4)


def test_cli_type_key(tmp_path: Path) -> None:
    gold, pred = tmp_path / "gold.txt", tmp_path / "pred.txt"
    gold.write_text("aɪ ;eword\na ɪ ;eword\n", encoding="utf-8")
    pred.write_text("aɪ ;eword\na ;eword ɪ ;eword\n", encoding="utf-8")
    recall = {}
    for key in ("wordseg", "phonemes"):
        proc = run_cli(gold, pred, "--json", "--type-key", key)
        assert proc.returncode == 0, proc.stderr
        recall[key] = json.loads(proc.stdout)["type_recall"]
    assert recall == {"wordseg": 1.0, "phonemes": 0.5}
    default = run_cli(gold, pred, "--json")
    assert json.loads(default.stdout)["type_recall"] == 1.0  # wordseg's, as the papers report
    bad = run_cli(gold, pred, "--type-key", "chars")
    assert bad.returncode == 2 and "invalid choice: 'chars'" in bad.stderr


def test_cli_boundary_token_option(tmp_path: Path) -> None:
    gold = tmp_path / "gold.txt"
    pred = tmp_path / "pred.txt"
    gold.write_text("a b | c d\n", encoding="utf-8")
    pred.write_text("a b | c d\n", encoding="utf-8")
    proc = run_cli(gold, pred, "--json", "--boundary-token", "|")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == dict.fromkeys(SCORE_KEYS, 1.0)
    # without the option '|' is a phoneme and the files hold no boundary token at all: every
    # utterance would be one word (scoring 0), so they are refused, naming the file
    plain = run_cli(gold, pred, "--json")
    assert plain.returncode == 2 and plain.stdout == ""
    assert f"{gold}: no word-boundary token" in plain.stderr


def test_cli_missing_file_is_one_line_error_exit_2(tmp_path: Path) -> None:
    gold = tmp_path / "gold.txt"
    gold.write_text("a b ;eword\n", encoding="utf-8")
    proc = run_cli(gold, tmp_path / "missing.txt", "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ")
    assert "missing.txt" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_mismatched_phonemes_name_the_file_lines(tmp_path: Path) -> None:
    gold = tmp_path / "gold.txt"
    pred = tmp_path / "pred.txt"
    gold.write_text("a b ;eword\nc d ;eword\n", encoding="utf-8")
    pred.write_text("a ;eword b ;eword\n\nc e ;eword\n", encoding="utf-8")  # blank line 2
    proc = run_cli(gold, pred)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert f"{gold}:2" in proc.stderr and f"{pred}:3" in proc.stderr
    assert "'c d'" in proc.stderr and "'c e'" in proc.stderr


def test_cli_usage_error_is_one_line_exit_2(worked_files: tuple[Path, Path]) -> None:
    proc = run_cli(worked_files[0])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


# --------------------------------------------------------------------------- bootstrap interval


@pytest.mark.parametrize(
    "key", ["boundary_noedge_fscore", "boundary_all_precision", "token_recall", "token_fscore"]
)
def test_bootstrap_interval_equals_rescoring_resampled_utterances(key: str) -> None:
    """`Scorer.interval` against the obvious way: draw utterances with replacement (the same
    seeded draws), score each resampled corpus from scratch, take the percentiles."""
    rng = np.random.default_rng(3)
    gold = [
        Utterance(tuple(tuple("ab"[: 1 + int(rng.integers(2))]) for _ in range(1 + i % 4)))
        for i in range(40)
    ]
    flags = [list(rng.random(len(u)) < 0.5) for u in gold]
    low, high = Scorer(gold).interval(flags, key, n_boot=200, seed=7)
    draws = np.random.default_rng(7).integers(0, len(gold), size=(200, len(gold)))
    values = [score_starts([gold[i] for i in d], [flags[i] for i in d])[key] for d in draws]
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    assert low < score_starts(gold, flags)[key] < high


def test_bootstrap_interval_of_a_perfect_segmentation_is_a_point_and_types_have_none() -> None:
    gold = utts("a b ;eword c ;eword", "d ;eword e f ;eword", "g ;eword")
    flags = [u.word_starts for u in gold]
    assert Scorer(gold).interval(flags, "boundary_noedge_fscore") == (1.0, 1.0)
    assert Scorer(gold).interval(flags, "type_fscore") is None  # a lexicon is no sum
    assert Scorer(gold[:1]).interval(flags[:1], "token_fscore") is None  # one utterance
