"""A lost node is told apart from a failing trial (seg_tune.sweep.faults): on Ray's own error
classes and Tune's own Trial, and for real, a Ray Train trial on a 2-node Ray cluster started
here whose worker's node is killed; test_slurm kills a node of a 2-node SLURM job."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")

from ray.core.generated.common_pb2 import ActorDiedErrorContext, NodeDeathInfo
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
from ray.tune.experiment.trial import Trial
from ray_cluster import kill_node, ray_head, ray_node
from test_run import _fifo_space, _results, _start, _wait_for

from seg_tune.sweep import faults
from seg_tune.sweep.results import failure_history


def _died(message: str, reason: int | None = None) -> ActorDiedError:
    death = NodeDeathInfo(reason=reason) if reason is not None else None
    exc = ActorDiedError(
        ActorDiedErrorContext(
            error_message=message,
            class_name="ImplicitFunc",
            actor_id=b"\0" * 16,
            node_death_info=death,
        )
    )
    exc.args = ()  # the context stays out of its pickle (Ray's own errors travel pickled)
    return exc


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


class _Trial(Trial):
    """Tune's Trial whose folder is a plain one (no Ray session): `handle_error` as in a sweep,
    error.txt included."""

    folder = ""

    @property
    def local_path(self) -> str:
        return self.folder


def _trial(tmp_path: Path) -> _Trial:
    trial = _Trial("__fake", stub=True)
    trial.folder = str(tmp_path / trial.trial_id)
    Path(trial.folder).mkdir()
    return trial


def test_tune_counts_a_node_loss_only_past_max_node_losses(tmp_path: Path) -> None:
    faults.count_node_losses_apart(2)
    faults.count_node_losses_apart(2)  # idempotent: one wrapper
    trial = _trial(tmp_path)
    trial.handle_error(NODE_GONE)
    trial.handle_error(NODE_GONE)
    assert trial.run_metadata.num_failures == 0
    trial.handle_error(NODE_GONE)  # a third loss: this trial may be what takes nodes down
    assert trial.run_metadata.num_failures == 1
    trial.handle_error(WORKER_KILLED)
    assert trial.run_metadata.num_failures == 2
    other = _trial(tmp_path)
    other.handle_error(DRAINED)
    assert other.run_metadata.num_failures == 0
    # error.txt, as summary.json reads it: every attempt, the losses marked
    # (the third was a node loss too, counted: the note marks the two left out of the count)
    text = Path(trial.error_file).read_text()
    history = failure_history(text)
    assert [h["node_lost"] for h in history] == [True, True, True, False]
    assert [h["attempt"] for h in history] == [1, 2, 3, 4]
    assert text.count(faults.NODE_LOST_NOTE) == 2


def _train_error(rank_errors: dict[int, BaseException]) -> RayTaskError:
    """What a Ray Train trial's trainable raises to Tune when its worker group fails: Train V2's
    WorkerGroupError, per rank a failed health check carrying the worker actor's error (or the
    worker's own exception), inside the RayTaskError of the Tune trainable."""
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    failures = {
        rank: WorkerHealthCheckFailedError("A worker health check failed.", failure=e)
        if isinstance(e, RayActorError)
        else e
        for rank, e in rank_errors.items()
    }
    return RayTaskError("run_trial", "Traceback: WorkerGroupError", WorkerGroupError("x", failures))


def test_a_train_worker_that_lost_its_node_is_a_node_loss_of_the_trial() -> None:
    gloo = RuntimeError("Connection closed by peer")  # rank 0, live, loses its partner
    assert faults.is_node_loss(_train_error({0: gloo, 1: NODE_GONE}))
    assert faults.is_node_loss(_train_error({1: DRAINED}))
    assert not faults.is_node_loss(_train_error({0: gloo, 1: WORKER_KILLED}))
    assert not faults.is_node_loss(_train_error({0: ValueError("its node has died")}))


def test_tune_leaves_a_train_workers_node_loss_out_of_the_count(tmp_path: Path) -> None:
    faults.count_node_losses_apart(1)
    trial = _trial(tmp_path)
    lost = _train_error({1: NODE_GONE})
    trial.handle_error(lost)
    assert trial.run_metadata.num_failures == 0
    trial.handle_error(_train_error({1: NODE_GONE}))  # past max_node_losses
    assert trial.run_metadata.num_failures == 1
    assert [h["node_lost"] for h in failure_history(Path(trial.error_file).read_text())] == [
        True,
        False,
    ]
    other = _trial(tmp_path)
    other.handle_error(_train_error({1: WORKER_KILLED}))
    assert other.run_metadata.num_failures == 1
    try:
        raise ValueError("a bug in the trial")
    except ValueError as exc:
        other.handle_error(RayTaskError("run_trial", "tb", exc))
    assert other.run_metadata.num_failures == 2


def test_a_train_trial_whose_worker_node_dies_resumes_on_a_new_node_with_no_retry_spent(
    tmp_path: Path,
) -> None:
    """A 2-worker Ray Train trial on a real 2-node cluster (this machine: a head and a node
    that joins it, 1 CPU each, so one worker per node), `failure.max_retries: 0`. The node with
    a worker is SIGKILLed whole mid-trial: the driver says the trial lost its node; a new node
    joins, and the trial resumes there from its latest checkpoint and finishes. With max_retries
    0, a counted failure would have ended it in ERROR."""
    max_steps = 120
    space = _fifo_space(
        tmp_path,
        1,
        max_steps,
        resources={"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
        failure={"max_retries": 0},
        wandb={"mode": "disabled"},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    exp = storage / "smoke"
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(ray_head(tmp_path, num_cpus=1))
        n2 = stack.enter_context(ray_node(head, tmp_path, 1, "n2"))
        proc = _start(space, storage, log, "--address", head.address, env=head.env)

        def checkpointed() -> list[int]:  # checkpointed steps Tune has received (via Train)
            assert proc.poll() is None, log.read_text()[-3000:]
            results = [r for d in exp.glob("tune/trial_*") for r in _results(exp, d.name[6:])]
            return [r["step"] for r in results if r.get("checkpoint_path")]

        _wait_for(lambda: max(checkpointed(), default=0) >= 20, 300, "a checkpoint at step 20")
        on_n2 = [
            p
            for p in psutil.Process(n2.pid).children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline())
        ]
        assert on_n2, "no Train worker on the node to kill"
        step = max(checkpointed())
        kill_node(n2)
        killed_at = time.time()
        _wait_for(lambda: "lost its node" in log.read_text(), 180, "the node loss seen")
        seen_at = time.time()
        assert proc.poll() is None, log.read_text()[-3000:]
        stack.enter_context(ray_node(head, tmp_path, 1, "n3"))
        joined_at = time.time()
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    summary = json.loads((exp / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "TERMINATED" and trial["steps_trained"] == max_steps, trial
    (failure,) = trial["failures"]
    assert failure["node_lost"] is True, failure
    restarts = [r["resumed_from_step"] for r in _results(exp, trial["trial_id"])]
    assert any(step - 10 <= r and r > 0 for r in restarts), (restarts, step)
    assert 0 not in restarts[restarts.index(max(restarts)) :]  # never from scratch after it
    again = next(r for r in _results(exp, trial["trial_id"]) if r["resumed_from_step"] > 0)
    print(  # the figures BENCHMARKS.md records (Tune's timestamps have 1 s resolution)
        f"\nnode loss of a Train trial: loss seen {seen_at - killed_at:.1f} s after the kill; "
        f"new node up {joined_at - killed_at:.1f} s after; training again (first new result) "
        f"{again['timestamp'] - killed_at:.1f} s after; checkpoint {step} before the kill, "
        f"resumed from {again['resumed_from_step']}"
    )


def test_a_sweep_waits_for_a_node_that_fits_then_runs(tmp_path: Path) -> None:
    """`--wait-for-workers`: a trial of 2 CPUs on a 1-CPU head. The driver says it waits instead
    of refusing; a 2-CPU node joins (as a worker job's would) and the trial runs there to its
    end. Without the option (and after the wait runs out) the sweep is refused, exit 2."""
    space = _fifo_space(
        tmp_path,
        1,
        20,
        resources={"workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 0},
        wandb={"mode": "disabled"},
    )
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(ray_head(tmp_path, num_cpus=1))
        short = _start(
            space,
            storage,
            tmp_path / "short.log",
            "--address",
            head.address,
            "--wait-for-workers",
            "4",
            env=head.env,
        )
        assert short.wait(timeout=120) == 2
        refused = (tmp_path / "short.log").read_text()
        assert "waiting up to 4 s" in refused and "waited 4 s" in refused, refused[-2000:]
        assert "cpus_per_worker" in refused.strip().splitlines()[-1], refused[-2000:]

        proc = _start(
            space,
            storage,
            log,
            "--address",
            head.address,
            "--wait-for-workers",
            "300",
            env=head.env,
        )
        _wait_for(lambda: "waiting up to 300 s" in log.read_text(), 120, "the wait line")
        assert proc.poll() is None, log.read_text()[-3000:]
        node = stack.enter_context(ray_node(head, tmp_path, 2, "big"))  # a worker job's node
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
        assert "a trial fits now" in log.read_text()
        exp = storage / "smoke"
        (trial,) = json.loads((exp / "summary.json").read_text())["trials"]
        assert trial["status"] == "TERMINATED" and trial["steps_trained"] == 20, trial
        node_ids = {r["node_id"] for r in _results(exp, trial["trial_id"])}
        assert len(node_ids) == 1 and node.pid, node_ids  # one attempt, on the node that fits
