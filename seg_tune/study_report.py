"""The study report: `<storage>/<study>/report.md`, `study.csv` and `plots/`, from each cell's
summary.json (`seg_tune.sweep.summary`) and the study's study.json (`seg_tune.sweep.study`).

One row per cell, for pandas and R (`study.csv`) and for reading (`report.md`):
- the cell, its axis (corpus or language), its value and its training-set size;
- how far it got (`outcome` of its summary, or "not started");
- the search: trials, the best trial, its step and its objective on valid (what chose it);
- the final phase, when the cell has one: test boundary F (BF), word-token F (WF) and lexicon
  (type) F as the mean over the final runs' seeds with their 95% interval, how many test
  utterances and phonemes were scored (`study.eval_utterances` or `eval_phonemes`), the
  untrained control's test BF and the gain over it (paired by seed), the best TP baseline on the
  same test utterances and its BF, the cue x strategy row its runs chose on valid
  (`cue/strategy`; with the share of seeds when they differ), and the configuration's
  hyperparameters and steps;
- the compute: GPU hours when the trials hold GPUs, else CPU hours (`gpu_hours` or
  `cpu_hours`), of the search and final-phase trials together (summary.json's `compute`: each
  trial's compute time x the GPUs or CPUs it holds).

Test scores come from the final phase only: the search's numbers are on valid, which chose them.
The plots: test BF per corpus or language (a marker per size, interval bars, the untrained
control and the best TP baseline as reference marks) and, with several sizes, test BF against
the training-set size. Nothing here needs Ray: `python -m seg_tune.report <storage>/<study>`
rebuilds it at any time, mid-study included (a cell still running shows as it is).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_tune.checkpoint import atomic_write_text
from seg_tune.errors import DataError
from seg_tune.sweep.layout import StudyLayout
from seg_tune.sweep.study import read_state
from seg_tune.sweep.summary import finite_number, read_raw

BF, WF, LF = "boundary_noedge_fscore", "token_fscore", "type_fscore"
COLUMNS = (
    "cell",
    "axis",
    "value",
    "size",
    "unit",
    "outcome",
    "trials",
    "best_trial",
    "best_step",
    "metric",
    "valid_objective",
    *(f"test_{k}_{s}" for k in ("bf", "wf", "lf") for s in ("mean", "low", "high")),
    "test_runs",
    "test_utterances",
    "test_phonemes",
    "untrained_bf_mean",
    "gain_bf_mean",
    "gain_bf_low",
    "gain_bf_high",
    "tp_best",
    "tp_best_bf",
    "chosen",
    "steps",
    "params",
    "gpu_hours",
    "cpu_hours",
)
TEST_BF_PNG = "test_bf.png"
BF_BY_SIZE_PNG = "test_bf_by_size.png"


def is_study_folder(path: Path) -> bool:
    return StudyLayout(Path(path)).study.is_file()


def rows(root: Path) -> list[dict[str, Any]]:
    """One row per cell of the study in `root` (COLUMNS; None where a cell has no value)."""
    layout = StudyLayout(Path(root))
    state = read_state(layout)
    if not state:
        raise DataError(f"{root}: no readable study.json in it: not a study folder")
    out = []
    for name, cell in (state.get("cells") or {}).items():
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(
            cell=name,
            axis=cell.get("axis"),
            value=cell.get("value"),
            size=cell.get("size"),
            unit=state.get("unit") if cell.get("size") is not None else None,
            outcome="not started",
        )
        exp = layout.cell(name).root
        if layout.cell(name).summary.is_file():
            row.update(_from_summary(read_raw(exp)))
        out.append(row)
    return out


def _from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    metric = summary.get("metric")
    best = summary.get("best") or {}
    chosen = best.get("chosen_metrics") or best.get("metrics") or {}
    row: dict[str, Any] = {
        "outcome": summary.get("outcome"),
        "trials": len(summary.get("trials") or []),
        "best_trial": best.get("trial_id"),
        "best_step": best.get("step"),
        "metric": metric,
        "valid_objective": finite_number(chosen.get(metric)) if metric else None,
        "steps": best.get("steps_trained"),
        "params": json.dumps(best.get("config") or {}, sort_keys=True) if best else None,
        **_hours(summary.get("compute")),
    }
    final = summary.get("final") or {}
    configurations = final.get("configurations") or []
    if not configurations:
        return row
    top = min(configurations, key=lambda c: c.get("rank", 0))
    test = top.get("test") or {}
    for short, key in (("bf", BF), ("wf", WF), ("lf", LF)):
        interval = test.get(key) or {}
        for stat in ("mean", "low", "high"):
            row[f"test_{short}_{stat}"] = finite_number(interval.get(stat))
    row["test_runs"] = (test.get(BF) or {}).get("n")
    row["test_utterances"] = final.get("n_test")
    row["test_phonemes"] = final.get("n_test_phonemes")
    row["chosen"] = chosen_rows(top.get("runs") or [])
    row["untrained_bf_mean"] = finite_number(
        (((top.get("untrained") or {}).get("test") or {}).get(BF) or {}).get("mean")
    )
    gain = (top.get("gain") or {}).get(BF) or {}
    row.update(
        gain_bf_mean=finite_number(gain.get("mean")),
        gain_bf_low=finite_number(gain.get("low")),
        gain_bf_high=finite_number(gain.get("high")),
        steps=top.get("steps", row["steps"]),
        params=json.dumps(top.get("config") or {}, sort_keys=True),
    )
    tp = ((final.get("baselines") or {}).get("tp")) or {}
    scored = [(label, finite_number(s.get(BF))) for label, s in tp.items()]
    scored = [(label, v) for label, v in scored if v is not None]
    if scored:
        row["tp_best"], row["tp_best_bf"] = max(scored, key=lambda lv: lv[1])
    return row


def _hours(compute: Any) -> dict[str, float | None]:
    """gpu_hours or cpu_hours of a summary's `compute` (format 5; older: neither)."""
    if not isinstance(compute, dict):
        return {}
    unit = "gpu" if compute.get("unit") == "GPU" else "cpu"
    return {f"{unit}_hours": finite_number(compute.get("hours"))}


def chosen_rows(runs: Sequence[Any]) -> str | None:
    """The cue x strategy rows final runs chose on valid, as `cue/strategy`; when the seeds
    chose differently, each with its share, most chosen first ("a/spike (2/3); b/spike (1/3)")."""
    rows = [
        f"{c.get('cue')}/{c.get('strategy')}"
        for run in runs
        if isinstance(run, dict) and isinstance(c := run.get("chosen"), dict)
    ]
    if not rows:
        return None
    counts = Counter(rows).most_common()
    if len(counts) == 1:
        return counts[0][0]
    return "; ".join(f"{row} ({n}/{len(rows)})" for row, n in counts)


def write_study_report(root: Path) -> Path:
    """Write report.md, study.csv and plots/ in the study folder `root`; returns report.md."""
    layout = StudyLayout(Path(root))
    table = rows(layout.root)
    try:
        plots = _write_plots(layout, table)
        atomic_write_text(layout.csv, to_csv(table))
        atomic_write_text(layout.report, render_markdown(layout.name, table, plots))
    except OSError as exc:
        raise DataError(f"{root}: cannot write the study report: {exc}") from None
    return layout.report


def to_csv(table: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return out.getvalue()


def _num(value: Any, digits: int = 3) -> str:
    number = finite_number(value)
    return "–" if number is None else f"{number:.{digits}f}"


def _interval(row: dict[str, Any], short: str) -> str:
    mean, low, high = (row.get(f"test_{short}_{s}") for s in ("mean", "low", "high"))
    if finite_number(mean) is None:
        return "–"
    if finite_number(low) is None or finite_number(high) is None:
        return _num(mean)
    return f"{_num(mean)} [{_num(low)}, {_num(high)}]"


def _sample(row: dict[str, Any]) -> str:
    """The test sample scored: "2,000 u / 21,345 ph"."""
    n, phonemes = row.get("test_utterances"), row.get("test_phonemes")
    if n is None:
        return "–"
    return f"{n:,} u" + ("" if phonemes is None else f" / {phonemes:,} ph")


def _hours_cell(row: dict[str, Any]) -> str:
    for unit in ("gpu", "cpu"):
        hours = finite_number(row.get(f"{unit}_hours"))
        if hours is not None:
            return f"{hours:.3g} {unit.upper()} h"
    return "–"


def render_markdown(name: str, table: Sequence[dict[str, Any]], plots: Sequence[str]) -> str:
    done = [r for r in table if r["outcome"] == "finished"]
    left = [r for r in table if r["outcome"] != "finished"]
    lines = [
        f"# Study {name}",
        "",
        f"{len(done)} of {len(table)} cells finished. Test scores are the final phase's (mean "
        "over seeds [95% interval]) on the test sample (utterances / phonemes scored); the "
        "search's objective is on valid, which chose the model; the chosen row is the cue/"
        "strategy its final runs chose on valid. Hours: the search's and final phase's trials' "
        "compute time x the GPUs (else CPUs) each holds. `study.csv` holds the same rows for "
        "pandas or R.",
        "",
        "| cell | size | outcome | trials | valid objective | test BF | test WF | test LF | "
        "test sample | untrained BF | gain BF | best TP (BF) | chosen row | steps | hours |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in table:
        size = "all" if r["size"] is None else f"{r['size']:,} {r['unit']}"
        tp = "–" if r["tp_best"] is None else f"{r['tp_best']} ({_num(r['tp_best_bf'])})"
        chosen = "–" if r["chosen"] is None else f"`{r['chosen']}`"
        lines.append(
            f"| `{r['cell']}` | {size} | {r['outcome']} | {r['trials'] or '–'} | "
            f"{_num(r['valid_objective'])} | {_interval(r, 'bf')} | {_interval(r, 'wf')} | "
            f"{_interval(r, 'lf')} | {_sample(r)} | {_num(r['untrained_bf_mean'])} | "
            f"{_num(r['gain_bf_mean'])} | {tp} | {chosen} | {r['steps'] or '–'} | "
            f"{_hours_cell(r)} |"
        )
    if left:
        lines += [
            "",
            "## Not finished",
            "",
            *(f"- `{r['cell']}`: {r['outcome']}" for r in left),
        ]
    best = [r for r in table if r.get("params")]
    if best:
        lines += ["", "## Chosen hyperparameters", ""]
        lines += [f"- `{r['cell']}`: `{r['params']}`" for r in best]
    for png in plots:
        lines += ["", f"![{png}](plots/{png})"]
    return "\n".join(lines) + "\n"


def _write_plots(layout: StudyLayout, table: Sequence[dict[str, Any]]) -> list[str]:
    tested = [r for r in table if finite_number(r.get("test_bf_mean")) is not None]
    if not tested:
        return []
    from matplotlib.figure import Figure

    layout.plots.mkdir(parents=True, exist_ok=True)
    values = list(dict.fromkeys(r["value"] for r in tested))
    sizes = list(dict.fromkeys(r["size"] for r in tested))
    fig = Figure(figsize=(max(5.0, 1.2 * len(values)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.6 / max(1, len(sizes))
    for j, size in enumerate(sizes):
        group = [r for r in tested if r["size"] == size]
        xs = [values.index(r["value"]) + (j - (len(sizes) - 1) / 2) * width for r in group]
        ys = [r["test_bf_mean"] for r in group]
        low = [max(0.0, r["test_bf_mean"] - (r["test_bf_low"] or r["test_bf_mean"])) for r in group]
        high = [
            max(0.0, (r["test_bf_high"] or r["test_bf_mean"]) - r["test_bf_mean"]) for r in group
        ]
        label = "all" if size is None else f"{size:,} {group[0]['unit']}"
        ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=3, label=label)
        for x, r in zip(xs, group, strict=True):
            if finite_number(r.get("untrained_bf_mean")) is not None:
                ax.plot([x], [r["untrained_bf_mean"]], "x", color="grey")
            if finite_number(r.get("tp_best_bf")) is not None:
                ax.plot([x], [r["tp_best_bf"]], "_", color="black", markersize=14)
    ax.plot([], [], "x", color="grey", label="untrained")
    ax.plot([], [], "_", color="black", markersize=14, label="best TP")
    ax.set_xticks(range(len(values)), values)
    ax.set_ylabel("test boundary F")
    ax.legend(fontsize="small")
    fig.savefig(layout.plots / TEST_BF_PNG, dpi=120)
    made = [TEST_BF_PNG]
    if len([s for s in sizes if s is not None]) > 1:
        fig = Figure(figsize=(5.0, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for value in values:
            group = sorted(
                (r for r in tested if r["value"] == value and r["size"] is not None),
                key=lambda r: r["size"],
            )
            if group:
                ax.plot(
                    [r["size"] for r in group],
                    [r["test_bf_mean"] for r in group],
                    "o-",
                    label=value,
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"training-set size ({tested[0]['unit'] or 'words'})")
        ax.set_ylabel("test boundary F")
        ax.legend(fontsize="small")
        fig.savefig(layout.plots / BF_BY_SIZE_PNG, dpi=120)
        made.append(BF_BY_SIZE_PNG)
    return made
