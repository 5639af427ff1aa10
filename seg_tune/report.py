"""A Markdown report with PNG plots for a finished or interrupted tuning experiment.

`python -m seg_tune.report EXP_DIR` reads `EXP_DIR/summary.json` (format 1, see
`seg_tune.sweep.results`) and, when a trial finished, `EXP_DIR/best_model/segmentation.json`; it writes
`EXP_DIR/report.md` and `EXP_DIR/plots/*.png` (each atomically) and prints the report's path.

The report holds: the experiment's settings and state (finished or interrupted, trial status
counts, the GPU or CPU hours its trials took: summary.json's `compute`); the best trial (config,
key metrics); one table row per trial, best first by the objective; learning curves (the objective
and a loss against step, a red x where ASHA stopped a trial); the objective against each
hyperparameter; and the best model's cue x strategy table beside the transitional-probability
baselines.

The summary is read leniently, because an interrupted experiment leaves partial trials: missing
metrics, empty histories and None (NaN, as `seg_tune.sweep.results` writes it) are shown as "–" and
sorted last. Only a missing or unreadable summary, or one of an unknown format, is an error.

Figures are built as `matplotlib.figure.Figure` objects without pyplot, so no global figure
registry grows and no display backend is needed; they are freed when dropped.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seg_tune.errors import DataError
from seg_tune.metrics import (
    CUE_NAMES,
    METRIC_TITLES,
    REPORTED_METRICS,
    SCORE_KEYS,
    SCORE_LABELS,
    STEP,
    TABLE_COLUMNS,
    ci_keys,
)
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.summary import (
    ExperimentSummary,
    TrialSummary,
    finite_number,
    mapping,
    read_experiment,
)
from seg_tune.sweep.values import flatten

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEARNING_CURVES_PNG = "learning_curves.png"
HYPERPARAMETERS_PNG = "hyperparameters.png"
FINAL_PNG = "final_test_bf.png"
STOP_MARKER_GID = "asha_stop"
MODEL_MARKER_GID = "best_model_step"  # gid of the star at best_model's step
TP_LINE_GID = "tp_baseline"  # gid of the best TP baseline's line  # gid of the scatter of ASHA stops, so tests can find it

# The strategies of seg_tune.segment in its order; not imported, since seg_tune.segment pulls in
# torch (seconds) and the report only needs the names to order columns. Unknown ones go last.
_STRATEGY_ORDER = ("spike", "threshold", "threshold_oracle", "vote_threshold", "vote_spike")
_SEG_KEY = "boundary_noedge_fscore"  # the field's headline number, the cue x strategy cell
_TOP_ROWS = 5
_KEY_METRICS = (
    "valid_loss",
    "valid_bpp",
    "train_loss",
    "seg_boundary_noedge_fscore",
    "seg_boundary_all_fscore",
    "seg_token_fscore",
    "seg_type_fscore",
    "seg_best",
    *(f"spike_{cue}_bf" for cue in CUE_NAMES),
)
_LEGEND_MAX_TRIALS = 10  # above this, only the best trial and the ASHA marker get legend entries
_LOG_SPAN_DECADES = 1.5
_DASH = "–"


# --------------------------------------------------------------------------- Markdown helpers


def _fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to `digits` significant digits, None as a dash."""
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    if isinstance(value, str):
        return _escape(value)
    return _escape(json.dumps(value))


def _score(value: Any) -> str:
    """A score in [0, 1], to 3 decimals (how the field quotes them)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return _fmt(value)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else _escape(text)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _better(metric: str, mode: str | None = None) -> str:
    mode = mode or REPORTED_METRICS.get(metric)
    return {"max": "higher is better", "min": "lower is better"}.get(mode or "", "")


def _describe(spec: Any) -> str:
    """A scheduler/searcher entry: its type, then its settings as key=value."""
    if not isinstance(spec, Mapping):
        return _fmt(spec)
    kind = spec.get("type", "?")
    rest = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.items() if k != "type")
    return f"{_fmt(kind)} ({rest})" if rest else _fmt(kind)


# --------------------------------------------------------------------------- Markdown sections


def _header(exp: ExperimentSummary) -> str:
    s = exp.summary
    counts = Counter(t.status for t in exp.trials)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trials"
    n_stopped = sum(t.stop_step is not None for t in exp.trials)
    state = _STATES.get(s.get("outcome")) or {True: "finished", False: "interrupted"}.get(
        s.get("finished"), "state not recorded"
    )
    name = s.get("name") or exp.path.name
    lines = [
        f"# Tuning report: {_escape(str(name))}",
        "",
        f"- **Objective:** {_code(exp.metric)} ({exp.mode}: {_better(exp.metric, exp.mode)})",
        f"- **Search space:** {_fmt(s.get('space_file'))}",
        f"- **Scheduler:** {_describe(s.get('scheduler'))}",
        f"- **Searcher:** {_describe(s.get('searcher'))}",
        f"- **Samples:** {_fmt(s.get('num_samples'))} requested, {len(exp.trials)} recorded",
        f"- **Data:** {_fmt(s.get('data'))}",
        f"- **State:** {state}; trials: {statuses}; {n_stopped} stopped early by ASHA",
    ]
    if exp.compute:
        lines.append(f"- **Compute:** {compute_line(exp.compute)}")
    return "\n".join(lines)


def compute_line(compute: Mapping[str, Any]) -> str:
    """summary.json's `compute` in words: the hours in all, then each phase's."""
    unit = str(compute.get("unit") or "CPU")
    parts = []
    for phase, what, of in (("search", "search", "trials"), ("final", "final phase", "runs")):
        entry = compute.get(phase)
        if isinstance(entry, Mapping):
            parts.append(
                f"{what} {_hours(entry.get('hours'))} ({_fmt(entry.get('trials'))} {of}, "
                f"{_fmt(entry.get('compute_s'))} s)"
            )
    per_trial = finite_number(compute.get("per_trial"))
    held = f"{per_trial:g} {unit}" if per_trial is not None else "–"
    return (
        f"{_hours(compute.get('hours'))} {unit} hours: {'; '.join(parts)}; the trials' compute "
        f"time (every attempt's, from Tune's results) x the {held} each trial holds"
    )


def _hours(value: Any) -> str:
    number = finite_number(value)
    return _DASH if number is None else f"{number:.3g}"


_STATES = {
    "finished": "finished",
    "failed": "ended with failed trials",
    "stopped": "interrupted (resumable)",
}


def _failed_section(exp: ExperimentSummary) -> str:
    """Trials that ended in ERROR, with the one-line reason and Tune's error file."""
    failed = [t for t in exp.trials if t.status == "ERROR"]
    if not failed:
        return ""
    rows = [
        [
            _code(t.trial_id),
            _escape(str((t.error or {}).get("reason") or "not recorded")),
            _code(str((t.error or {}).get("file"))) if (t.error or {}).get("file") else _DASH,
            _code(str((t.error or {}).get("log"))) if (t.error or {}).get("log") else _DASH,
        ]
        for t in failed
    ]
    tails = [(f"trial {t.trial_id}", (t.error or {}).get("log_tail") or []) for t in failed]
    return (
        f"## Failed trials\n\n{len(failed)} of {len(exp.trials)} trials ended in ERROR after "
        "their retries.\n\n"
        + _table(["trial", "reason", "error file", "trial log"], rows, [False] * 4)
        + _log_tails(tails)
    )


_TAILS_SHOWN = 10  # log tails in one section of the report (summary.json has them all)


def _log_tails(tails: list[tuple[str, list[str]]]) -> str:
    """The last lines a failed attempt wrote to its trial's log, one folded block each (a
    four-backtick fence: a log line may hold three)."""
    shown = [(what, lines) for what, lines in tails if lines][:_TAILS_SHOWN]
    return "".join(
        f"\n\n<details><summary>{_escape(what)}: the last lines of its log</summary>\n\n"
        "````\n" + "\n".join(lines) + "\n````\n\n</details>"
        for what, lines in shown
    )


def _retried_section(exp: ExperimentSummary) -> str:
    """Failed attempts of trials that went on and finished (a kill, an OOM, a lost node)."""
    retried = [t for t in exp.trials if t.failures and t.status != "ERROR"]
    if not retried:
        return ""
    rows = [
        [
            _code(t.trial_id),
            str(f.get("attempt", "")),
            "node lost" if f.get("node_lost") else "trial failed",
            _escape(str(f.get("at", ""))),
            _escape(str(f.get("reason") or "not recorded")),
        ]
        for t in retried
        for f in t.failures
    ]
    tails = [
        (f"trial {t.trial_id}, attempt {f.get('attempt', '')}", f.get("log_tail") or [])
        for t in retried
        for f in t.failures
    ]
    return (
        f"## Retried attempts\n\n{len(retried)} trial(s) failed an attempt and were retried "
        "from their checkpoint: a trial failure counts against `failure.max_retries`, a lost "
        "node does not (`failure.max_node_losses`).\n\n"
        + _table(["trial", "attempt", "cause", "at", "reason"], rows, [False] * 5)
        + _log_tails(tails)
    )


def _best_section(exp: ExperimentSummary) -> str:
    if exp.best is None:
        return (
            "## Best trial\n\nNone: no trial reported the objective (no trial finished). "
            "The trials table ranks the trials by their last reported objective."
        )
    best = exp.best
    config = flatten(mapping(best.get("config"), "best config"))
    metrics = mapping(best.get("metrics"), "best metrics")
    lines = [f"## Best trial: {_code(str(best.get('trial_id')))}", ""]
    lines.append(f"Steps trained: {_fmt(best.get('steps_trained'))}.")
    if exp.model_step is not None:
        chosen = mapping(best.get("chosen_metrics"), "best chosen_metrics")
        metrics = chosen or metrics
        how = (
            "its best evaluation of the objective"
            if exp.summary.get("scope", "best") == "best"
            else "its last evaluation (experiment.scope: last)"
        )
        if exp.final and exp.final.get("best"):
            lines.append(
                f"It was chosen on {how} (step {exp.model_step}); the metrics below are that "
                "evaluation's. `best_model/` is the best final run (above), not this trial."
            )
        else:
            lines.append(
                f"`best_model/` is this trial at step {exp.model_step}: {how}. "
                "The metrics below are that evaluation's."
            )
    if best.get("trial_id") not in {t.trial_id for t in exp.trials}:
        lines.append("(This trial is not among the summary's trials.)")
    lines.append("")
    if config:
        rows = [[_code(k), _fmt(v)] for k, v in config.items()]
        lines += [_table(["hyperparameter", "value"], rows, [False, True]), ""]
    else:
        lines += ["Its config has no hyperparameters.", ""]
    keys = [exp.metric, *(k for k in _KEY_METRICS if k != exp.metric)]
    rows = [[_code(k), _fmt(metrics[k]), _better(k)] for k in keys if metrics.get(k) is not None]
    if rows:
        lines.append(_table(["metric", "value", ""], rows, [False, True, False]))
    else:
        lines.append("It reported no metrics.")
    return "\n".join(lines)


def _config_keys(trials: Sequence[TrialSummary]) -> list[str]:
    """Every config key of any trial, in order of first appearance."""
    return list(dict.fromkeys(k for t in trials for k in t.config))


def _second_metric(metric: str) -> str:
    """The loss shown beside the objective (another one when the objective is that loss)."""
    return "train_loss" if metric == "valid_loss" else "valid_loss"


def _stopped(t: TrialSummary) -> str:
    return _DASH if t.stop_step is None else f"at step {t.stop_step}"


def _trials_section(exp: ExperimentSummary) -> str:
    if not exp.trials:
        return "## Trials\n\nNo trial was recorded."
    keys = _config_keys(exp.trials)
    second = _second_metric(exp.metric)
    header = ["#", "trial", "status", "steps", "stopped early", exp.metric, second, *keys]
    numeric = [not _categorical([t.config[k] for t in exp.trials if k in t.config]) for k in keys]
    right = [True, False, False, True, False, True, True, *numeric]
    rows = []
    for rank, t in enumerate(exp.ranked(), start=1):
        tid = _code(t.trial_id)
        rows.append(
            [
                str(rank),
                f"**{tid}** (best)" if t.trial_id == exp.best_id else tid,
                t.status,
                _fmt(t.steps_trained),
                _stopped(t),
                _fmt(exp.objective(t)),
                _fmt(t.value(second)),
                *(_fmt(t.config.get(k)) for k in keys),
            ]
        )
    which = "best evaluation's" if exp.by_best else "last reported"
    note = (
        f"Sorted by each trial's {which} {_code(exp.metric)}, {_better(exp.metric, exp.mode)} "
        f"(the column shows it; {_code(second)}: the last reported); trials without it last. "
        f"{_DASH}: not reported (or NaN)."
    )
    return "## Trials\n\n" + note + "\n\n" + _table(header, rows, right)


def _at_rung(t: TrialSummary, metric: str, rung: float) -> float | None:
    """The value ASHA judged a trial on at `rung`: its first evaluation at or after the rung."""
    for h in t.history:
        if float(h.get(STEP, -1)) >= rung:
            return finite_number(h.get(metric))
    return None


def noise_section(exp: ExperimentSummary) -> str:
    """How noisy the objective is (its bootstrap intervals over the scored utterances), and the
    rung decisions that fell within that noise. Empty when no interval was reported."""
    low_key, high_key = ci_keys(exp.metric)
    widths = sorted(
        (high - low) / 2
        for t in exp.trials
        for h in t.history
        if (low := finite_number(h.get(low_key))) is not None
        and (high := finite_number(h.get(high_key))) is not None
    )
    if not widths:
        return ""
    noise = widths[len(widths) // 2]
    sign = 1.0 if exp.mode == "max" else -1.0
    rows, close = [], []
    for rung in _rungs(exp.summary.get("scheduler")):
        judged = [
            (t, v)
            for t in exp.trials
            if (t.steps_trained or 0) >= rung and (v := _at_rung(t, exp.metric, rung)) is not None
        ]
        went_on = [v for t, v in judged if (t.steps_trained or 0) > rung + 0.5]
        left = [v for t, v in judged if (t.steps_trained or 0) <= rung + 0.5]
        if not went_on or not left:
            continue
        weakest = min(went_on, key=lambda v: sign * v)
        strongest = max(left, key=lambda v: sign * v)
        gap = sign * (weakest - strongest)
        within = gap < noise
        if within:
            close.append(f"{rung:g}")
        rows.append(
            [
                f"{rung:g}",
                str(len(judged)),
                str(len(went_on)),
                _score(weakest),
                _score(strongest),
                f"{gap:+.3f}" + (" **within noise**" if within else ""),
            ]
        )
    lines = [
        "## Noise in the objective",
        "",
        f"Each evaluation's {_code(exp.metric)} comes with a 95% bootstrap interval over the "
        "validation utterances it was scored on (`training.segment_utterances`): the median "
        f"half-width is ±{noise:.3f} (from ±{widths[0]:.3f} to ±{widths[-1]:.3f}). It measures "
        "which utterances were scored; seeds and the choice of the best of the fair rows add "
        "more. Two trials closer than this are not told apart by one evaluation.",
    ]
    if rows:
        lines += [
            "",
            _table(
                [
                    "rung (step)",
                    "trials judged",
                    "went on",
                    "weakest that went on",
                    "best that stayed",
                    "gap",
                ],
                rows,
                [True, True, True, True, True, True],
            ),
        ]
    if close:
        lines += [
            "",
            f"**Warning:** at rung{'s' if len(close) > 1 else ''} {', '.join(close)} the trials "
            "that went on and the best one that stayed differ by less than the noise, so those "
            "decisions could have gone either way. A larger `training.segment_utterances` "
            "narrows the interval (about as 1/sqrt(n)), at the cost of slower evaluations.",
        ]
    return "\n".join(lines)


def _plots_section(exp: ExperimentSummary, plots: Mapping[str, str]) -> str:
    lines = ["## Plots", ""]
    if LEARNING_CURVES_PNG in plots:
        lines += [
            "### Learning curves",
            "",
            f"![learning curves]({plots[LEARNING_CURVES_PNG]})",
            "",
            f"{_code(exp.metric)} and {_code(_second_metric(exp.metric))} at each evaluation; "
            "the best trial in black, a gold star at the step best_model/ is from, a red x "
            "where ASHA stopped a trial, dotted lines at ASHA's rungs, a dashed red line at "
            "the best TP baseline.",
            "",
        ]
    else:
        lines += ["No trial reported a learning curve yet.", ""]
    if HYPERPARAMETERS_PNG in plots:
        lines += [
            "### Objective against each hyperparameter",
            "",
            f"![objective against each hyperparameter]({plots[HYPERPARAMETERS_PNG]})",
            "",
            f"Each trial's {'best' if exp.by_best else 'last reported'} objective; the best "
            "trial as a red star, trials stopped early by ASHA hollow. Each plot has an SVG "
            "beside it in plots/ (for slides).",
        ]
    else:
        lines.append("The trials' configs have no hyperparameters to plot.")
    return "\n".join(lines)


def _ordered(names: Iterable[str], known: Sequence[str]) -> list[str]:
    """Known names in their canonical order, then the others in order of first appearance."""
    seen = list(dict.fromkeys(names))
    return [n for n in known if n in seen] + [n for n in seen if n not in known]


def _cue_strategy_table(rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any]) -> str:
    cues = _ordered((str(r["cue"]) for r in rows), CUE_NAMES)
    strategies = _ordered((str(r["strategy"]) for r in rows), _STRATEGY_ORDER)
    oracle = {str(r["strategy"]) for r in rows if r.get("oracle")}
    cells = {(str(r["cue"]), str(r["strategy"])): r.get(_SEG_KEY) for r in rows}
    best_cell = (str(best.get("cue")), str(best.get("strategy")))
    body = []
    for cue in cues:
        line = [_code(cue)]
        for strategy in strategies:
            text = _score(cells.get((cue, strategy)))
            line.append(f"**{text}**" if (cue, strategy) == best_cell else text)
        body.append(line)
    header = ["cue", *(f"{s} (oracle)" if s in oracle else s for s in strategies)]
    return _table(header, body, [False, *([True] * len(strategies))])


def _best_baseline(seg: Mapping[str, Any]) -> tuple[str, float] | None:
    """The TP combination with the highest boundary F, and that F."""
    scored = [
        (combo, v)
        for combo, scores in mapping(seg.get("tp_baseline"), "tp_baseline").items()
        if isinstance(scores, Mapping) and (v := finite_number(scores.get(_SEG_KEY))) is not None
    ]
    return max(scored, key=lambda item: item[1]) if scored else None


def _baseline_verdict(seg: Mapping[str, Any]) -> str:
    """Whether the model beats the best TP baseline on boundary F, in one sentence."""
    model = finite_number(mapping(seg.get("best"), "segmentation best").get(_SEG_KEY))
    tp = _best_baseline(seg)
    if model is None or tp is None:
        return ""
    combo, value = tp
    label = SCORE_LABELS[_SEG_KEY]
    if value > model:
        return (
            f"**The TP baseline {_escape(combo)} beats the model** on {label} "
            f"({_score(value)} against {_score(model)}): this model segments worse than "
            "transitional probabilities on the same utterances."
        )
    return (
        f"The model beats every TP baseline on {label} ({_score(model)} against "
        f"{_score(value)}, TP {_escape(combo)})."
    )


def _baseline_table(seg: Mapping[str, Any]) -> str:
    best = mapping(seg.get("best"), "segmentation best")
    header = ["segmentation", *(title for title, _ in TABLE_COLUMNS)]
    model = finite_number(best.get(_SEG_KEY)) if best else None
    tp = _best_baseline(seg)
    winner = "model" if tp is None or (model is not None and model >= tp[1]) else tp[0]
    body = []
    if best:
        name = f"model: {best.get('cue')}/{best.get('strategy')}"
        shown = f"**{_escape(name)}**" if winner == "model" else _escape(name)
        body.append([shown, *(_score(best.get(k)) for _, k in TABLE_COLUMNS)])
    for combo, scores in mapping(seg.get("tp_baseline"), "tp_baseline").items():
        scores = scores if isinstance(scores, Mapping) else {}
        name = f"TP {_escape(combo)}"
        body.append(
            [
                f"**{name}**" if combo == winner else name,
                *(_score(scores.get(k)) for _, k in TABLE_COLUMNS),
            ]
        )
    return _table(header, body, [False, *([True] * len(TABLE_COLUMNS))])


def _top_rows_table(rows: Sequence[Mapping[str, Any]]) -> str:
    fair = [r for r in rows if not r.get("oracle")]
    fair.sort(
        key=lambda r: (
            finite_number(r.get(_SEG_KEY)) is None,
            -(finite_number(r.get(_SEG_KEY)) or 0),
        )
    )
    header = ["cue", "strategy", *(SCORE_LABELS[k] for k in SCORE_KEYS)]
    body = [
        [_code(str(r["cue"])), _code(str(r["strategy"])), *(_score(r.get(k)) for k in SCORE_KEYS)]
        for r in fair[:_TOP_ROWS]
    ]
    return _table(header, body, [False, False, *([True] * len(SCORE_KEYS))])


def _segmentation_section(exp: ExperimentSummary) -> str:
    seg = exp.segmentation
    if seg is None:
        return (
            "## Best model's segmentation\n\nNo best model was exported "
            f"(no {Layout(exp.path).segmentation.relative_to(exp.path)}): no trial finished."
        )
    rows = [r for r in seg.get("table") or [] if isinstance(r, Mapping)]
    best = mapping(seg.get("best"), "segmentation best")
    intro = f"Scored on {_fmt(seg.get('data'))} ({_fmt(seg.get('n_utterances'))} utterances)"
    if seg.get("step") is not None:
        intro += f", model at step {_fmt(seg.get('step'))}"
    if best:
        name = f"{best.get('cue')}/{best.get('strategy')}"
        intro += f". Best fair row: {_code(name)}, boundary_noedge F {_score(best.get(_SEG_KEY))}"
    parts = ["## Best model's segmentation", "", intro + ".", ""]
    if rows:
        parts += [
            "### boundary_noedge F by cue x strategy",
            "",
            "Oracle columns choose their cutoff on the scored data itself: an upper bound, not "
            "a fair score. The best fair cell in bold.",
            "",
            _cue_strategy_table(rows, best),
            "",
        ]
    parts += ["### Against the transitional-probability baseline", ""]
    if verdict := _baseline_verdict(seg):
        parts += [verdict + " The better of the two in bold.", ""]
    parts += [_baseline_table(seg), ""]
    if rows:
        parts += [
            f"### The best {min(_TOP_ROWS, sum(not r.get('oracle') for r in rows))} fair rows, "
            "all scores",
            "",
            _top_rows_table(rows),
        ]
    return "\n".join(parts).rstrip()


# --------------------------------------------------------------------------- the final phase

_HEADLINE = (("BF", "boundary_noedge_fscore"), ("WF", "token_fscore"), ("LF", "type_fscore"))


def _mean_ci(agg: Any) -> str:
    """`mean ± half-width` of a final-phase aggregate ({n, mean, sd, low, high, half_width})."""
    if not isinstance(agg, Mapping) or finite_number(agg.get("mean")) is None:
        return _DASH
    half = finite_number(agg.get("half_width"))
    return f"{agg['mean']:.3f}" + (f" ± {half:.3f}" if half is not None else "")


def _best_baselines(baselines: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(label, test BF) of the best TP baseline and of each simple baseline."""
    out = []
    tp = mapping(baselines.get("tp"), "final baselines tp")
    scored = [(k, finite_number(mapping(v, k).get(_SEG_KEY))) for k, v in tp.items()]
    scored = [(k, v) for k, v in scored if v is not None]
    if scored:
        name, value = max(scored, key=lambda kv: kv[1])
        out.append((f"best TP baseline ({name})", value))
    labels = mapping(baselines.get("labels"), "final baselines labels")
    for name, scores in mapping(baselines.get("simple"), "final baselines simple").items():
        value = finite_number(mapping(scores, name).get(_SEG_KEY))
        if value is not None:
            out.append((str(labels.get(name, name)), value))
    return out


def final_section(exp: ExperimentSummary) -> str:
    """The final phase's results, first in the report: test scores over seeds, the untrained
    control, the baselines, and the gap between validation and test (selection bias)."""
    final = exp.final
    if not final:
        return ""
    configurations = [mapping(c, "final configuration") for c in final.get("configurations") or []]
    head = "## Test results (final phase)"
    if final.get("outcome") == "stopped" or not any(c.get("test") for c in configurations):
        return (
            f"{head}\n\nThe final phase has not finished ({_fmt(final.get('n_runs'))} runs "
            "planned): run the same command again to resume it."
        )
    seeds = max((len(c.get("seeds") or []) for c in configurations), default=0)
    lines = [
        head,
        "",
        f"The best {len(configurations)} configurations of the search, each retrained from "
        f"scratch with {seeds} seeds. Each model chose its cue x strategy row and cutoffs on "
        f"{_fmt(final.get('n_valid'))} validation utterances, and was then scored once on "
        f"**{_fmt(final.get('test_data'))}** ({_test_size(final)}), which "
        "no trial of the search saw. Scores: mean ± the half-width of a 95% Student-t interval "
        "over seeds. Untrained: the same configuration and seed at step 0, scored the same way; "
        "gain: trained minus untrained, paired by seed.",
        "",
    ]
    header = [
        "rank",
        "search trial",
        *(f"test {k}" for k, _ in _HEADLINE),
        "untrained BF",
        "gain BF",
        f"search {exp.metric} (valid)",
    ]
    rows = []
    for c in configurations:
        test = mapping(c.get("test"), "final test")
        untrained = mapping(mapping(c.get("untrained"), "final untrained").get("test"), "u")
        gain = mapping(c.get("gain"), "final gain")
        rows.append(
            [
                _fmt(c.get("rank")),
                _code(str(c.get("search_trial_id"))),
                *(_mean_ci(test.get(key)) for _, key in _HEADLINE),
                _mean_ci(untrained.get(_SEG_KEY)),
                _mean_ci(gain.get(_SEG_KEY)),
                _fmt(c.get("search_value")),
            ]
        )
    lines += [_table(header, rows, [False, False, *([True] * 6)]), ""]
    baselines = _best_baselines(mapping(final.get("baselines"), "final baselines"))
    if baselines:
        lines += ["Baselines on the same test utterances (boundary_noedge F):", ""]
        lines += [f"- {_escape(label)}: {value:.3f}" for label, value in baselines]
        lines.append("")
    top = next((c for c in configurations if c.get("rank") == 1), None)
    if top is not None:
        search_value = finite_number(top.get("search_value"))
        test_bf = finite_number(
            mapping(mapping(top.get("test"), "t").get(_SEG_KEY), "bf").get("mean")
        )
        if search_value is not None and test_bf is not None and exp.metric == f"seg_{_SEG_KEY}":
            lines += [
                f"**Selection bias.** The search's best configuration scored {search_value:.3f} on "
                f"the validation data that chose it; retrained and scored on test it gets "
                f"{test_bf:.3f} (a gap of {search_value - test_bf:+.3f}). Only the test figures "
                "are results; the tables further down were used for selection.",
                "",
            ]
    best = mapping(final.get("best"), "final best")
    if best:
        lines += [
            f"`best_model/` is the best final run by validation: configuration "
            f"#{_fmt(best.get('rank'))}, seed {_fmt(best.get('seed'))}, step "
            f"{_fmt(best.get('step'))}; its test scores are in `best_model/segmentation.json` "
            "(key `test`).",
            "",
        ]
    run_rows = []
    for c in configurations:
        for run in c.get("runs") or []:
            run = mapping(run, "final run")
            chosen = mapping(run.get("chosen"), "final run chosen")
            test = mapping(run.get("test"), "final run test")
            run_rows.append(
                [
                    _fmt(c.get("rank")),
                    _fmt(run.get("seed")),
                    _code(str(run.get("final_trial_id"))),
                    _fmt(run.get("step")),
                    _code(f"{chosen.get('cue')}/{chosen.get('strategy')}"),
                    _score(chosen.get(_SEG_KEY)),
                    _score(test.get(_SEG_KEY)),
                ]
            )
    if run_rows:
        lines += [
            "### Every final run",
            "",
            _table(
                ["rank", "seed", "trial", "step", "row (chosen on valid)", "valid BF", "test BF"],
                run_rows,
                [False, True, False, True, False, True, True],
            ),
        ]
    return "\n".join(lines).rstrip()


def _test_size(final: Mapping[str, Any]) -> str:
    """How much of the test split was scored: its utterances, and phonemes (format 5)."""
    size = f"{_fmt(final.get('n_test'))} utterances"
    phonemes = finite_number(final.get("n_test_phonemes"))
    if phonemes is not None:
        size += f", {int(phonemes):,} phonemes"
    sample = final.get("test_sample")
    if isinstance(sample, Mapping) and sample.get("by") == "phonemes":
        size += f": the first whole utterances holding at least {_fmt(sample.get('asked'))}"
    return size


def render_markdown(exp: ExperimentSummary, plots: Mapping[str, str]) -> str:
    """The report's text; `plots` maps the plot file names drawn to their relative links."""
    final = final_section(exp)
    if final and FINAL_PNG in plots:
        final += f"\n\n![test BF per configuration]({plots[FINAL_PNG]})"
    if final:  # what follows was measured on the validation data that chose the model
        final += (
            "\n\n---\n\n**Everything below is validation data, used for selection** (the "
            "search's trials and their best model); report the test figures above."
        )
    sections = [
        _header(exp),
        final,
        _best_section(exp),
        _trials_section(exp),
        noise_section(exp),
        _failed_section(exp),
        _retried_section(exp),
        _plots_section(exp, plots),
        _segmentation_section(exp),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


# --------------------------------------------------------------------------- figures


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def _curve(t: TrialSummary, metric: str) -> tuple[list[float], list[float]]:
    points = [(float(h[STEP]), finite_number(h.get(metric))) for h in t.history]
    kept = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in kept], [v for _, v in kept]


def stop_points(trials: Sequence[TrialSummary], metric: str) -> list[tuple[float, float]]:
    """(step, value) of each ASHA stop: the trial's last evaluation at or before its stop step."""
    out = []
    for t in trials:
        if t.stop_step is None:
            continue
        steps, values = _curve(t, metric)
        before = [(s, v) for s, v in zip(steps, values, strict=True) if s <= t.stop_step]
        if before:
            out.append(before[-1])
    return out


def _rungs(scheduler: Any) -> list[float]:
    """ASHA's rung steps (`rung_steps`: grace * rf^k up to 90% of max_steps), when the summary
    gives them."""
    if not isinstance(scheduler, Mapping) or scheduler.get("type") != "asha":
        return []
    grace = finite_number(scheduler.get("grace_period_steps"))
    rf = finite_number(scheduler.get("reduction_factor"))
    top = finite_number(scheduler.get("max_steps"))
    if grace is None or rf is None or top is None or grace <= 0 or rf <= 1:
        return []
    from seg_tune.sweep.rungs import rung_steps  # the steps the trials were judged at

    return [float(step) for step in rung_steps(max(1, round(grace)), rf, round(top))]


def _draw_curves(ax: Axes, exp: ExperimentSummary, metric: str, rungs: Sequence[float]) -> bool:
    """One line per trial, the best on top; returns whether anything was drawn."""
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    labelled = len(exp.trials) <= _LEGEND_MAX_TRIALS
    drawn = False
    for i, t in enumerate(exp.trials):
        steps, values = _curve(t, metric)
        if not steps:
            continue
        drawn = True
        if t.trial_id == exp.best_id:
            ax.plot(
                steps,
                values,
                color="black",
                lw=2.4,
                marker=".",
                zorder=4,
                label=f"best: {t.trial_id}",
            )
        else:
            color = cmap(i / max(1, len(exp.trials) - 1) * 0.9)
            ax.plot(
                steps,
                values,
                color=color,
                lw=1.0,
                alpha=0.75,
                marker=".",
                ms=3,
                label=t.trial_id if labelled else None,
            )
    step = exp.model_step
    best = next((t for t in exp.trials if t.trial_id == exp.best_id), None)
    if metric == exp.metric and step is not None and best is not None:
        at = [finite_number(h.get(metric)) for h in best.history if h.get(STEP) == step]
        if at and at[0] is not None:
            ax.scatter(
                [step],
                [at[0]],
                marker="*",
                s=220,
                color="gold",
                edgecolors="black",
                zorder=6,
                label=f"best_model: step {step}",
                gid=MODEL_MARKER_GID,
            )
    stops = stop_points(exp.trials, metric)
    if stops:
        ax.scatter(
            [s for s, _ in stops],
            [v for _, v in stops],
            marker="x",
            color="red",
            s=60,
            linewidths=2,
            zorder=5,
            label="stopped by ASHA",
            gid=STOP_MARKER_GID,
        )
    for step in rungs:
        ax.axvline(step, color="grey", ls=":", lw=0.8, zorder=0)
    if metric == exp.metric == f"seg_{_SEG_KEY}" and exp.segmentation is not None:
        tp = _best_baseline(exp.segmentation)
        if tp is not None:  # the reference a model must beat
            ax.axhline(
                tp[1],
                color="tab:red",
                ls="--",
                lw=1.2,
                zorder=1,
                label=f"best TP baseline ({tp[0]}, best_model's utterances)",
                gid=TP_LINE_GID,
            )
    better = _better(metric, exp.mode if metric == exp.metric else None)
    _title(ax, metric, better)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if not drawn:
        ax.text(0.5, 0.5, "not reported", ha="center", va="center", transform=ax.transAxes)
    return drawn


def _title(ax: Axes, key: str, better: str = "") -> None:
    """A human title; the key (as the files name it) in small print as the y label."""
    human = METRIC_TITLES.get(key, key)
    ax.set_title(f"{human}{f' ({better})' if better else ''}", fontsize=10, loc="center")
    ax.set_ylabel(key, fontsize=7, color="dimgrey")  # the key, as the files name it


def learning_curves_figure(exp: ExperimentSummary) -> Figure | None:
    """The objective and a loss against step for every trial; None when no trial has a curve."""
    if not any(t.history for t in exp.trials):
        return None
    fig = _new_figure(11.0, 4.8)
    left, right = fig.subplots(1, 2)
    rungs = _rungs(exp.summary.get("scheduler"))
    drawn = _draw_curves(left, exp, exp.metric, rungs)
    drawn |= _draw_curves(right, exp, _second_metric(exp.metric), rungs)
    if not drawn:
        return None
    # One legend for both panels: a trial may have points in only one of them.
    entries: dict[str, Any] = {}
    for ax in (left, right):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncols=min(4, len(entries)),
            fontsize=8,
            frameon=False,
        )
    title = f"{exp.summary.get('name') or exp.path.name}: learning curves"
    budgets = {  # the trials that ran to their end: their budgets
        t.steps_trained
        for t in exp.trials
        if t.status == "TERMINATED" and t.steps_trained and t.stop_step is None
    }
    if len(budgets) > 1:  # e.g. an epochs budget: say so, the lines end at different steps
        title += f" (trials with budgets of {min(budgets)} to {max(budgets)} steps)"
    fig.suptitle(title, fontsize=11)
    return fig


def _categorical(values: Sequence[Any]) -> bool:
    return any(finite_number(v) is None for v in values)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _log_scale(values: Sequence[float]) -> bool:
    """Log x for positive values spanning more than 1.5 decades (learning rates, weight decay)."""
    return min(values) > 0 and math.log10(max(values) / min(values)) > _LOG_SPAN_DECADES


_PARAM_TITLES = {
    "training.lr": "learning rate",
    "training.weight_decay": "weight decay",
    "training.batch_size": "batch size",
    "training.block_size": "context (tokens)",
    "training.warmup_steps": "warmup steps",
    "training.momentum": "momentum",
    "training.epochs": "epochs",
    "training.optimizer": "optimizer",
    "model.dropout": "dropout",
    "model.n_layer": "layers",
    "model.n_embd": "width",
    "model.n_head": "attention heads",
    "model.preset": "model size",
}
_LOG_TYPES = ("loguniform", "qloguniform")


def _log_axis(ax: Axes) -> None:
    """A log x axis labelled at 1, 2 and 5 of each decade as plain numbers (0.0003), without
    the overlapping labels matplotlib puts on minor ticks of a span under a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)


def _draw_parameter(ax: Axes, exp: ExperimentSummary, key: str, kind: str | None) -> None:
    """The objective against one hyperparameter: a log axis for a log distribution, one tick
    per value for a choice (numbers in order), a linear axis otherwise."""
    trials = [t for t in exp.trials if key in t.config and exp.objective(t) is not None]
    human = _PARAM_TITLES.get(key, key)
    ax.set_title(human, fontsize=9)
    ax.set_xlabel(key, fontsize=7, color="dimgrey")  # the key, as the space file names it
    ax.grid(alpha=0.3)
    if not trials:
        ax.text(
            0.5,
            0.5,
            "no trial with\nthe objective",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
        )
        return
    raw = [t.config[key] for t in trials]
    if _categorical(raw) or kind == "choice":
        values = sorted(
            set(raw), key=lambda v: (finite_number(v) is None, finite_number(v) or 0, _label(v))
        )
        labels = [_label(v) for v in values]
        xs = [float(labels.index(_label(v))) for v in raw]
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        xs = [float(v) for v in raw]
        if kind in _LOG_TYPES or (kind is None and _log_scale(xs)):
            _log_axis(ax)
    ys = [exp.objective(t) for t in trials]
    for x, y, t in zip(xs, ys, trials, strict=True):
        if t.trial_id == exp.best_id:
            ax.scatter([x], [y], marker="*", s=160, color="red", zorder=4, edgecolors="black")
        elif t.stop_step is not None:
            ax.scatter([x], [y], marker="o", s=28, facecolors="none", edgecolors="tab:blue")
        else:
            ax.scatter([x], [y], marker="o", s=28, color="tab:blue", alpha=0.8)


def hyperparameter_figure(exp: ExperimentSummary) -> Figure | None:
    """The objective against each config key, one small panel per key; None without keys."""
    keys = _config_keys(exp.trials)
    if not keys:
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _new_figure(3.6 * ncols, 2.8 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    from seg_tune.sweep.spec import saved_distribution_types

    kinds = saved_distribution_types(Layout(exp.path).space)
    for ax, key in zip(axes, keys, strict=False):
        _draw_parameter(ax, exp, key, kinds.get(key))
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(METRIC_TITLES.get(exp.metric, exp.metric), fontsize=8)
    fig.suptitle(
        f"{METRIC_TITLES.get(exp.metric, exp.metric)} ({_better(exp.metric, exp.mode)}) against "
        "each hyperparameter (a star: the best trial; hollow: stopped early by ASHA)",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------- writing


def final_figure(exp: ExperimentSummary) -> Figure | None:
    """Test BF per final configuration: its seeds as points, the mean with its 95% interval as
    a bar, the untrained controls as grey points; the best baseline as a dotted line."""
    final = exp.final or {}
    configurations = [c for c in final.get("configurations") or [] if isinstance(c, Mapping)]
    configurations = [c for c in configurations if c.get("runs")]
    if not configurations:
        return None
    fig = _new_figure(max(4.0, 1.3 * len(configurations) + 2), 3.6)
    ax = fig.add_subplot()
    for x, c in enumerate(configurations):
        values = [finite_number(mapping(r.get("test"), "t").get(_SEG_KEY)) for r in c["runs"]]
        values = [v for v in values if v is not None]
        ax.scatter(
            [x] * len(values),
            values,
            color="tab:blue",
            zorder=3,
            s=18,
            label="trained (one point per seed)" if x == 0 else None,
        )
        agg = mapping(mapping(c.get("test"), "t").get(_SEG_KEY), "bf")
        if finite_number(agg.get("low")) is not None:
            ax.errorbar(
                [x + 0.15],
                [agg["mean"]],
                yerr=[[agg["mean"] - agg["low"]], [agg["high"] - agg["mean"]]],
                fmt="o",
                color="black",
                capsize=4,
                label="mean, 95% CI" if x == 0 else None,
            )
        controls = [
            finite_number(mapping(r.get("test"), "t").get(_SEG_KEY))
            for r in mapping(c.get("untrained"), "u").get("runs") or []
        ]
        controls = [v for v in controls if v is not None]
        ax.scatter(
            [x - 0.15] * len(controls),
            controls,
            color="grey",
            marker="x",
            s=18,
            label="untrained (step 0)" if x == 0 else None,
        )
    baselines = _best_baselines(mapping(final.get("baselines"), "final baselines"))
    if baselines:
        label, value = max(baselines, key=lambda b: b[1])
        ax.axhline(value, color="tab:red", linestyle=":", label=label[:60])
    ax.set_xticks(
        range(len(configurations)),
        [f"#{c.get('rank')}\n{c.get('search_trial_id')}" for c in configurations],
    )
    ax.set_ylabel("test boundary F (no edges)")
    ax.set_title("Final runs on the test split", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a temporary sibling, which then replaces `path` in one rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_png(fig: Figure, path: Path) -> None:
    """The PNG (for the report) and an SVG beside it (for slides and papers: it scales)."""
    _replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    _replace_atomically(path.with_suffix(".svg"), lambda tmp: fig.savefig(tmp, format="svg"))


def _write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    _replace_atomically(path, write)


def write_plots(exp: ExperimentSummary) -> dict[str, str]:
    """Draw the plots into EXP_DIR/plots; returns {file name: link relative to the report}.

    A plot with nothing to draw is not written, and an old copy of it is removed, so the folder
    never shows a stale plot beside the new report.
    """
    plots_dir = Layout(exp.path).plots
    plots_dir.mkdir(exist_ok=True)
    figures = {
        LEARNING_CURVES_PNG: learning_curves_figure(exp),
        HYPERPARAMETERS_PNG: hyperparameter_figure(exp),
        FINAL_PNG: final_figure(exp),
    }
    links = {}
    for name, fig in figures.items():
        if fig is None:
            (plots_dir / name).unlink(missing_ok=True)
            (plots_dir / name).with_suffix(".svg").unlink(missing_ok=True)
            continue
        _save_png(fig, plots_dir / name)
        links[name] = f"{plots_dir.name}/{name}"
    return links


def write_report(exp_dir: Path) -> Path:
    """Write EXP_DIR/report.md and EXP_DIR/plots/*.png; returns the report's path."""
    exp_dir = Path(exp_dir)
    exp = read_experiment(exp_dir)
    try:
        links = write_plots(exp)
        path = Layout(exp_dir).report
        _write_text(path, render_markdown(exp, links))
    except OSError as exc:
        raise DataError(f"{exp_dir}: cannot write the report: {exc}") from None
    return path


# --------------------------------------------------------------------------- command line


if __name__ == "__main__":  # `python -m seg_tune.report`: the command is `seg_tune.cli.report`
    from seg_tune.cli.report import main

    sys.exit(main())
