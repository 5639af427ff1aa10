"""Turn cues into word boundaries, and score every cue x strategy.

Strategies (a word-start flag per phoneme; the first phoneme of an utterance always starts a word):
- `spike`: a boundary before phoneme t when X[t] is strictly greater than both neighbours, each
  utterance padded with 0 at both ends. No free parameter.
- `threshold`: a boundary wherever X[t] > cutoff, the cutoff chosen FAIRLY: on a separate split
  (`cutoff_cues` / `cutoff_gold`, the CLI's `--cutoff-data`), or, without one, by two-fold
  cross-fitting: the utterances are cut into a first and a second half, the cutoff chosen on the
  first half is applied to the second and vice versa, so every utterance is scored and none with a
  cutoff chosen on itself.
- `threshold_oracle`: the cutoff that maximises the score on the scored data itself, as the
  published code did (with bounded scalar minimisation). An upper bound, not a fair score: its
  rows carry `oracle: True` and are never picked as the best row unless asked for.
- `vote_threshold`: the fraction of the eight cues above their (fair) cutoffs; a boundary where
  it is above 0.5 (a strict majority, at least 5 of 8).
- `vote_spike`: the fraction of the eight cues that spike; a boundary where it is above 0.5.

Choosing a cutoff maximises `metric` (default `boundary_noedge_fscore`, the field's headline
number). For the boundary metrics the search is exact: every distinct cue value is tried in one
sorted sweep. For token/type metrics a quantile grid is refined around its best point.

`segment_table` scores every cue x strategy (12 scores each); `best_row` picks a row;
`evaluate_segmentation` is what the training loop calls on a validation subset.

CLI: `python -m seg_tune.segment MODEL_DIR DATA [--json] [--cutoff-data FILE]
[--write-segmentation FILE [--cue CUE] [--strategy STRATEGY]] ...`
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_tune.corpus import Utterance
from seg_tune.cues import CUE_NAMES, Cues, Window, compute_cues
from seg_tune.errors import ConfigError, DataError
from seg_tune.metrics import SCORE_KEYS, TABLE_COLUMNS, ci_keys
from seg_tune.score import DEFAULT_TYPE_KEY, Scorer, TypeKey

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CUE_STRATEGIES: tuple[str, ...] = ("spike", "threshold", "threshold_oracle")
VOTE_STRATEGIES: tuple[str, ...] = ("vote_threshold", "vote_spike")
STRATEGIES: tuple[str, ...] = CUE_STRATEGIES + VOTE_STRATEGIES
ORACLE_STRATEGIES: frozenset[str] = frozenset({"threshold_oracle"})
FAIR_STRATEGIES: tuple[str, ...] = tuple(s for s in STRATEGIES if s not in ORACLE_STRATEGIES)
VOTE_CUE = "majority"  # the `cue` of vote rows: all eight cues vote
DEFAULT_METRIC = "boundary_noedge_fscore"


# --------------------------------------------------------------------------- layout of flat arrays


def _first_mask(lengths: np.ndarray) -> np.ndarray:
    """True at the first phoneme of every utterance, over the flat phoneme array."""
    first = np.zeros(int(np.sum(lengths)), dtype=bool)
    first[np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)] = True
    return first


def _lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if arr.size == 0 or (arr < 1).any():
        raise ValueError("every utterance needs at least one phoneme")
    return arr


def _check_size(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size != lengths.sum():
        raise ValueError(f"{values.size} cue values for {int(lengths.sum())} phonemes")
    return values


# --------------------------------------------------------------------------- strategies


def spike(values: np.ndarray, lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Flat word-start flags: X[t] > X[t-1] and X[t] > X[t+1], 0 beyond each utterance's ends."""
    lengths = _lengths(lengths)
    x = _check_size(values, lengths)
    first = _first_mask(lengths)
    last = np.roll(first, -1)  # the phoneme before the next utterance's first, and the very last
    before = np.zeros_like(x)
    before[1:] = x[:-1]
    before[first] = 0.0
    after = np.zeros_like(x)
    after[:-1] = x[1:]
    after[last] = 0.0
    return ((x > before) & (x > after)) | first


def threshold(
    values: np.ndarray, lengths: Sequence[int] | np.ndarray, cutoff: float | np.ndarray
) -> np.ndarray:
    """Flat word-start flags: X[t] > cutoff (a number, or one cutoff per phoneme)."""
    lengths = _lengths(lengths)
    x = _check_size(values, lengths)
    return (x > cutoff) | _first_mask(lengths)


def vote(flags: Sequence[np.ndarray], lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Flat word-start flags where a strict majority of the voters' flags (excluding the forced
    utterance starts) are set; with 8 voters, at least 5."""
    lengths = _lengths(lengths)
    if not flags:
        raise ValueError("a vote needs at least one voter")
    first = _first_mask(lengths)
    votes = np.zeros(first.size, dtype=np.int64)
    for f in flags:
        votes += np.asarray(f, dtype=bool).reshape(-1) & ~first
    return (votes / len(flags) > 0.5) | first


# --------------------------------------------------------------------------- the gold side


class Gold:
    """Gold utterances prepared once: flat word starts, utterance layout, a reusable scorer."""

    def __init__(
        self, utterances: Sequence[Utterance], type_key: TypeKey = DEFAULT_TYPE_KEY
    ) -> None:
        if not utterances:
            raise DataError("no gold utterances to score against")
        self.utterances = utterances
        self.lengths = np.fromiter((len(u) for u in utterances), np.int64, len(utterances))
        self.starts = np.concatenate([np.asarray(u.word_starts, dtype=bool) for u in utterances])
        self.first = _first_mask(self.lengths)
        self.type_key = type_key  # what a word type is (seg_tune.score)
        self._scorer: Scorer | None = None

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.utterances, type_key=self.type_key)
        return self._scorer

    def _per_utterance(self, flat_starts: np.ndarray) -> list[np.ndarray]:
        return np.split(flat_starts, np.cumsum(self.lengths)[:-1])

    def score(self, flat_starts: np.ndarray) -> dict[str, float]:
        return self.scorer.score_starts(self._per_utterance(flat_starts))

    def interval(self, flat_starts: np.ndarray, metric: str) -> tuple[float, float] | None:
        """`Scorer.interval` of flat word-start flags: the 95% bootstrap interval of `metric`."""
        return self.scorer.interval(self._per_utterance(flat_starts), metric)

    def halves(self) -> tuple[Gold, Gold]:
        h = len(self.utterances) // 2
        return Gold(self.utterances[:h], self.type_key), Gold(self.utterances[h:], self.type_key)


def _check_metric(metric: str) -> str:
    if metric not in SCORE_KEYS:
        raise ConfigError(f"metric {metric!r}: unknown; choose one of {', '.join(SCORE_KEYS)}")
    return metric


# --------------------------------------------------------------------------- choosing a cutoff


def choose_cutoff(
    values: np.ndarray, gold: Sequence[Utterance], *, metric: str = DEFAULT_METRIC
) -> float:
    """The cutoff (boundary where X > cutoff) that maximises `metric` of `gold` on these values.

    Ties between cutoffs with the same score go to the highest cutoff (fewest boundaries).
    """
    return _choose(values, Gold(gold), _check_metric(metric))


def _choose(values: np.ndarray, g: Gold, metric: str) -> float:
    x = _check_size(values, g.lengths)
    if metric.startswith("boundary_"):
        return _sweep_boundary(x, g, metric)
    return _grid_search(x, g, metric)


def _sweep_boundary(x: np.ndarray, g: Gold, metric: str) -> float:
    """Exact search: sort the utterance-internal values once; predicting the top k positions for
    every k at the end of a run of equal values gives every distinct segmentation a cutoff can."""
    internal = ~g.first
    v, gold_flags = x[internal], g.starts[internal]
    if v.size == 0:
        return 0.0  # single-phoneme utterances only: no cutoff changes anything
    order = np.argsort(-v, kind="stable")
    vs, gs = v[order], gold_flags[order]
    ks = np.concatenate(([0], np.flatnonzero(np.diff(vs) != 0) + 1, [vs.size]))
    correct = np.concatenate(([0], np.cumsum(gs)))[ks].astype(np.float64)
    predicted = ks.astype(np.float64)
    n_gold = float(gs.sum())
    if metric.startswith("boundary_all"):  # each utterance adds two edges, always right
        edges = 2.0 * len(g.lengths)
        correct, predicted, n_gold = correct + edges, predicted + edges, n_gold + edges
    objective = _measure(metric.rsplit("_", 1)[1], correct, predicted, n_gold)
    k = int(ks[int(np.argmax(objective))])
    return _cutoff_between(vs, k)


def _measure(kind: str, correct: np.ndarray, predicted: np.ndarray, n_gold: float) -> np.ndarray:
    """Precision, recall or F-score arrays; 0 where a denominator is 0 (as in seg_tune.score)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "precision":
            out = correct / predicted
        elif kind == "recall":
            out = correct / n_gold if n_gold else np.zeros_like(correct)
        else:
            out = 2.0 * correct / (predicted + n_gold)
    return np.nan_to_num(out, nan=0.0, posinf=0.0)


def _cutoff_between(sorted_desc: np.ndarray, k: int) -> float:
    """A cutoff c with exactly the top k sorted values above it: the midpoint of the gap."""
    if k == 0:
        return float(sorted_desc[0])
    lowest_in = float(sorted_desc[k - 1])
    if k == sorted_desc.size:
        return lowest_in - 1.0  # every position a boundary: any value below the lowest
    highest_out = float(sorted_desc[k])
    mid = (lowest_in + highest_out) / 2
    return mid if highest_out <= mid < lowest_in else highest_out


def _grid_search(x: np.ndarray, g: Gold, metric: str, n_grid: int = 41) -> float:
    """Token/type metrics: a quantile grid, then a finer grid between the best point's
    neighbours (each candidate costs one full scoring, so the search is kept small)."""
    internal = x[~g.first]
    if internal.size == 0:
        return 0.0
    candidates = np.unique(np.quantile(internal, np.linspace(0, 1, n_grid)))
    candidates = np.concatenate(([np.nextafter(candidates[0], -np.inf)], candidates))
    best = _best_candidate(x, g, metric, candidates)
    i = int(np.searchsorted(candidates, best))
    lo, hi = candidates[max(0, i - 1)], candidates[min(len(candidates) - 1, i + 1)]
    return _best_candidate(x, g, metric, np.unique(np.linspace(lo, hi, 21)))


def _best_candidate(x: np.ndarray, g: Gold, metric: str, candidates: np.ndarray) -> float:
    scores = np.array([g.score(threshold(x, g.lengths, float(c)))[metric] for c in candidates])
    return float(candidates[len(scores) - 1 - int(np.argmax(scores[::-1]))])  # highest of ties


# --------------------------------------------------------------------------- segmentations


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One cue x strategy's flat word-start flags, and the cutoffs that made them.

    `cutoffs`: None for parameter-free strategies and votes; one value when chosen on a separate
    split or on the scored data (oracle); two when cross-fitted: the cutoff applied to the first
    half of the utterances (chosen on the second) and the one applied to the second half.
    """

    cue: str
    strategy: str
    starts: np.ndarray
    cutoffs: tuple[float, ...] | None = None

    @property
    def oracle(self) -> bool:
        return self.strategy in ORACLE_STRATEGIES

    @property
    def name(self) -> str:
        return f"{self.cue}/{self.strategy}"


def _fair_cutoffs(
    cues: Cues,
    gold: Gold,
    names: Sequence[str],
    cutoff_cues: Cues | None,
    cutoff_gold: Gold | None,
    metric: str,
) -> dict[str, tuple[np.ndarray, tuple[float, ...]]]:
    """Per cue: a cutoff per phoneme of `cues`, and the distinct cutoffs used (see module doc)."""
    out: dict[str, tuple[np.ndarray, tuple[float, ...]]] = {}
    if cutoff_cues is not None and cutoff_gold is not None:
        for name in names:
            c = _choose(cutoff_cues.values[name], cutoff_gold, metric)
            out[name] = (np.full(cues.lengths.sum(), c), (c,))
        return out
    n = len(cues)
    if n < 2:
        raise DataError(
            f"{n} utterance(s) and no cutoff split: a fair cutoff needs a separate split to be "
            "chosen on (--cutoff-data) or at least 2 utterances to cross-fit"
        )
    h = n // 2
    first_cues, second_cues = cues.select(0, h), cues.select(h, n)
    first_gold, second_gold = gold.halves()
    n_first = int(first_cues.lengths.sum())
    for name in names:
        on_second = _choose(second_cues.values[name], second_gold, metric)
        on_first = _choose(first_cues.values[name], first_gold, metric)
        per_phoneme = np.empty(cues.lengths.sum())
        per_phoneme[:n_first] = on_second  # applied to the first half, chosen on the second
        per_phoneme[n_first:] = on_first
        out[name] = (per_phoneme, (on_second, on_first))
    return out


def segmentations(
    cues: Cues,
    gold: Sequence[Utterance],
    *,
    cutoff_cues: Cues | None = None,
    cutoff_gold: Sequence[Utterance] | None = None,
    metric: str = DEFAULT_METRIC,
    strategies: Sequence[str] = STRATEGIES,
) -> list[Segmentation]:
    """Every cue x strategy of `strategies` (votes once, over all eight cues) on `cues`.

    `gold` (the utterances `cues` were computed on) is needed by the oracle and by cross-fitting;
    `cutoff_cues`/`cutoff_gold`: the separate split fair cutoffs are chosen on (both or neither).
    """
    if (cutoff_cues is None) != (cutoff_gold is None):
        raise ConfigError("give both cutoff_cues and cutoff_gold (the cutoff split), or neither")
    cg = Gold(cutoff_gold) if cutoff_gold is not None else None
    return segment_all(cues, Gold(gold), cutoff_cues, cg, metric, strategies)


def segment_all(
    cues: Cues,
    g: Gold,
    cutoff_cues: Cues | None,
    cg: Gold | None,
    metric: str,
    strategies: Sequence[str],
) -> list[Segmentation]:
    _check_metric(metric)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"strategy {unknown[0]!r}: unknown; choose from {', '.join(STRATEGIES)}")
    if not np.array_equal(g.lengths, cues.lengths):
        raise DataError("the cues and the gold utterances differ in number or length")
    if (
        cutoff_cues is not None
        and cg is not None
        and not np.array_equal(cg.lengths, cutoff_cues.lengths)
    ):
        raise DataError("the cutoff split's cues and gold utterances differ in number or length")
    names = list(cues.names)
    needs_fair = {"threshold", "vote_threshold"} & set(strategies)
    fair = _fair_cutoffs(cues, g, names, cutoff_cues, cg, metric) if needs_fair else {}
    out: list[Segmentation] = []
    for name in names:
        x = cues.values[name]
        if "spike" in strategies:
            out.append(Segmentation(name, "spike", spike(x, cues.lengths)))
        if "threshold" in strategies:
            per_phoneme, used = fair[name]
            out.append(
                Segmentation(name, "threshold", threshold(x, cues.lengths, per_phoneme), used)
            )
        if "threshold_oracle" in strategies:
            c = _choose(x, g, metric)
            out.append(Segmentation(name, "threshold_oracle", threshold(x, cues.lengths, c), (c,)))
    if "vote_threshold" in strategies:
        flags = [threshold(cues.values[n], cues.lengths, fair[n][0]) for n in names]
        out.append(Segmentation(VOTE_CUE, "vote_threshold", vote(flags, cues.lengths)))
    if "vote_spike" in strategies:
        flags = [spike(cues.values[n], cues.lengths) for n in names]
        out.append(Segmentation(VOTE_CUE, "vote_spike", vote(flags, cues.lengths)))
    return out


# --------------------------------------------------------------------------- tables


def _row(seg: Segmentation, scores: Mapping[str, float]) -> dict[str, Any]:
    return {
        "cue": seg.cue,
        "strategy": seg.strategy,
        "oracle": seg.oracle,
        "cutoffs": list(seg.cutoffs) if seg.cutoffs is not None else None,
        **{key: float(scores[key]) for key in SCORE_KEYS},
    }


def sort_table(table: Sequence[Mapping[str, Any]], metric: str = DEFAULT_METRIC) -> list[dict]:
    """Fair rows first, then oracle rows; each best first by `metric`."""
    return sorted((dict(r) for r in table), key=lambda r: (bool(r["oracle"]), -r[metric]))


def table_from_cues(
    cues: Cues,
    gold: Sequence[Utterance],
    *,
    cutoff_cues: Cues | None = None,
    cutoff_gold: Sequence[Utterance] | None = None,
    metric: str = DEFAULT_METRIC,
    strategies: Sequence[str] = STRATEGIES,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> list[dict[str, Any]]:
    """One row per cue x strategy: cue, strategy, oracle, cutoffs and the 12 scores (word types
    keyed by `type_key`); sorted."""
    if (cutoff_cues is None) != (cutoff_gold is None):
        raise ConfigError("give both cutoff_cues and cutoff_gold (the cutoff split), or neither")
    g = Gold(gold, type_key)
    cg = Gold(cutoff_gold, type_key) if cutoff_gold is not None else None
    segs = segment_all(cues, g, cutoff_cues, cg, metric, strategies)
    return scored_table(g, segs, metric)


def scored_table(g: Gold, segs: Sequence[Segmentation], metric: str) -> list[dict[str, Any]]:
    return sort_table([_row(s, g.score(s.starts)) for s in segs], metric)


def segment_table(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    utterances: Sequence[Utterance],
    *,
    cutoff_utterances: Sequence[Utterance] | None = None,
    window: Window | None = None,
    metric: str = DEFAULT_METRIC,
    strategies: Sequence[str] = STRATEGIES,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> list[dict[str, Any]]:
    """Cues of `utterances` from the model (read with `window`, default
    `Window.for_model(model)`), then `table_from_cues` (types keyed by `type_key`); fair cutoffs are chosen on
    `cutoff_utterances` when given, else by two-fold cross-fitting."""
    cues = compute_cues(model, tokenizer, utterances, window)
    cutoff_cues = (
        compute_cues(model, tokenizer, cutoff_utterances, window) if cutoff_utterances else None
    )
    return table_from_cues(
        cues,
        utterances,
        cutoff_cues=cutoff_cues,
        cutoff_gold=cutoff_utterances or None,
        metric=metric,
        strategies=strategies,
        type_key=type_key,
    )


def best_row(
    table: Sequence[Mapping[str, Any]],
    metric: str = DEFAULT_METRIC,
    include_oracle: bool = False,
) -> dict[str, Any]:
    """The row with the highest `metric` (oracle rows only with include_oracle=True)."""
    rows = [r for r in table if include_oracle or not r["oracle"]]
    if not rows:
        raise ValueError("no row to choose from (only oracle rows, and include_oracle=False)")
    return dict(max(rows, key=lambda r: r[metric]))  # first of equals: the table's order


def evaluate_segmentation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    utterances: Sequence[Utterance],
    *,
    window: Window | None = None,
    metric: str = DEFAULT_METRIC,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> dict[str, float | str]:
    """Segmentation scores for the training loop (fair strategies only, cross-fitted cutoffs;
    cues read with `window`, default `Window.for_model(model)`; word types keyed by `type_key`,
    the config's score.type_key).

    Returns a flat dict: `seg_<score>` for the 12 `SCORE_KEYS` of the best non-oracle
    cue x strategy by `metric`; `seg_best`, that row's name "cue/strategy" (the one string
    entry); `seg_<metric>_ci_low` / `_ci_high`, a 95% bootstrap interval of that row's `metric`
    over the utterances (`Scorer.interval`; absent for type scores); and `spike_<cue>_bf`, each
    cue's spike boundary_noedge F-score. The model is put in eval mode while the cues are
    computed; its train/eval mode is restored after.
    """
    cues = compute_cues(model, tokenizer, utterances, window)
    g = Gold(utterances, type_key)
    segs = segment_all(cues, g, None, None, metric, FAIR_STRATEGIES)
    table = scored_table(g, segs, metric)
    best = best_row(table, metric)
    result: dict[str, float | str] = {f"seg_{key}": best[key] for key in SCORE_KEYS}
    result["seg_best"] = f"{best['cue']}/{best['strategy']}"
    chosen = next(x for x in segs if (x.cue, x.strategy) == (best["cue"], best["strategy"]))
    interval = g.interval(chosen.starts, metric)
    if interval is not None:
        low, high = ci_keys(f"seg_{metric}")
        result[low], result[high] = interval
    spikes = {r["cue"]: r["boundary_noedge_fscore"] for r in table if r["strategy"] == "spike"}
    result |= {f"spike_{cue}_bf": spikes[cue] for cue in CUE_NAMES}
    return result


def chosen_row(cues: Cues, g: Gold, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """The row a split chooses, as the training loop chooses it: the best fair row by `metric`,
    its cutoffs cross-fitted on the split itself."""
    return best_row(
        scored_table(g, segment_all(cues, g, None, None, metric, FAIR_STRATEGIES), metric), metric
    )


def held_out_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    valid: Sequence[Utterance],
    test: Sequence[Utterance],
    *,
    window: Window | None = None,
    metric: str = DEFAULT_METRIC,
    type_key: TypeKey = DEFAULT_TYPE_KEY,
) -> dict[str, Any]:
    """A model scored once on `test`, with everything chosen on `valid`: the cue x strategy row
    as the training loop chooses it (the best fair row by `metric`, cutoffs cross-fitted on
    valid) and that row's cutoffs (chosen on the whole of valid). Nothing is chosen on test.

    Returns {"chosen": the row on valid (its 12 scores there), "test": the same row on test
    (cutoffs from valid; its 12 scores), "test_interval": a 95% bootstrap interval of its test
    `metric` over the test utterances (None for type scores), "spikes": each cue's spike
    boundary_noedge F on test, "n_valid", "n_test"}."""
    valid_cues = compute_cues(model, tokenizer, valid, window)
    test_cues = compute_cues(model, tokenizer, test, window)
    gv, gt = Gold(valid, type_key=type_key), Gold(test, type_key=type_key)
    chosen = chosen_row(valid_cues, gv, metric)
    segs = segment_all(test_cues, gt, valid_cues, gv, metric, FAIR_STRATEGIES)
    seg = next(s for s in segs if (s.cue, s.strategy) == (chosen["cue"], chosen["strategy"]))
    spikes = {
        s.cue: gt.score(s.starts)["boundary_noedge_fscore"] for s in segs if s.strategy == "spike"
    }
    return {
        "chosen": chosen,
        "test": _row(seg, gt.score(seg.starts)),
        "test_interval": gt.interval(seg.starts, metric),
        "spikes": {cue: spikes[cue] for cue in CUE_NAMES},
        "n_valid": len(valid),
        "n_test": len(test),
    }


# --------------------------------------------------------------------------- presentation


def _format_cutoffs(cutoffs: Sequence[float] | None) -> str:
    return "-" if not cutoffs else "/".join(f"{c:.4g}" for c in cutoffs)


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
    """A readable table (a subset of the scores; --json has all 12): oracle rows marked."""
    widths = [max(8, len(title) + 2) for title, _ in TABLE_COLUMNS]
    head = f"{'cue':<24}{'strategy':<18}" + "".join(
        f"{t:>{w}}" for (t, _), w in zip(TABLE_COLUMNS, widths, strict=True)
    )
    lines = [head + "  cutoff", "-" * (len(head) + 16)]
    for r in table:
        scores = "".join(
            f"{r[key]:>{w}.4f}" for (_, key), w in zip(TABLE_COLUMNS, widths, strict=True)
        )
        mark = "  ORACLE" if r["oracle"] else ""
        lines.append(
            f"{r['cue']:<24}{r['strategy']:<18}{scores}  {_format_cutoffs(r['cutoffs'])}{mark}"
        )
    lines.append(
        "boundary = boundary_noedge (utterance edges left out), boundary+edges counts them; "
        "token = words, type = lexicon. ORACLE rows choose the cutoff on the scored data "
        "itself: an upper bound, not a fair score."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


if __name__ == "__main__":  # `python -m seg_tune.segment`: the command is `seg_tune.cli.segment`
    from seg_tune.cli.segment import main

    sys.exit(main())
