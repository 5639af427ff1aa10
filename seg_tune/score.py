"""Score a word segmentation against the gold one, with the wordseg conventions.

Every paper in the area reports these twelve numbers, so seg_tune reports exactly them:
- token P/R/F: a predicted word counts when its (start, end) span matches a gold word's span in the
  same utterance; counts are summed over utterances;
- type P/R/F: the lexicon (set of distinct words) of the whole segmented corpus against the gold
  lexicon. A word's identity (`type_key`) follows wordseg by default: its phoneme symbols
  concatenated with no separator ("wordseg"), so that with multi-character phonemes two
  different phoneme sequences can be one type (`a ɪ` and `aɪ` are both "aɪ"). `type_key=
  "phonemes"` keys a word by its phoneme sequence instead (stricter: those are two types). On
  held-out English CHILDES with random segmentations the two differ by up to 0.002 in type P/R/F
  and nowhere else; papers report wordseg's;
- boundary_all P/R/F: boundaries counted with the two utterance edges (so a prediction always
  gets those right);
- boundary_noedge P/R/F: only utterance-internal boundaries (the usual headline number).
F = 2 * correct / (predicted + gold); any ratio with a zero denominator is 0.0.

Scoring runs many times inside training (14,000 utterances at every evaluation), so it works on
flat numpy arrays of word-start flags over the whole corpus instead of per-word Python objects.
`Scorer` keeps the gold side prepared; `score` and `score_starts` are one-shot conveniences.

CLI: `python -m seg_tune.score GOLD PRED [--json] [--boundary-token TOK ...]`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np

from seg_tune.corpus import Utterance
from seg_tune.errors import DataError, location
from seg_tune.metrics import LEVEL_LABELS
from seg_tune.metrics import SCORE_KEYS as SCORE_KEYS  # the 12 keys every score dict has

LEVELS: tuple[str, ...] = ("token", "type", "boundary_all", "boundary_noedge")

TypeKey = Literal["wordseg", "phonemes"]
TYPE_KEYS: tuple[str, ...] = ("wordseg", "phonemes")
DEFAULT_TYPE_KEY: TypeKey = "wordseg"  # what a word type is (module docstring)

# `where(i)` names the 0-based utterance i in error messages (the CLI maps it to file lines).
Locator = Callable[[int], str]


def _default_where(i: int) -> str:
    return f"utterance {i + 1}"


def _shorten(phonemes: Sequence[str], max_chars: int = 40) -> str:
    text = " ".join(phonemes)
    return repr(text if len(text) <= max_chars else text[: max_chars - 3] + "...")


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall, F; 0.0 wherever the denominator is zero (nothing predicted or no gold)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    total = predicted + gold
    return precision, recall, (2 * correct / total if total else 0.0)


def _word_lengths(starts: np.ndarray) -> np.ndarray:
    """Length of the word starting at each position (0 where no word starts).

    Every utterance start is a word start, so no word crosses an utterance edge."""
    idx = np.flatnonzero(starts)
    lengths = np.zeros(len(starts), dtype=np.int64)
    lengths[idx] = np.diff(idx, append=len(starts))
    return lengths


class Scorer:
    """The gold side of scoring, prepared once: reuse it to score many predictions quickly."""

    def __init__(
        self,
        gold: Sequence[Utterance],
        *,
        where: Locator = _default_where,
        type_key: TypeKey = DEFAULT_TYPE_KEY,
    ) -> None:
        if type_key not in TYPE_KEYS:
            raise ValueError(f"type_key {type_key!r}: use one of {', '.join(TYPE_KEYS)}")
        self.n_utterances = len(gold)
        self.type_key = type_key
        self._where = where
        self._phonemes = [tuple(chain.from_iterable(u.words)) for u in gold]
        self._lengths = np.fromiter((len(p) for p in self._phonemes), np.int64, len(gold))
        self.n_phonemes = int(self._lengths.sum())
        # _utt_starts[i]: True where flat position i is the first phoneme of an utterance
        self._utt_starts = np.zeros(self.n_phonemes, dtype=bool)
        self._utt_starts[np.cumsum(self._lengths) - self._lengths] = True
        self._internal = ~self._utt_starts
        # The corpus as one string, one character per phoneme: a word is then a cheap slice.
        codes: dict[str, str] = {}
        self._text = "".join(
            codes.setdefault(p, chr(len(codes) + 1)) for p in chain.from_iterable(self._phonemes)
        )
        self._symbol = {code: phoneme for phoneme, code in codes.items()}
        self._gold_starts = self._flat_starts_from_words(gold)
        self._gold_lengths = _word_lengths(self._gold_starts)
        self._gold_lexicon = self._lexicon(self._gold_starts)
        self._gold_words = int(np.count_nonzero(self._gold_starts))
        self._gold_internal = int(np.count_nonzero(self._gold_starts & self._internal))

    # ------------------------------------------------------------------ building start flags

    def _flat_starts_from_words(self, utterances: Sequence[Utterance]) -> np.ndarray:
        """Word-start flags over the whole corpus: word starts are the running sums of lengths."""
        word_lengths = np.fromiter((len(w) for u in utterances for w in u.words), dtype=np.int64)
        starts = np.zeros(self.n_phonemes, dtype=bool)
        starts[np.cumsum(word_lengths) - word_lengths] = True
        return starts

    def _check_count(self, n_pred: int) -> None:
        if n_pred != self.n_utterances:
            raise DataError(
                f"the gold has {self.n_utterances} utterances but the prediction has {n_pred}; "
                "both must hold the same utterances in the same order"
            )

    def _check_phonemes(self, pred: Sequence[Utterance]) -> None:
        self._check_count(len(pred))
        for i, (gold_ph, utt) in enumerate(zip(self._phonemes, pred, strict=True)):
            pred_ph = tuple(chain.from_iterable(utt.words))
            if pred_ph != gold_ph:
                raise DataError(
                    f"{self._where(i)}: the phonemes differ: gold {_shorten(gold_ph)}, "
                    f"predicted {_shorten(pred_ph)}; a prediction must segment the gold phonemes"
                )

    def _flat_starts_from_flags(self, pred_starts: Sequence[Sequence[bool]]) -> np.ndarray:
        self._check_count(len(pred_starts))
        arrays = [np.asarray(s, dtype=bool).reshape(-1) for s in pred_starts]
        for i, (flags, n) in enumerate(zip(arrays, self._lengths.tolist(), strict=True)):
            if len(flags) != n:
                raise DataError(
                    f"{self._where(i)}: {len(flags)} word-start flags for {n} phonemes; "
                    "give one flag per phoneme"
                )
        starts = np.concatenate(arrays) if arrays else np.zeros(0, dtype=bool)
        return starts | self._utt_starts  # position 0 of an utterance always starts a word

    # ------------------------------------------------------------------ scoring

    def _lexicon(self, starts: np.ndarray) -> set[str]:
        """The distinct words, keyed by `type_key`: each coded slice (one character per phoneme)
        is one phoneme sequence; for wordseg, its symbols are then concatenated."""
        idx = np.flatnonzero(starts).tolist()
        text = self._text
        ends = [*idx[1:], len(text)] if idx else []
        sequences = {text[a:b] for a, b in zip(idx, ends, strict=True)}
        if self.type_key == "phonemes":
            return sequences
        symbol = self._symbol
        return {"".join(symbol[c] for c in word) for word in sequences}

    def score(self, pred: Sequence[Utterance]) -> dict[str, float]:
        """The 12 scores of predicted utterances (same phonemes as the gold, in the same order)."""
        self._check_phonemes(pred)
        return self._score(self._flat_starts_from_words(pred))

    def score_starts(self, pred_starts: Sequence[Sequence[bool]]) -> dict[str, float]:
        """The 12 scores of predicted word-start flags, one sequence per utterance."""
        return self._score(self._flat_starts_from_flags(pred_starts))

    def interval(
        self,
        pred_starts: Sequence[Sequence[bool]],
        key: str,
        *,
        n_boot: int = 1000,
        level: float = 0.95,
        seed: int = 0,
    ) -> tuple[float, float] | None:
        """A percentile bootstrap interval of score `key` over utterances: the utterances are
        resampled with replacement `n_boot` times (seeded) and the score recomputed from their
        counts. None for type scores (a lexicon is not a sum over utterances) and for fewer than
        2 utterances. It measures how much the score depends on which utterances were scored."""
        level_name, _, measure = key.rpartition("_")
        if level_name not in ("token", "boundary_all", "boundary_noedge") or self.n_utterances < 2:
            return None
        starts = self._flat_starts_from_flags(pred_starts)
        first = np.cumsum(self._lengths) - self._lengths
        nonempty = self._lengths > 0
        offsets = first[nonempty]

        def per_utt(flags: np.ndarray) -> np.ndarray:
            out = np.zeros(self.n_utterances, dtype=np.int64)
            out[nonempty] = np.add.reduceat(flags.astype(np.int64), offsets)
            return out

        if level_name == "token":
            pred_lengths = _word_lengths(starts)
            correct = per_utt((pred_lengths == self._gold_lengths) & starts)
            predicted, gold = per_utt(starts), per_utt(self._gold_starts)
        else:
            inside = starts & self._internal
            correct = per_utt(inside & self._gold_starts)
            predicted, gold = per_utt(inside), per_utt(self._gold_starts & self._internal)
            if level_name == "boundary_all":
                edges = 2 * nonempty.astype(np.int64)
                correct, predicted, gold = correct + edges, predicted + edges, gold + edges
        counts = np.stack([correct, predicted, gold], axis=1).astype(np.float64)
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, self.n_utterances, size=(n_boot, self.n_utterances))
        weights = np.stack([np.bincount(d, minlength=self.n_utterances) for d in draws])
        c, n_pred, n_gold = (weights @ counts).T
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {
                "precision": np.where(n_pred > 0, c / n_pred, 0.0),
                "recall": np.where(n_gold > 0, c / n_gold, 0.0),
                "fscore": np.where(n_pred + n_gold > 0, 2 * c / (n_pred + n_gold), 0.0),
            }[measure]
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)

    def _score(self, starts: np.ndarray) -> dict[str, float]:
        n_utt = self.n_utterances
        pred_lengths = _word_lengths(starts)
        token_correct = int(np.count_nonzero((pred_lengths == self._gold_lengths) & starts))
        lexicon = self._lexicon(starts)
        pred_internal = int(np.count_nonzero(starts & self._internal))
        both_internal = int(np.count_nonzero(starts & self._gold_starts & self._internal))
        counts = {
            "token": (token_correct, int(np.count_nonzero(starts)), self._gold_words),
            "type": (len(lexicon & self._gold_lexicon), len(lexicon), len(self._gold_lexicon)),
            # with edges: each utterance adds its start and its end, both always right
            "boundary_all": (
                both_internal + 2 * n_utt,
                pred_internal + 2 * n_utt,
                self._gold_internal + 2 * n_utt,
            ),
            "boundary_noedge": (both_internal, pred_internal, self._gold_internal),
        }
        result: dict[str, float] = {}
        for level in LEVELS:
            p, r, f = _prf(*counts[level])
            result |= {f"{level}_precision": p, f"{level}_recall": r, f"{level}_fscore": f}
        return result


def score(
    gold: Sequence[Utterance],
    pred: Sequence[Utterance],
    *,
    where: Locator = _default_where,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> dict[str, float]:
    """The 12 wordseg scores (keys `SCORE_KEYS`, fractions in [0, 1]) of `pred` against `gold`.

    Raises DataError when the utterance counts differ or an utterance's phonemes differ."""
    return Scorer(gold, where=where, type_key=type_key).score(pred)


def score_starts(
    gold: Sequence[Utterance],
    pred_starts: Sequence[Sequence[bool]],
    *,
    where: Locator = _default_where,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> dict[str, float]:
    """Like `score`, from predicted word-start flags (one per phoneme; position 0 always starts)."""
    return Scorer(gold, where=where, type_key=type_key).score_starts(pred_starts)


# --------------------------------------------------------------------------- presentation


def format_table(scores: dict[str, float]) -> str:
    """A small table: one row per level, precision / recall / F-score columns."""
    lines = [f"{'':<16}{'P':>8}{'R':>8}{'F':>8}"]
    for level in LEVELS:
        p, r, f = (scores[f"{level}_{m}"] for m in ("precision", "recall", "fscore"))
        lines.append(f"{LEVEL_LABELS[level]:<16}{p:>8.4f}{r:>8.4f}{f:>8.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _nonblank_line_numbers(path: Path) -> list[int]:
    """1-based file line of each utterance (load_tagged skips blank lines)."""
    with path.open("rb") as fh:
        return [n for n, raw in enumerate(fh, start=1) if raw.strip()]


def file_locator(gold_path: Path, pred_path: Path) -> Locator:
    """Name utterance i by its lines in both files, for error messages."""
    gold_lines = _nonblank_line_numbers(gold_path)
    pred_lines = _nonblank_line_numbers(pred_path)

    def where(i: int) -> str:
        g = location(gold_path, gold_lines[i]) if i < len(gold_lines) else "?"
        p = location(pred_path, pred_lines[i]) if i < len(pred_lines) else "?"
        return f"utterance {i + 1} ({g} vs {p})"

    return where


if __name__ == "__main__":  # `python -m seg_tune.score`: the command is `seg_tune.cli.score`
    from seg_tune.cli.score import main

    sys.exit(main())
