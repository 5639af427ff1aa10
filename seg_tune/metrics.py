"""Names of the metrics a training run reports at every evaluation (one source of truth).

The tuning service validates a search space's objective against these names before Ray starts.
"""

from __future__ import annotations

SCORE_KEYS: tuple[str, ...] = tuple(
    f"{kind}_{measure}"
    for kind in ("token", "type", "boundary_all", "boundary_noedge")
    for measure in ("precision", "recall", "fscore")
)
# What every table (segment, baseline, score, the report) calls each level and score. "boundary"
# is boundary_noedge, the field's headline (utterance edges, boundaries for free, left out);
# "boundary+edges" counts them.
LEVEL_LABELS: dict[str, str] = {
    "token": "token",
    "type": "type",
    "boundary_all": "boundary+edges",
    "boundary_noedge": "boundary",
}
SCORE_LABELS: dict[str, str] = {
    f"{level}_{measure}": f"{label} {measure[0].upper()}"
    for level, label in LEVEL_LABELS.items()
    for measure in ("precision", "recall", "fscore")
}
# The scores the tables show, in this order (--json and summary.json have all 12).
TABLE_SCORES: tuple[str, ...] = (
    "boundary_noedge_fscore",
    "boundary_noedge_precision",
    "boundary_noedge_recall",
    "boundary_all_fscore",
    "token_fscore",
    "type_fscore",
)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = tuple((SCORE_LABELS[k], k) for k in TABLE_SCORES)
"""(column title, score key) of the scores the tables show."""

# Titles for plots and tables (the key itself is shown beside them in small print).
METRIC_TITLES: dict[str, str] = {
    "valid_loss": "validation loss (nats per token)",
    "valid_bpp": "validation bits per phoneme",
    "train_loss": "training loss (nats per token)",
    "tokens_per_s": "training speed (tokens/s)",
    **{f"seg_{key}": f"{label} (best fair cue x strategy)" for key, label in SCORE_LABELS.items()},
}

CUE_NAMES: tuple[str, ...] = (
    "loss",
    "entropy",
    "rank",
    "boundary_prob",
    "increase_loss",
    "increase_entropy",
    "increase_rank",
    "increase_boundary_prob",
)

STEP = "step"  # optimizer steps done; ASHA's time attribute, monotonic across restores
TRAINING_METRICS: dict[str, str] = {
    STEP: "max",
    "train_loss": "min",
    "valid_loss": "min",
    "valid_bpp": "min",  # validation bits per phoneme
    "tokens_per_s": "max",
}
# The 12 scores of the best non-oracle cue x strategy, and each cue's spike boundary_noedge F.
SEGMENTATION_METRICS: dict[str, str] = {
    **{f"seg_{key}": "max" for key in SCORE_KEYS},
    **{f"spike_{cue}_bf": "max" for cue in CUE_NAMES},
}
REPORTED_METRICS: dict[str, str] = {**TRAINING_METRICS, **SEGMENTATION_METRICS}


def ci_keys(metric: str) -> tuple[str, str]:
    """The keys of a metric's 95% bootstrap interval over the scored utterances (reported with
    the objective's segmentation row: `seg_tune.segment.evaluate_segmentation`)."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


"""Every metric name reported, with the mode ("min"/"max") in which it is better."""

# Reported by a training run with every result: 1 when this evaluation is the run's best so far
# on its selection metric (training.select_metric), else 0. A checkpoint written with a 1 holds the
# best model so far; the tuner keeps checkpoints by this score (besides the latest, for resume).
BEST_SO_FAR = "best_so_far"
# Reported (as "patience") with the last result of a run that early stopping ended.
STOPPED_BY = "stopped_by"
# Reported with the first result after a resume that found unreadable checkpoints: one line per
# folder moved aside (the driver prints them; a trial's own output stays in Ray's logs).
RESTORE_WARNINGS = "restore_warnings"
# The Ray node a trial's result came from (rank 0's, hex): where it ran, attempt by attempt (which
# worker job's node, `cluster/ray_worker.wilkes3`, in the logs of the SLURM scripts).
NODE_ID = "node_id"
# Reported with the first result of each attempt (a start, a resume after a pause, a retry): the
# wall-clock time (Unix seconds) its first training step began, after its start-up (process,
# imports, corpus, checkpoint); what an attempt's start costs is read against it.
FIRST_STEP_AT = "first_step_at"
# Reported with every result: the wall-clock time (Unix seconds, float) it was reported; Tune's own
# `timestamp` is whole seconds, too coarse for the busy time of short attempts
# (`bench/asha_vs_fifo.attempts`).
REPORTED_AT = "reported_at"

TUNE_BOOKKEEPING: frozenset[str] = frozenset(
    {
        FIRST_STEP_AT,
        REPORTED_AT,
        BEST_SO_FAR,
        STOPPED_BY,
        RESTORE_WARNINGS,
        NODE_ID,
        "checkpoint_dir_name",
        "checkpoint_path",
        "should_checkpoint",
        "done",
        "config",
        "trial_id",
        "experiment_tag",
        "date",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "training_iteration",
    }
)
"""Keys of a result that are not training metrics: those Ray Tune (and Train's report callback)
add to every result, and BEST_SO_FAR (bookkeeping for checkpoint retention)."""
