"""ASHA's rungs, as pure functions: where trials are judged. Both ASHA kinds
(`seg_tune.sweep.asha`) and the spec (`ExperimentSpec.pause_rungs`, a trial's checkpoint steps)
use them, and the report draws them; nothing here imports Ray."""

from __future__ import annotations


def keeps_rung(step: float, max_t: float) -> bool:
    """Whether ASHA judges trials at `step`: only in the first 90% of the budget. A rung later
    than that can save at most a tenth of a trial's steps, and costs a checkpoint, a restart and
    a wait in the queue (grace 333, rf 3, max_t 3000 would pause every trial at 2997)."""
    return 10 * step <= 9 * max_t


def rung_steps(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """ASHA's rungs: grace x rf^k (rounded to a step) at most 90% of the budget (`keeps_rung`;
    the budget itself is the end, not a rung). Both ASHA kinds judge trials at these steps."""
    steps, k = [], 0
    while keeps_rung(step := round(grace_period * reduction_factor**k), max_t):
        if not steps or step > steps[-1]:
            steps.append(step)
        k += 1
    return steps
