"""A lost node is told apart from a failing trial (seg_tune.sweep.faults), on Ray's own error
classes and Tune's own Trial: the real cases are in test_slurm (a node of a 2-node job killed)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from ray.core.generated.common_pb2 import ActorDiedErrorContext, NodeDeathInfo
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
from ray.tune.experiment.trial import Trial

from seg_tune.sweep import faults


def _died(message: str, reason: int | None = None) -> ActorDiedError:
    death = NodeDeathInfo(reason=reason) if reason is not None else None
    return ActorDiedError(
        ActorDiedErrorContext(
            error_message=message,
            class_name="ImplicitFunc",
            actor_id=b"\0" * 16,
            node_death_info=death,
        )
    )


NODE_GONE = _died("The actor died because its node has died. Node Id: 3f2a")
DRAINED = _died("drained", NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED)
WORKER_KILLED = _died("The actor is dead because its worker process has died.")  # an OOM kill


def test_node_deaths_are_node_losses_and_other_deaths_are_not() -> None:
    assert faults.is_node_loss(NODE_GONE) and faults.is_node_loss(DRAINED)
    assert not faults.is_node_loss(WORKER_KILLED)
    assert not faults.is_node_loss(RayActorError(actor_init_failed=True))
    assert not faults.is_node_loss(ValueError("its node has died"))  # a trial's own exception
    assert not faults.is_node_loss(None)
    try:
        raise ValueError("a bug in the trial")
    except ValueError as exc:
        assert not faults.is_node_loss(RayTaskError("train", "tb", exc))


def test_tune_counts_a_node_loss_only_past_max_node_losses() -> None:
    faults.count_node_losses_apart(2)
    faults.count_node_losses_apart(2)  # idempotent: one wrapper
    trial = Trial("__fake", stub=True)  # no storage: the path handle_error takes, minus error.txt
    trial._handle_ray_actor_error(NODE_GONE)
    trial._handle_ray_actor_error(NODE_GONE)
    assert trial.run_metadata.num_failures == 0
    trial._handle_ray_actor_error(
        NODE_GONE
    )  # a third loss: this trial may be what takes nodes down
    assert trial.run_metadata.num_failures == 1
    trial._handle_ray_actor_error(WORKER_KILLED)
    assert trial.run_metadata.num_failures == 2
    other = Trial("__fake", stub=True)
    other._handle_ray_actor_error(DRAINED)
    assert other.run_metadata.num_failures == 0
