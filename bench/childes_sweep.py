"""The 2-CPU real-data sweep of issue 17, scored on held-out test utterances.

    .venv/bin/python bench/childes_sweep.py [--space bench/childes_sweep.yaml]
        [--data ../shared/data/childes-en] [--test-from 7000] [--out runs/childes_sweep]
        [--fresh] [--log runs.jsonl]

Runs `python -m seg_tune.run` on the space (train.txt for training; validation: the first 2,000
dev utterances, as the space says), then scores on **test**: the dev utterances from number
`--test-from` on (by file order, which is transcript order; disjoint from validation). The test
split is written to the output folder and is never seen by the sweep.

Reports, for the model seg_tune exports (`best_model/`, the best trial at its best step) and for
the model the export used to ship (the trial best on its *last* values, at its last step):
- the step, and its validation BF (boundary_noedge F) as the sweep measured it;
- its test BF with the cue x strategy row chosen on validation (fair cutoffs by two-fold
  cross-fitting there) and threshold cutoffs chosen on validation, applied once to test;
and the best TP baseline on the same test utterances, the wall time, and the slot-time no trial
used (all of it, and in the end game: after the last trial started). One JSON line per run goes to
--log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from asha_vs_fifo import idle_slot_time  # noqa: E402

OBJECTIVE = "boundary_noedge_fscore"


def write_test_split(dev: Path, start: int, target: Path) -> int:
    """Dev's non-blank lines from number `start` on, as they are (quirks kept)."""
    lines = [line for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    target.write_text("\n".join(lines[start:]) + "\n", encoding="utf-8")
    return len(lines) - start


def score_on_test(model_dir: Path, valid: list, test: list) -> dict:
    """The row best on validation (two-fold cutoffs there), scored on test with its cutoffs
    chosen on validation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from seg_tune.cues import Window
    from seg_tune.segment import best_row, segment_table

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    window = Window.for_model(model, 128)
    chosen = best_row(segment_table(model, tokenizer, valid, window=window))
    on_test = segment_table(model, tokenizer, test, cutoff_utterances=valid, window=window)
    row = next(
        r
        for r in on_test
        if (r["cue"], r["strategy"], r["oracle"]) == (chosen["cue"], chosen["strategy"], False)
    )
    return {
        "row": f"{chosen['cue']} / {chosen['strategy']}",
        "valid_bf_full": chosen[OBJECTIVE],
        "test_bf": row[OBJECTIVE],
        "test_best_row_bf": best_row(on_test)[OBJECTIVE],  # chosen on test: for reference only
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", type=Path, default=REPO / "bench/childes_sweep.yaml")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/childes-en")
    parser.add_argument("--test-from", type=int, default=7000, help="first dev utterance of test")
    parser.add_argument("--out", type=Path, default=REPO / "runs/childes_sweep")
    parser.add_argument("--fresh", action="store_true", help="start the sweep over")
    parser.add_argument("--log", type=Path, help="append the result here (JSON lines)")
    args = parser.parse_args()

    from seg_tune.baseline import tp_all_scores
    from seg_tune.corpus import load_tagged
    from seg_tune.sweep.layout import Layout
    from seg_tune.sweep.results import export_best_model, latest_and_best

    data, out = args.data.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(args.space.read_text(encoding="utf-8"))
    doc["data"]["train"]["path"] = str(data / "train.txt")
    doc["data"]["valid"]["path"] = str(data / "dev.txt")
    space = out / "space.yaml"
    space.write_text(yaml.safe_dump(doc), encoding="utf-8")
    n_test = write_test_split(data / "dev.txt", args.test_from, out / "test.txt")

    t0 = time.monotonic()
    command = [sys.executable, "-m", "seg_tune.run", str(space), "--storage", str(out)]
    subprocess.run(command + (["--fresh"] if args.fresh else []), check=True, cwd=REPO)
    wall = time.monotonic() - t0

    layout = Layout.of(out, doc["experiment"]["name"])
    summary = json.loads(layout.summary.read_text(encoding="utf-8"))
    metric = summary["metric"]
    valid = load_tagged(str(data / "dev.txt"))[: doc["data"]["valid"]["max_utterances"]]
    test = load_tagged(str(out / "test.txt"))

    best = summary["best"]
    exported = {
        "trial": best["trial_id"],
        "step": best["step"],
        "valid_bf": best["chosen_metrics"][metric],
        **score_on_test(layout.best_model, valid, test),
    }
    # what the export shipped before issue 17: the trial best on its last values, its last step
    done = [t for t in summary["trials"] if metric in t["metrics"]]
    last = max(done, key=lambda t: t["metrics"][metric])
    latest, _ = latest_and_best(layout, last["trial_id"], layout.trial_dir(last["trial_id"]))
    old_model = out / "last_step_model"
    export_best_model(latest, old_model)
    shipped_before = {
        "trial": last["trial_id"],
        "step": last["steps_trained"],
        "valid_bf": last["metrics"][metric],
        **score_on_test(old_model, valid, test),
    }
    tp = tp_all_scores(test)
    tp_best = max(tp.items(), key=lambda kv: kv[1][OBJECTIVE])
    result = {
        "space": str(args.space),
        "n_valid": len(valid),
        "n_test": len(test),
        "test_lines_from": args.test_from,
        "n_test_lines": n_test,
        "wall_s": round(wall, 1),
        "trials": len(summary["trials"]),
        "trial_steps": sum(t["steps_trained"] for t in summary["trials"]),
        "stopped_by": {
            str(k): sum(t.get("stopped_by") == k for t in summary["trials"])
            for k in ("asha", "patience", None)
        },
        "exported": exported,
        "last_step_of_best_by_last": shipped_before,
        "tp_best_on_test": {"variant": tp_best[0], "bf": tp_best[1][OBJECTIVE]},
        **idle_slot_time(layout.root, doc["experiment"]["max_concurrent"]),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    if args.log:
        with args.log.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
