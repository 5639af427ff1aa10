"""The experiment report: Markdown content, ordering, plots, edge cases and the CLI.

Experiment folders are built by hand in the shape seg_tune.sweep.summary writes (summary.json format 1,
best_model/segmentation.json with rows as seg_tune.segment produces them).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from seg_tune.cli.report import main
from seg_tune.metrics import SCORE_KEYS
from seg_tune.report import (
    HYPERPARAMETERS_PNG,
    LEARNING_CURVES_PNG,
    STOP_MARKER_GID,
    hyperparameter_figure,
    learning_curves_figure,
    write_report,
)
from seg_tune.sweep.summary import read_experiment

REPO = Path(__file__).resolve().parents[1]
OBJ = "seg_boundary_noedge_fscore"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- building folders


def _hist(step: int, obj: float | None, valid_loss: float | None) -> dict[str, Any]:
    return {
        "step": step,
        "train_loss": None if valid_loss is None else valid_loss - 0.1,
        "valid_loss": valid_loss,
        "valid_bpp": None,
        OBJ: obj,
    }


def _trial(
    trial_id: str,
    status: str,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    metrics: dict[str, Any] | None = None,
    stopped_at_step: int | None = None,
) -> dict[str, Any]:
    """A summary trial whose metrics are its last evaluation unless given."""
    if metrics is None:
        metrics = dict(history[-1]) if history else {}
    return {
        "trial_id": trial_id,
        "status": status,
        "config": config,
        "metrics": metrics,
        "steps_trained": int(metrics.get("step", 0) or 0),
        "stopped_early": stopped_at_step is not None,
        "stopped_at_step": stopped_at_step,
        "history": history,
    }


def _cfg(lr: float, dropout: float, act: str) -> dict[str, Any]:
    return {"training.lr": lr, "model.dropout": dropout, "model.activation": act}


def standard_trials() -> list[dict[str, Any]]:
    """Six trials: a full one, two stopped by ASHA, an errored one without metrics, a running one
    whose metrics lack the objective (its history has it), and one whose objective is NaN."""
    best_hist = [
        _hist(s, o, v)
        for s, o, v in zip(
            range(100, 700, 100),
            (0.40, 0.55, 0.62, 0.66, 0.69, 0.71),
            (1.9, 1.6, 1.4, 1.3, 1.25, 1.2),
            strict=True,
        )
    ]
    return [
        _trial(
            "d4e5f6",
            "TERMINATED",
            _cfg(1e-4, 0.3, "relu"),
            [_hist(100, 0.30, 2.4)],
            stopped_at_step=100,
        ),
        _trial("a1b2c3", "TERMINATED", _cfg(3e-3, 0.1, "gelu"), best_hist),
        _trial("err001", "ERROR", _cfg(5e-2, 0.0, "relu"), []),
        _trial(
            "g7h8i9",
            "TERMINATED",
            _cfg(1e-2, 0.2, "gelu"),
            [_hist(100, 0.45, 1.8), _hist(300, 0.58, 1.5)],
            stopped_at_step=300,
        ),
        _trial("nan003", "TERMINATED", _cfg(2e-3, 0.25, "gelu"), [_hist(100, math.nan, 1.4)]),
        _trial(
            "run002",
            "RUNNING",
            _cfg(1e-3, 0.15, "gelu"),
            [_hist(100, 0.42, 1.9), _hist(200, 0.50, 1.7)],
            metrics={"step": 200, "valid_loss": 1.7},
        ),
    ]


def seg_row(cue: str, strategy: str, bf: float) -> dict[str, Any]:
    """A row as seg_tune.segment's table has it: cue, strategy, oracle, cutoffs, 12 scores.
    Every score is distinct and derived from `bf` by hand, so cells can be located."""
    scores = {key: round(bf - 0.01 * i, 4) for i, key in enumerate(reversed(SCORE_KEYS))}
    oracle = strategy == "threshold_oracle"
    cutoffs = None if strategy in ("spike", "vote_spike", "vote_threshold") else [0.5]
    return {"cue": cue, "strategy": strategy, "oracle": oracle, "cutoffs": cutoffs, **scores}


def segmentation() -> dict[str, Any]:
    rows = [
        seg_row("boundary_prob", "spike", 0.776),
        seg_row("boundary_prob", "threshold", 0.741),
        seg_row("boundary_prob", "threshold_oracle", 0.801),
        seg_row("entropy", "spike", 0.706),
        seg_row("entropy", "threshold", 0.650),
        seg_row("entropy", "threshold_oracle", 0.690),
        seg_row("majority", "vote_spike", 0.745),
        seg_row("majority", "vote_threshold", 0.733),
    ]
    tp = {
        f"{d}/{t}": {key: 0.5 for key in SCORE_KEYS}
        for d in ("forward", "backward", "mi")
        for t in ("relative", "absolute")
    }
    tp["forward/relative"]["boundary_noedge_fscore"] = 0.643
    tp["mi/relative"]["boundary_noedge_fscore"] = 0.720
    return {
        "data": "validation split of synthetic corpus",
        "n_utterances": 600,
        "step": 600,
        "table": rows,
        "best": rows[0],
        "tp_baseline": tp,
    }


def make_experiment(
    root: Path,
    *,
    trials: list[dict[str, Any]] | None = None,
    metric: str = OBJ,
    mode: str = "max",
    best_id: str | None = "a1b2c3",
    best_model: bool = True,
    finished: bool = True,
) -> Path:
    exp = root / "exp dir 'quoted'"  # hostile path: spaces and quotes
    exp.mkdir(parents=True)
    trials = standard_trials() if trials is None else trials
    best = next((t for t in trials if t["trial_id"] == best_id), None)
    summary = {
        "format": 1,
        "name": "base",
        "space_file": "search_spaces/base.yaml",
        "metric": metric,
        "mode": mode,
        "num_samples": len(trials),
        "finished": finished,
        "scheduler": {
            "type": "asha",
            "grace_period_steps": 100,
            "reduction_factor": 3,
            "max_steps": 600,
        },
        "searcher": {"type": "optuna", "seed": 0},
        "data": "synthetic corpus (seed 0, 6000 utterances)",
        "best": None
        if best is None
        else {k: best[k] for k in ("trial_id", "config", "metrics", "steps_trained")},
        "trials": trials,
    }
    (exp / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if best_model:
        (exp / "best_model").mkdir()
        (exp / "best_model" / "segmentation.json").write_text(json.dumps(segmentation()))
    return exp


# --------------------------------------------------------------------------- reading the report


def section(text: str, title: str) -> str:
    """The text of the `## title...` section, up to the next `## `."""
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first Markdown table in `text`, cells stripped."""
    lines: list[str] = []
    for ln in text.splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def trial_order(report: str) -> list[str]:
    rows = table_rows(section(report, "Trials"))
    return [r[1].replace("**", "").replace("`", "").replace("(best)", "").strip() for r in rows]


# --------------------------------------------------------------------------- content


def test_report_names_every_trial_the_best_and_the_objective(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    path = write_report(exp)
    assert path == exp / "report.md"
    text = path.read_text(encoding="utf-8")
    for tid in ("a1b2c3", "d4e5f6", "err001", "g7h8i9", "nan003", "run002"):
        assert tid in section(text, "Trials")
    assert "## Best trial: `a1b2c3`" in text
    assert OBJ in text.splitlines()[2]  # the objective line of the header
    assert "(max: higher is better)" in text
    assert "asha (grace_period_steps=100, reduction_factor=3, max_steps=600)" in text
    assert "optuna (seed=0)" in text
    assert "State:** finished; trials: 1 ERROR, 1 RUNNING, 4 TERMINATED; 2 stopped early" in text
    best = section(text, "Best trial")
    assert "| `training.lr` | 0.003 |" in best
    assert f"| `{OBJ}` | 0.71 | higher is better |" in best
    assert "| `valid_loss` | 1.2 | lower is better |" in best


def test_trials_table_sorted_best_first_when_maximising(tmp_path: Path) -> None:
    text = write_report(make_experiment(tmp_path)).read_text()
    # objective: a1b2c3 .71, g7h8i9 .58, run002 .50 (from its history), d4e5f6 .30;
    # err001 (none) and nan003 (NaN) last, in summary order.
    assert trial_order(text) == ["a1b2c3", "g7h8i9", "run002", "d4e5f6", "err001", "nan003"]
    rows = {
        r[1].replace("`", "").replace("**", "").split()[0]: r
        for r in table_rows(section(text, "Trials"))
    }
    assert rows["d4e5f6"][4] == "at step 100"
    assert rows["a1b2c3"][4] == "–"
    assert rows["err001"][5] == "–" and rows["err001"][2] == "ERROR"
    assert rows["run002"][5] == "0.5"
    assert rows["nan003"][5] == "–"
    assert rows["d4e5f6"][-1] == "relu"  # the string hyperparameter's column
    assert "(best)" in rows["a1b2c3"][1]


def test_trials_table_sorted_best_first_when_minimising(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, metric="valid_loss", mode="min")
    text = write_report(exp).read_text()
    # valid_loss: a1b2c3 1.2, nan003 1.4, g7h8i9 1.5, run002 1.7, d4e5f6 2.4; err001 none.
    assert trial_order(text) == ["a1b2c3", "nan003", "g7h8i9", "run002", "d4e5f6", "err001"]
    assert "(min: lower is better)" in text
    # beside valid_loss as the objective, the second loss column is train_loss
    header = next(ln for ln in section(text, "Trials").splitlines() if ln.startswith("| #"))
    assert "| valid_loss | train_loss |" in header


# --------------------------------------------------------------------------- plots


def test_plots_are_valid_pngs_linked_from_the_report(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    text = write_report(exp).read_text()
    for name in (LEARNING_CURVES_PNG, HYPERPARAMETERS_PNG):
        path = exp / "plots" / name
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 10_000
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.std() > 0.05  # not a blank canvas
        assert f"](plots/{name})" in text
        svg = path.with_suffix(".svg").read_text()  # for slides: the same plot, scalable
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and len(svg) > 10_000
    assert not [p for p in exp.rglob("*") if ".tmp" in p.name]


def _stop_offsets(ax: Any) -> list[tuple[float, float]]:
    found = [c for c in ax.collections if c.get_gid() == STOP_MARKER_GID]
    assert len(found) == 1
    return sorted(map(tuple, np.asarray(found[0].get_offsets(), dtype=float).tolist()))


def test_learning_curves_mark_asha_stops_and_highlight_the_best(tmp_path: Path) -> None:
    fig = learning_curves_figure(read_experiment(make_experiment(tmp_path)))
    assert fig is not None
    objective_ax, loss_ax = fig.axes[:2]
    # d4e5f6 stopped at 100 (objective .30, loss 2.4); g7h8i9 at 300 (.58, 1.5)
    assert _stop_offsets(objective_ax) == [(100.0, 0.30), (300.0, 0.58)]
    assert _stop_offsets(loss_ax) == [(100.0, 2.4), (300.0, 1.5)]
    best = [ln for ln in objective_ax.lines if ln.get_label() == "best: a1b2c3"]
    assert len(best) == 1
    others = [ln for ln in objective_ax.lines if ln.get_label().startswith(("d4", "g7", "run"))]
    assert all(ln.get_linewidth() < best[0].get_linewidth() for ln in others) and others
    assert list(best[0].get_xdata()) == [100, 200, 300, 400, 500, 600]
    # err001 has no history: it draws no line; nan003's only point is NaN: no line either
    assert not [ln for ln in objective_ax.lines if ln.get_label() in ("err001", "nan003")]


def test_hyperparameter_panels_scale_and_categories(tmp_path: Path) -> None:
    fig = hyperparameter_figure(read_experiment(make_experiment(tmp_path)))
    assert fig is not None
    # a human title, the key in small print under it (a key without a title is its own title)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"learning rate", "dropout", "model.activation"}
    panels["training.lr"], panels["model.dropout"] = panels["learning rate"], panels["dropout"]
    assert panels["training.lr"].get_xlabel() == "training.lr"
    # lr of the trials with an objective spans 1e-4 .. 1e-2: two decades, so log
    assert panels["training.lr"].get_xscale() == "log"
    assert panels["model.dropout"].get_xscale() == "linear"
    ticks = [t.get_text() for t in panels["model.activation"].get_xticklabels()]
    assert ticks == ["gelu", "relu"]
    # one point per trial with an objective (4: err001 and nan003 have none)
    points = sum(len(c.get_offsets()) for c in panels["model.dropout"].collections)
    assert points == 4


def test_narrow_positive_range_stays_linear(tmp_path: Path) -> None:
    trials = [
        _trial(f"t{i}", "TERMINATED", {"training.lr": lr}, [_hist(100, 0.1 * (i + 1), 1.0)])
        for i, lr in enumerate((1e-3, 3e-3, 3e-2))  # 1.48 decades: not above 1.5
    ]
    fig = hyperparameter_figure(
        read_experiment(make_experiment(tmp_path, trials=trials, best_id="t2"))
    )
    assert fig is not None and fig.axes[0].get_xscale() == "linear"


# --------------------------------------------------------------------------- segmentation


def test_segmentation_tables_and_tp_baseline(tmp_path: Path) -> None:
    text = write_report(make_experiment(tmp_path)).read_text()
    seg = section(text, "Best model's segmentation")
    grid = seg[seg.index("### boundary_noedge F by cue") :]
    header = next(ln for ln in grid.splitlines() if ln.startswith("| cue"))
    assert header == (
        "| cue | spike | threshold | threshold_oracle (oracle) | vote_threshold | vote_spike |"
    )
    cells = {r[0]: r[1:] for r in table_rows(grid)}
    assert list(cells) == ["`entropy`", "`boundary_prob`", "`majority`"]  # CUE_NAMES order
    assert cells["`boundary_prob`"] == ["**0.776**", "0.741", "0.801", "–", "–"]
    assert cells["`majority`"] == ["–", "–", "–", "0.733", "0.745"]

    tp = seg[seg.index("### Against the transitional") :]
    rows = {r[0]: r for r in table_rows(tp)}
    head = next(ln for ln in tp.splitlines() if ln.startswith("| segmentation"))
    columns = [c.strip() for c in head.strip("|").split(" | ")]
    bf = columns.index("boundary F")  # the names every table uses (metrics.SCORE_LABELS)
    assert columns[0] == "segmentation" and "boundary R" in columns and "token F" in columns
    assert table_rows(tp)[0][0] == "**model: boundary_prob/spike**"
    assert {
        f"TP {d}/{t}" for d in ("forward", "backward", "mi") for t in ("relative", "absolute")
    } <= set(rows)
    assert rows["TP forward/relative"][bf] == "0.643"
    assert rows["TP mi/relative"][bf] == "0.720"
    assert rows["**model: boundary_prob/spike**"][bf] == "0.776"

    top = table_rows(seg[seg.index("### The best 5 fair rows") :])
    assert [(r[0], r[1]) for r in top] == [
        ("`boundary_prob`", "`spike`"),
        ("`majority`", "`vote_spike`"),
        ("`boundary_prob`", "`threshold`"),
        ("`majority`", "`vote_threshold`"),
        ("`entropy`", "`spike`"),
    ]
    # the 12 scores of the first row, in SCORE_KEYS order, as seg_row built them
    first = seg_row("boundary_prob", "spike", 0.776)
    assert top[0][2:] == [f"{first[k]:.3f}" for k in SCORE_KEYS]


# --------------------------------------------------------------------------- awkward experiments


def test_interrupted_without_best_model_or_hyperparameters(tmp_path: Path) -> None:
    trials = [
        _trial("p1", "PENDING", {}, []),
        _trial("e1", "ERROR", {}, [], metrics=None),
        _trial("r1", "RUNNING", {}, [_hist(100, 0.2, 3.0)]),
    ]
    trials[1]["metrics"] = None
    trials[1]["history"] = None
    exp = make_experiment(tmp_path, trials=trials, best_id=None, best_model=False, finished=False)
    (exp / "plots").mkdir()
    (exp / "plots" / HYPERPARAMETERS_PNG).write_bytes(b"stale")  # from an earlier report
    text = write_report(exp).read_text()
    assert "State:** interrupted; trials: 1 ERROR, 1 PENDING, 1 RUNNING" in text
    assert "## Best trial\n\nNone" in text
    assert "no trial finished" in section(text, "Best model's segmentation")
    assert trial_order(text) == ["r1", "p1", "e1"]
    assert (exp / "plots" / LEARNING_CURVES_PNG).is_file()
    assert not (exp / "plots" / HYPERPARAMETERS_PNG).exists()
    assert "no hyperparameters" in text and HYPERPARAMETERS_PNG not in text


def test_failed_trials_are_listed_with_reason_and_error_file(tmp_path: Path) -> None:
    """A format-2 summary: the state says trials failed, each failed trial's reason and file."""
    trials = standard_trials()
    for t in trials:
        t["error"] = None
    err = next(t for t in trials if t["trial_id"] == "err001")
    err["error"] = {"reason": "DataError: bad.txt:2: bytes | not UTF-8", "file": "/x/error.txt"}
    planted = {
        "reason": "MemoryError",
        "file": "/x/e2.txt",
        "log": "/x/logs/err002.log",
        "log_tail": ["=== seg_tune attempt 2026-12-03_10-00-00 trial", "step=10 a ``` b"],
    }
    exp = make_experiment(tmp_path, trials=trials)
    summary = json.loads((exp / "summary.json").read_text())
    summary.update(format=2, outcome="failed", finished=False, n_failed=1)
    (exp / "summary.json").write_text(json.dumps(summary))
    text = write_report(exp).read_text()
    assert "State:** ended with failed trials;" in text
    failed = section(text, "Failed trials")
    assert f"1 of {len(trials)} trials ended in ERROR" in failed
    row = next(line for line in failed.splitlines() if "err001" in line)
    assert "DataError: bad.txt:2: bytes \\| not UTF-8" in row  # the pipe escaped
    assert "`/x/error.txt`" in row
    assert "<details>" not in failed  # a format-2 error has no log
    trials.append({**err, "trial_id": "err002", "error": planted})
    text = write_report(make_experiment(tmp_path / "tail", trials=trials)).read_text()
    failed = section(text, "Failed trials")
    assert "`/x/logs/err002.log`" in next(line for line in failed.splitlines() if "err002" in line)
    block = failed.split("<summary>trial err002: the last lines of its log</summary>", 1)[1]
    assert (
        block.split("</details>", 1)[0].strip()
        == "````\n" + "\n".join(planted["log_tail"]) + "\n````"
    )
    ok = [t for t in trials if t["status"] != "ERROR"]
    assert (
        "Failed trials" not in write_report(make_experiment(tmp_path / "ok", trials=ok)).read_text()
    )


def test_no_history_at_all_and_one_trial(tmp_path: Path) -> None:
    trials = [_trial("only1", "ERROR", {"model.n_layer": 4}, [])]
    exp = make_experiment(tmp_path, trials=trials, best_id=None, best_model=False)
    text = write_report(exp).read_text()
    assert not (exp / "plots" / LEARNING_CURVES_PNG).exists()
    assert "No trial reported a learning curve yet." in text
    assert trial_order(text) == ["only1"]
    assert (exp / "plots" / HYPERPARAMETERS_PNG).is_file()  # a panel saying there is no value


def test_one_finished_trial(tmp_path: Path) -> None:
    trials = [_trial("solo", "TERMINATED", {"training.lr": 1e-3}, [_hist(100, 0.6, 1.5)])]
    exp = make_experiment(tmp_path, trials=trials, best_id="solo")
    text = write_report(exp).read_text()
    assert "## Best trial: `solo`" in text
    assert trial_order(text) == ["solo"]
    fig = learning_curves_figure(read_experiment(exp))
    assert fig is not None
    assert not [c for c in fig.axes[0].collections if c.get_gid() == STOP_MARKER_GID]


def fifty_trials() -> list[dict[str, Any]]:
    """50 seeded trials of 1 to 6 evaluations, some stopped early (bench/speed_targets.py times
    the report of these)."""
    rng = np.random.default_rng(0)
    trials = []
    for i in range(50):
        stop = int(rng.choice([100, 300, 600]))
        steps = range(100, stop + 1, 100)
        hist = [_hist(s, float(rng.uniform(0.3, 0.8)), float(rng.uniform(1, 3))) for s in steps]
        cfg = {
            "training.lr": float(10 ** rng.uniform(-4, -2)),
            "model.dropout": 0.1 * (i % 4),
            "model.n_layer": int(rng.choice([2, 4, 6])),
            "training.schedule": "linear",
        }
        trials.append(
            _trial(
                f"t{i:02d}", "TERMINATED", cfg, hist, stopped_at_step=stop if stop < 600 else None
            )
        )
    return trials


def test_fifty_trials_are_all_listed_best_first(tmp_path: Path) -> None:
    """Its speed is a benchmark: bench/speed_targets.py (BENCHMARKS.md)."""
    trials = fifty_trials()
    exp = make_experiment(tmp_path, trials=trials, best_id="t07")
    text = write_report(exp).read_text()
    by_objective = sorted(trials, key=lambda t: -t["metrics"][OBJ])  # stable: ties keep order
    assert trial_order(text) == [t["trial_id"] for t in by_objective]
    early = sum(t["stopped_early"] for t in trials)
    assert f"State:** finished; trials: 50 TERMINATED; {early} stopped early" in text


# --------------------------------------------------------------------------- command line


def test_cli_prints_the_report_path(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "seg_tune.report", str(exp)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(exp / "report.md")
    assert (exp / "report.md").is_file()


def _bad_format(root: Path) -> Path:
    exp = make_experiment(root)
    data = json.loads((exp / "summary.json").read_text())
    (exp / "summary.json").write_text(json.dumps({**data, "format": 99}))
    return exp


def _bad_json(root: Path) -> Path:
    exp = make_experiment(root)
    (exp / "summary.json").write_text('{"format": 1,\n "metric": ')
    return exp


def _bad_mode(root: Path) -> Path:
    return make_experiment(root, mode="maximum")


def _no_summary(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root / "missing", "no such folder; EXP_DIR must be an experiment folder"),
        (_no_summary, "no summary.json in it; EXP_DIR must be an experiment folder"),
        (_bad_format, "format 99 is unknown"),
        (_bad_json, "summary.json:2: not valid JSON"),
        (_bad_mode, "'mode' is 'maximum'; allowed: 'min' or 'max'"),
    ],
)
def test_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str
) -> None:
    exp = make(tmp_path)
    assert main([str(exp)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected in err
    assert not (exp / "report.md").exists()


def test_cli_error_via_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "seg_tune.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_the_report_says_when_a_baseline_beats_the_model(tmp_path: Path) -> None:
    """The model's row is bold only when it wins; when a TP baseline beats it on boundary F,
    the report says so and bolds that baseline."""
    exp = make_experiment(tmp_path / "wins")
    text = write_report(exp).read_text()
    tp = section(text, "Best model's segmentation")
    assert "The model beats every TP baseline on boundary F (0.776 against 0.720" in tp
    assert [r[0] for r in table_rows(tp[tp.index("### Against") :])][:1] == [
        "**model: boundary_prob/spike**"
    ]

    exp = make_experiment(tmp_path / "loses")
    seg = json.loads((exp / "best_model" / "segmentation.json").read_text())
    seg["tp_baseline"]["mi/relative"]["boundary_noedge_fscore"] = 0.812
    (exp / "best_model" / "segmentation.json").write_text(json.dumps(seg))
    text = write_report(exp).read_text()
    tp = section(text, "Best model's segmentation")
    assert (
        "**The TP baseline mi/relative beats the model** on boundary F (0.812 against 0.776)" in tp
    )
    names = [r[0] for r in table_rows(tp[tp.index("### Against") :])]
    assert names[0] == "model: boundary_prob/spike" and "**TP mi/relative**" in names
    assert sum(name.startswith("**") for name in names) == 1


def test_plots_follow_the_space_and_show_the_tp_baseline(tmp_path: Path) -> None:
    """With the experiment's space.json: a log axis for a loguniform key whatever its span, one
    tick per value for a numeric choice; the learning curves carry the best TP baseline."""
    from seg_tune.report import TP_LINE_GID

    exp = make_experiment(tmp_path)
    space = {
        "space": {
            "training.lr": {"type": "loguniform", "min": 1e-3, "max": 2e-3},
            "model.dropout": {"type": "choice", "values": [0.0, 0.1, 0.2]},
        }
    }
    (exp / "space.json").write_text(json.dumps(space))
    summary = json.loads((exp / "summary.json").read_text())
    for t in summary["trials"]:  # lr within a factor 2: the span alone would give a linear axis
        if "training.lr" in t["config"]:
            t["config"]["training.lr"] = 1e-3 + (hash(t["trial_id"]) % 10) * 1e-4
    (exp / "summary.json").write_text(json.dumps(summary))
    fig = hyperparameter_figure(read_experiment(exp))
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert panels["learning rate"].get_xscale() == "log"
    # within one decade: labels at 1, 2, 5 as plain numbers, none on the minor ticks (they
    # overlapped)
    from matplotlib.ticker import NullFormatter

    axis = panels["learning rate"].xaxis
    assert isinstance(axis.get_minor_formatter(), NullFormatter)
    assert axis.get_major_formatter()(0.002, 0) == "0.002"
    ticks = [t.get_text() for t in panels["dropout"].get_xticklabels()]
    read = read_experiment(exp)
    plotted = {
        t.config["model.dropout"]
        for t in read.trials
        if "model.dropout" in t.config and read.objective(t) is not None
    }
    assert len(plotted) >= 2 and ticks == [json.dumps(v) for v in sorted(plotted)]

    curves = learning_curves_figure(read_experiment(exp))
    lines = [ln for ln in curves.axes[0].lines if ln.get_gid() == TP_LINE_GID]
    assert len(lines) == 1 and list(lines[0].get_ydata()) == [0.720, 0.720]  # mi/relative
    assert "best TP baseline (mi/relative" in lines[0].get_label()


# --------------------------------------------------------------------------- noise


def test_noise_section_flags_rung_decisions_within_the_bootstrap_interval(tmp_path: Path) -> None:
    """Issue 19: the objective's bootstrap interval (half-width 0.05 here) against the rung
    decisions. Rung 100: the weakest trial that went on (0.40) beat the one that stayed (0.30)
    by 0.10, clear of the noise; rung 300: 0.62 against 0.58, within it."""
    from seg_tune.metrics import ci_keys

    low, high = ci_keys(OBJ)
    trials = standard_trials()
    for t in trials:
        for h in t["history"]:
            if isinstance(h[OBJ], float) and not math.isnan(h[OBJ]):
                h[low], h[high] = h[OBJ] - 0.05, h[OBJ] + 0.05
    text = write_report(make_experiment(tmp_path, trials=trials)).read_text(encoding="utf-8")
    noise = section(text, "Noise in the objective")
    assert "the median half-width is ±0.050" in noise
    rows = table_rows(noise)
    assert rows == [
        ["100", "4", "3", "0.400", "0.300", "+0.100"],
        ["300", "2", "1", "0.620", "0.580", "+0.040 **within noise**"],
    ]
    assert "**Warning:** at rung 300 the trials that went on" in noise

    plain = write_report(make_experiment(tmp_path / "old")).read_text(encoding="utf-8")
    assert "Noise in the objective" not in plain  # no interval reported: no section
