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

Beside them, wordseg's simple baselines (`simple_baselines`, wordseg-baseline and the two trivial
segmentations), to bound the table from below:
- "random_gold_rate": a boundary at each utterance-internal position with probability p = the gold
  rate of boundaries among the internal positions of the very utterances scored (wordseg-baseline
  with its "oracle" probability). It USES THE GOLD (one number of it), so it is a reference line,
  not an unsupervised learner; its expected boundary_noedge P = R = F = p.
- "every_phoneme": every phoneme a word (boundary recall 1).
- "every_utterance": each utterance one word (no internal boundary predicted).

CLI: `python -m seg_tune.baseline tp DATA --direction forward|backward|mi
--threshold relative|absolute [--json] [--write-segmentation FILE] [--all [--seed N]]`; `--all`
prints the six TP rows and, below them, the three simple baselines.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Literal, get_args

import numpy as np

from seg_tune.corpus import Utterance
from seg_tune.errors import ConfigError
from seg_tune.metrics import TABLE_COLUMNS
from seg_tune.score import DEFAULT_TYPE_KEY, Scorer, TypeKey

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
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> dict[str, float]:
    """The 12 wordseg scores of the TP segmentation against the utterances' own gold words
    (word types keyed by `type_key` when no `scorer` is given)."""
    scorer = scorer or Scorer(utterances, type_key=type_key)
    return scorer.score_starts(tp_starts(utterances, direction, threshold))


def tp_all_scores(
    utterances: Sequence[Utterance], *, type_key: TypeKey = DEFAULT_TYPE_KEY
) -> dict[str, dict[str, float]]:
    """Scores of all six direction x threshold combinations, keyed "forward/relative" etc."""
    scorer = Scorer(utterances, type_key=type_key)
    return {
        f"{d}/{t}": tp_scores(utterances, d, t, scorer=scorer)  # type: ignore[arg-type]
        for d, t in COMBINATIONS
    }


# --------------------------------------------------------------------------- simple baselines

SIMPLE_BASELINE_LABELS: dict[str, str] = {
    "random_gold_rate": "random boundaries at the gold rate (uses gold)",
    "every_phoneme": "every phoneme a word",
    "every_utterance": "each utterance one word",
}
"""The names `simple_baselines` returns, in its order, and what each one is."""


def gold_boundary_rate(utterances: Sequence[Utterance]) -> float:
    """Gold word boundaries per utterance-internal position (0.0 when there is none)."""
    internal = sum(len(u) - 1 for u in utterances)
    boundaries = sum(len(u.words) - 1 for u in utterances)
    return boundaries / internal if internal else 0.0


def simple_baselines(
    utterances: Sequence[Utterance], *, seed: int = 0, type_key: TypeKey = DEFAULT_TYPE_KEY
) -> dict[str, dict[str, float]]:
    """The 12 wordseg scores of each of wordseg's simple baselines (keys and order of
    `SIMPLE_BASELINE_LABELS`), scored like the TP baselines (one `Scorer`, types by `type_key`):

    - "random_gold_rate": each utterance-internal position is a boundary with probability p =
      `gold_boundary_rate(utterances)`, drawn with `numpy.random.default_rng(seed)`. p is read
      from the gold of these very utterances (wordseg-baseline's oracle probability): this
      baseline uses the gold and must be labelled so wherever it is shown;
    - "every_phoneme": every phoneme a word;
    - "every_utterance": each utterance one word.
    """
    scorer = Scorer(utterances, type_key=type_key)
    lengths = np.fromiter((len(u) for u in utterances), np.int64, len(utterances))
    utt_start = np.zeros(int(lengths.sum()), dtype=bool)
    utt_start[np.cumsum(lengths) - lengths] = True
    # one uniform draw per internal position, in corpus order
    p = gold_boundary_rate(utterances)
    random_starts = utt_start.copy()
    random_starts[~utt_start] = np.random.default_rng(seed).random(int((~utt_start).sum())) < p
    flat = {
        "random_gold_rate": random_starts,
        "every_phoneme": np.ones_like(utt_start),
        "every_utterance": utt_start,
    }
    cuts = np.cumsum(lengths)[:-1]
    return {
        name: scorer.score_starts(np.split(starts, cuts) if len(lengths) else [])
        for name, starts in flat.items()
    }


# --------------------------------------------------------------------------- presentation


def format_all_table(
    results: dict[str, dict[str, float]], labels: Mapping[str, str] | None = None
) -> str:
    """One row per entry (a TP combination or a simple baseline), the F-scores and the
    boundary_noedge precision/recall; below the rows, "name = label" for each name in `labels`."""
    width = max(12, *(len(title) + 2 for title, _ in TABLE_COLUMNS))
    first = max(20, *(len(name) + 2 for name in results)) if results else 20
    lines = [f"{'':<{first}}" + "".join(f"{title:>{width}}" for title, _ in TABLE_COLUMNS)]
    for name, scores in results.items():
        row = "".join(f"{scores[key]:>{width}.4f}" for _, key in TABLE_COLUMNS)
        lines.append(f"{name:<{first}}{row}")
    legend = [f"{name} = {labels[name]}" for name in results if labels and name in labels]
    return "\n".join(lines + ([""] if legend else []) + legend)


# --------------------------------------------------------------------------- command line


if __name__ == "__main__":  # `python -m seg_tune.baseline`: the command is `seg_tune.cli.baseline`
    from seg_tune.cli.baseline import main

    sys.exit(main())
