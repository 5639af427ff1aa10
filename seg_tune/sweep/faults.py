"""A lost node is not a failing trial: how the sweep tells the two apart when it counts retries.

`failure.max_retries` is for trials that fail by themselves (an exception in the training loop,
a trainable killed for its memory, a bad checkpoint): they would fail again. A trial whose node
went away (hardware, the node's OOM killer taking Ray down, `scontrol update state=down`, a
preempted cloud node) did nothing wrong. Ray says which is which: the trial's actor fails with
`ActorDiedError`, and when its node died the error is `preempted` (the node was drained first)
or its text carries the GCS's cause, "The actor died because its node has died"; a node that
went without notice often shows first as `ActorUnavailableError`, and then the GCS is asked
whether the actor's node is still alive. Tune 2.60 already leaves preempted errors out of a
trial's failure count (`Trial._handle_ray_actor_error`); `count_node_losses_apart` extends that
to every node death (wrapping `Trial.handle_error`: a trial's own actor error, or a Ray Train
trial's worker group error that carries a worker's), in the driver, up to
`failure.max_node_losses` losses per trial in one driver run (a trial that keeps taking nodes
down is then counted as failing). The trial is retried from its latest
checkpoint on a node that is left, and its error file still records the loss (summary.json
lists it with `node_lost: true`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

# The GCS's text for an actor whose node died (`ActorDiedError`, from its `ActorDiedErrorContext`)
NODE_DIED = "because its node has died"

# How long to wait for the GCS to settle whether an unreachable actor's node is gone: Ray
# marks a node dead after missing health checks (3 s period x 5 misses by default)
NODE_DEATH_WAIT_S = 45.0


def is_node_loss(exc: BaseException | None, wait_s: float = NODE_DEATH_WAIT_S) -> bool:
    """Whether Ray reports this trial error as the death of the trial's node, or, for a Ray
    Train trial, of one of its workers' nodes (`_wrapped`).

    A node that dies without notice first shows as `ActorUnavailableError` (the socket to the
    actor closed: measured on the test SLURM), before the GCS has noticed; then the GCS is asked,
    for up to `wait_s`, whether the actor's node is still alive."""
    return any(_actor_lost_its_node(e, wait_s) for e in _wrapped(exc))


def _actor_lost_its_node(exc: BaseException, wait_s: float) -> bool:
    from ray.exceptions import ActorUnavailableError, RayActorError

    if not isinstance(exc, RayActorError) or exc.actor_init_failed:
        return False
    if isinstance(exc, ActorUnavailableError):
        return exc.actor_id is not None and _node_gone(exc.actor_id, wait_s)
    return bool(exc.preempted) or NODE_DIED in str(exc)


def _wrapped(exc: BaseException | None) -> list[BaseException]:
    """The error and the errors it carries: a Ray task's cause, and a Ray Train trial's worker
    failures (Train V2's `WorkerGroupError.worker_failures`: per rank, a worker's exception, or a
    failed health check whose `health_check_failure` is the worker actor's error)."""
    from ray.exceptions import RayTaskError

    found: list[BaseException] = []
    stack = [exc]
    while stack and len(found) < 64:
        e = stack.pop()
        if not isinstance(e, BaseException):
            continue
        found.append(e)
        if isinstance(e, RayTaskError):
            stack.append(e.cause)
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            stack.extend(failures.values())
        stack.append(getattr(e, "health_check_failure", None))
    return found


def _node_gone(actor_id: str, wait_s: float) -> bool:
    """Whether the GCS marks the node of this actor dead within `wait_s` (False: it stays
    alive, so the actor died on a node that lives: the trial's own failure)."""
    import ray
    from ray._private import state

    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = state.actors(actor_id=actor_id)
            node = (info or {}).get("Address", {}).get("NodeID")
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:  # the GCS itself unreachable: not a lost worker node
            return False
        if node and node not in alive:
            return True
        # (not "the actor is DEAD": the GCS marks it so before it marks a killed node dead)
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


# added to the error that Tune writes to the trial's error.txt when its node was lost
NODE_LOST_NOTE = "seg_tune: the trial's node was lost (not counted in failure.max_retries)"


def text_is_node_loss(text: str) -> bool:
    """The same question for an error as Tune wrote it (a trial's error.txt entry)."""
    return NODE_DIED in text or NODE_LOST_NOTE in text


_losses: Counter[str] = Counter()  # trial id -> node losses not counted, in this driver run
_limit = [0]


def count_node_losses_apart(max_node_losses: int) -> None:
    """Make this driver's Tune leave node losses out of its trials' failure counts (at most
    `max_node_losses` per trial; idempotent, the latest limit holds)."""
    from ray.tune.experiment.trial import Trial

    _limit[0] = max_node_losses
    original = Trial.handle_error
    if getattr(original, "seg_tune_node_losses", False):
        return

    def handle_error(self: Any, exc: Any = None) -> None:
        if self.is_restoring or not _lost_and_not_counted(self.trial_id, exc):
            original(self, exc)
            return
        counted = self.run_metadata.num_failures
        original(self, exc)  # Tune's bookkeeping and error.txt, whatever the error's kind
        self.run_metadata.num_failures = counted  # before Tune asks whether to retry it
        if self.local_path:
            with open(self.error_file, "a", encoding="utf-8") as f:
                f.write(NODE_LOST_NOTE + "\n")

    handle_error.seg_tune_node_losses = True  # type: ignore[attr-defined]
    Trial.handle_error = handle_error


def _lost_and_not_counted(trial_id: str, exc: BaseException) -> bool:
    """Whether this trial error is a node loss the trial may still have uncounted (it is
    counted here, and said in the driver's log)."""
    if _losses[trial_id] >= _limit[0] or not is_node_loss(exc):
        return False
    _losses[trial_id] += 1
    print(
        f"seg_tune: trial {trial_id} lost its node; retrying it from its latest "
        f"checkpoint on a node that is left (node loss {_losses[trial_id]} of at "
        f"most {_limit[0]}: not counted against failure.max_retries)",
        file=sys.stderr,
        flush=True,
    )
    return True
