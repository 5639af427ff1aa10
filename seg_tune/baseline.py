"""The transitional-probability (TP) baseline: the classic statistic-dip word segmentation.

It follows wordseg's `tp` algorithm (bootphon/wordseg, `wordseg/algos/tp.py`) so that its numbers
can stand beside the published ones:
- The utterances are joined into one stream with ONE utterance-boundary unit (UB) between
  consecutive utterances; none at the very start or end of the stream. UB is counted like any
  unit: c(UB) = number of utterances - 1, and the pairs (last phoneme, UB) and (UB, first phoneme)
  are bigrams, so they enter the statistics, the mean of the absolute threshold and the
  neighbour comparisons of the relative threshold.
- For each distinct bigram xy: forward TP = c(xy)/c(x); backward TP = c(xy)/c(y); mutual
  information = log2(c(xy) / (c(x) c(y))). The reference does NOT multiply by the number of units
  N; that only shifts every value by log2 N, which changes no decision of either threshold, and
  we follow the reference.
- "relative": a boundary between x and y when stat(w x) > stat(x y) < stat(y z). As in the
  reference this is only tested where both neighbouring pairs exist in the stream, so never
  between the first two units of the stream nor between its last two.
- "absolute": a boundary wherever stat(x y) <= the mean of the statistic over the distinct bigram
  types (UB bigrams included); the mean is summed in first-occurrence order, as the reference's
  dictionary does, so ties at the mean fall the same way.
- A boundary always stands on each side of UB: utterance edges are word edges.
Statistics are computed on the corpus being segmented (the reference's default, no training text).

CLI: `python -m seg_tune.baseline tp DATA --direction forward|backward|mi
--threshold relative|absolute [--json] [--write-segmentation FILE] [--all]`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from itertools import chain
from typing import Literal, get_args

import numpy as np

from seg_tune.corpus import Utterance
from seg_tune.errors import ConfigError
from seg_tune.metrics import TABLE_COLUMNS
from seg_tune.score import Scorer

Direction = Literal["forward", "backward", "mi"]
Threshold = Literal["relative", "absolute"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
THRESHOLDS: tuple[str, ...] = get_args(Threshold)
COMBINATIONS: tuple[tuple[str, str], ...] = tuple((d, t) for d in DIRECTIONS for t in THRESHOLDS)

_UB = 0  # id of the utterance-boundary unit; phonemes get ids from 1, so it can never collide


def _stream(utterances: Sequence[Utterance]) -> tuple[np.ndarray, np.ndarray]:
    """Unit ids of the joined stream (UB between utterances) and the stream index of each phoneme."""
    ids: dict[str, int] = {}
    stream: list[int] = []
    for i, utt in enumerate(utterances):
        if i:
            stream.append(_UB)
        stream.extend(ids.setdefault(p, len(ids) + 1) for p in chain.from_iterable(utt.words))
    units = np.asarray(stream, dtype=np.int64)
    return units, np.flatnonzero(units != _UB)


def _type_statistic(c_xy: list[int], c_x: list[int], c_y: list[int], direction: str) -> list[float]:
    """The statistic of each bigram type, in Python floats computed as the reference does."""
    if direction == "forward":
        return [xy / x for xy, x in zip(c_xy, c_x, strict=True)]
    if direction == "backward":
        return [xy / y for xy, y in zip(c_xy, c_y, strict=True)]
    return [math.log(xy / (x * y), 2) for xy, x, y in zip(c_xy, c_x, c_y, strict=True)]


def pair_statistics(units: np.ndarray, direction: str) -> tuple[np.ndarray, float]:
    """Statistic of each adjacent pair of the stream (length len(units) - 1) and its mean over
    the distinct bigram types."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r} is not one of {list(DIRECTIONS)}")
    if len(units) < 2:
        return np.zeros(0), 0.0
    n_ids = int(units.max()) + 1
    unigrams = np.bincount(units, minlength=n_ids)
    codes = units[:-1] * n_ids + units[1:]
    types, first, inverse, counts = np.unique(
        codes, return_index=True, return_inverse=True, return_counts=True
    )
    x, y = types // n_ids, types % n_ids
    values = _type_statistic(counts.tolist(), unigrams[x].tolist(), unigrams[y].tolist(), direction)
    # the reference's mean: a plain sum over its dict, i.e. in first-occurrence order
    mean = sum(values[k] for k in np.argsort(first, kind="stable").tolist()) / len(values)
    return np.asarray(values, dtype=np.float64)[inverse.reshape(-1)], mean


def _boundaries(units: np.ndarray, direction: str, threshold: str) -> np.ndarray:
    """cut[k]: a word boundary between stream units k and k+1."""
    if threshold not in THRESHOLDS:
        raise ConfigError(f"threshold {threshold!r} is not one of {list(THRESHOLDS)}")
    stat, mean = pair_statistics(units, direction)
    if threshold == "absolute":
        cut = stat <= mean
    else:
        cut = np.zeros(len(stat), dtype=bool)
        # pair k is a local dip when both neighbours exist and are strictly higher
        cut[1:-1] = (stat[:-2] > stat[1:-1]) & (stat[1:-1] < stat[2:])
    is_ub = units == _UB
    return cut | is_ub[:-1] | is_ub[1:]


def tp_starts(
    utterances: Sequence[Utterance], direction: Direction, threshold: Threshold
) -> list[np.ndarray]:
    """Word-start flags (one bool array per utterance, True at position 0) of the TP segmentation."""
    units, phoneme_pos = _stream(utterances)
    if len(phoneme_pos) == 0:
        return []
    cut = _boundaries(units, direction, threshold)
    # phoneme at stream index i starts a word when there is a cut between i-1 and i
    starts = np.concatenate(([True], cut))[phoneme_pos]
    lengths = [len(u) for u in utterances]
    return np.split(starts, np.cumsum(lengths)[:-1])


def tp_segment(
    utterances: Sequence[Utterance], direction: Direction, threshold: Threshold
) -> list[Utterance]:
    """TP segmentation of the utterances (only their phonemes are used, not their words)."""
    return [
        Utterance.from_word_starts(u.phonemes, flags.tolist())
        for u, flags in zip(utterances, tp_starts(utterances, direction, threshold), strict=True)
    ]


def tp_scores(
    utterances: Sequence[Utterance],
    direction: Direction,
    threshold: Threshold,
    *,
    scorer: Scorer | None = None,
) -> dict[str, float]:
    """The 12 wordseg scores of the TP segmentation against the utterances' own gold words."""
    scorer = scorer or Scorer(utterances)
    return scorer.score_starts(tp_starts(utterances, direction, threshold))


def tp_all_scores(utterances: Sequence[Utterance]) -> dict[str, dict[str, float]]:
    """Scores of all six direction x threshold combinations, keyed "forward/relative" etc."""
    scorer = Scorer(utterances)
    return {
        f"{d}/{t}": tp_scores(utterances, d, t, scorer=scorer)  # type: ignore[arg-type]
        for d, t in COMBINATIONS
    }


# --------------------------------------------------------------------------- presentation


def format_all_table(results: dict[str, dict[str, float]]) -> str:
    """One row per combination, the F-scores and the boundary_noedge precision/recall."""
    width = max(12, *(len(title) + 2 for title, _ in TABLE_COLUMNS))
    lines = [f"{'':<20}" + "".join(f"{title:>{width}}" for title, _ in TABLE_COLUMNS)]
    for name, scores in results.items():
        row = "".join(f"{scores[key]:>{width}.4f}" for _, key in TABLE_COLUMNS)
        lines.append(f"{name:<20}{row}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


if __name__ == "__main__":  # `python -m seg_tune.baseline`: the command is `seg_tune.cli.baseline`
    from seg_tune.cli.baseline import main

    sys.exit(main())
