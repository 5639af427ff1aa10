"""The tuning service: `python -m seg_tune.run SPACE.yaml [--name] [--storage] [--address] [--host] [--fresh] [--smoke]`.

Validates the search-space file and reads every corpus it names (exit 2 on a bad file, before
Ray starts; the encoded corpus is then shared with every trial; a test split is read only to
refuse one that overlaps train or valid, and is held out until the final phase), refuses to resume a folder
started with other settings, starts a local Ray cluster on loopback (or joins `--address` /
RAY_ADDRESS), and runs Ray Tune with the configured scheduler (ASHA whose rungs survive
restores) and searcher over trials of the training loop. With a test split in the data, the
final phase follows on the same cluster (`seg_tune.sweep.final`: the best configurations
retrained with new seeds, scored once on test). When `<storage>/<name>` already holds an
experiment it is resumed, in the search or in the final phase; `--fresh` moves it aside first.

SIGINT, SIGTERM and SIGUSR1 stop the sweep gracefully: experiment state and trial checkpoints
are saved, the local Ray cluster is shut down, and the process exits with status 3 (resumable:
run the same command again). Exit status: 0 every trial finished and every post-sweep step
worked, 1 trials failed (beyond failure.allow_failed_trials) or a post-sweep step failed,
2 bad input, 3 stopped.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg_tune.checkpoint import atomic_write_text
from seg_tune.cli.common import (
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_STOPPED,
    ArgumentParser,
)
from seg_tune.cli.prepare import (
    ray_environment,
    read_data,
    refuse_changed_space,
    refuse_cpu_torch_for_gpus,
)
from seg_tune.errors import ConfigError, SegTuneError, StorageError
from seg_tune.sweep import cluster as local_cluster
from seg_tune.sweep.disk import FULL_ERRNOS, StorageWatch, full_disk_line, shortage
from seg_tune.sweep.layout import Layout
from seg_tune.sweep.lock import ExperimentLock

WAIT_FOR_WORKERS_ENV = "SEG_TUNE_WAIT_FOR_WORKERS_S"
WAIT_POLL_S = 5.0  # how often --wait-for-workers looks at the cluster's nodes


def _add_host_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=os.environ.get(local_cluster.HOST_ENV) or local_cluster.LOOPBACK,
        metavar="ADDRESS",
        help=f"address of a local cluster's Ray services (default: ${local_cluster.HOST_ENV}, else {local_cluster.LOOPBACK}: "
        "every Ray port on loopback, nothing reachable from other machines); this machine's "
        "address, or 'auto' (or 0.0.0.0) for Ray's choice, lets other machines join: Ray then "
        "listens on all interfaces, still with token authentication. Ignored with --address",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="seg-tune run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "space", type=Path, nargs="?", help="search-space YAML file (see search_spaces/)"
    )
    parser.add_argument(
        "--print-defaults",
        action="store_true",
        help="print every section and key of a space file with its default and meaning, the "
        "distributions, and exit",
    )
    parser.add_argument("--name", help="experiment name (default: experiment.name in the file)")
    parser.add_argument(
        "--storage",
        type=Path,
        default=Path("results"),
        help="folder holding experiments (default: ./results)",
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="join this Ray cluster (default: RAY_ADDRESS, else start one)",
    )
    _add_host_argument(parser)
    parser.add_argument(
        "--wait-for-workers",
        type=float,
        default=os.environ.get(WAIT_FOR_WORKERS_ENV) or "0",  # parsed by `type`: a bad value
        # in the environment gets argparse's one-line error, as on the command line
        metavar="SECONDS",
        help="when no node of the cluster fits a trial (resources: workers, cpus_per_worker, "
        "gpus_per_worker), wait this long for nodes that do, e.g. worker jobs "
        "(cluster/ray_worker.wilkes3 --join) still in the queue, before refusing the sweep "
        f"(default: ${WAIT_FOR_WORKERS_ENV}, else 0: refuse at once)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over: move an existing experiment folder aside (never deletes)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the budget to a ~1-minute check of the file, in its own folder "
        "(<name>-smoke); all else real",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the Markdown report")
    parser.add_argument(
        "--only",
        action="append",
        metavar="CELL",
        help="a study file: run this cell only (repeat for more)",
    )
    parser.add_argument(
        "--cell",
        help="a study file: run this one cell as an experiment (the study's driver runs each "
        "cell so; --name and --storage say where)",
    )
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- stopping


class _RayResumeAdvice(logging.Filter):
    """Drops Tune's own advice after a stop (`Resume experiment with: Tuner.restore(...)`, and
    `Trials did not complete: [...]`): the way to resume is our command, which the final line
    gives, and failed trials are counted there too."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Trials did not complete") or "Resume experiment" in text)


@dataclass
class StopRequest:
    """Turns SIGINT/SIGTERM into Tune's graceful stop (Tune itself handles SIGUSR1)."""

    signals: list[str] = field(default_factory=list)
    storage: str | None = None  # why the storage watch stopped the sweep (disk.StorageWatch)

    def storage_short(self, reason: str) -> None:
        """From the storage watch's thread: stop as SIGUSR1 does (Tune's handler during a fit,
        ours between fits), and remember why."""
        self.storage = reason
        self.signals.append("storage nearly full")
        os.kill(os.getpid(), signal.SIGUSR1)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def watch_usr1(self) -> None:
        """Between two Tune fits (after the search, while the final phase scores), SIGUSR1 (the
        batch script's "time is nearly up") is ours: Tune leaves its own handler installed after
        a fit, which nothing reads then. Each fit installs Tune's again."""
        signal.signal(signal.SIGUSR1, self._handle_usr1)

    def _handle_usr1(self, signum: int, frame: Any) -> None:
        self.signals.append(signal.Signals(signum).name)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signals.append(signal.Signals(signum).name)
        if len(self.signals) > 1:  # a second signal: stop waiting on anything
            raise KeyboardInterrupt
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if callable(tune_handler) and tune_handler != self._handle_usr1:
            # Tune's handler: sets its "experiment interrupted" event
            tune_handler(signal.SIGUSR1, frame)


# ---------------------------------------------------------------------- the experiment


def run(args: argparse.Namespace) -> int:
    from seg_tune.sweep.load import load_space, smoke

    if args.print_defaults:
        from seg_tune.defaults import space_reference

        print(space_reference(), end="")
        return EXIT_FINISHED
    if args.space is None:
        raise ConfigError("seg-tune run: give a search-space file SPACE.yaml (or --print-defaults)")

    from seg_tune.sweep.load import read_space_doc
    from seg_tune.sweep.study import is_study, load_study

    doc = read_space_doc(args.space)
    if is_study(doc):
        study = load_study(args.space, doc)
        if args.cell is None:
            from seg_tune.cli.study import run_study

            return run_study(args, study)
        spec = study.spec(study.cell(args.cell))
    elif args.cell or args.only:
        raise ConfigError(
            f"{args.space}: --cell and --only are for study files (no `study` section)"
        )
    else:
        spec = load_space(args.space)  # ConfigError (exit 2) before anything expensive
    if args.smoke:
        spec = smoke(spec)
    for notice in spec.notices:
        print(f"seg_tune.run: notice: {notice}", flush=True)
    name = args.name or spec.experiment.name  # a --smoke spec is named <name>-smoke
    layout = Layout.of(args.storage, name)
    exp_dir = layout.root
    if args.fresh and exp_dir.exists():
        with ExperimentLock(exp_dir):  # refused (exit 2) while another driver runs it
            moved = layout.moved_aside()
            exp_dir.rename(moved)
        Layout(moved).lock.unlink(missing_ok=True)  # ours, moved with the folder
        print(f"seg_tune.run: --fresh: moved the old experiment to {moved} ({_kept(layout)})")
    refuse_changed_space(spec, layout, smoke=args.smoke)
    refuse_cpu_torch_for_gpus(spec)
    corpus = read_data(spec)  # every source read and checked once (DataError: exit 2)
    # one driver per experiment (exit 2 if held). Ray must not be imported before the
    # environment below is set (its C++ config reads it once; importing it earlier broke the
    # token authentication of the local cluster): check_ray stays after it.
    lock = ExperimentLock(exp_dir).acquire()
    if lock.notice:
        print(f"seg_tune.run: notice: {exp_dir}: {lock.notice}", flush=True)
    try:
        return _run_locked(args, spec, layout, corpus)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, spec: Any, layout: Layout, corpus: Any) -> int:
    """The sweep, with the experiment's lock held."""
    name, exp_dir = layout.name, layout.root

    ray_environment()
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from seg_tune.sweep.asha import check_ray, check_state
    from seg_tune.sweep.results import finish
    from seg_tune.sweep.trial import placement_problem
    from seg_tune.sweep.tuner import Sweep, can_restore

    check_ray()  # before Ray starts: an untested Ray is refused (exit 2)
    concurrent = spec.experiment.max_concurrent
    if (short := shortage(layout, concurrent)) is not None:
        raise StorageError(f"{short}; free space, then run the same command again")
    context = local_cluster.start_ray(args.address, spec.experiment.max_concurrent, args.host)
    local_cluster.print_dashboard(context, joined=bool(args.address))
    stop = StopRequest()
    stop.install()
    stop.watch_usr1()  # until a fit installs Tune's: the storage watch's stop, for one
    logging.getLogger("ray.tune.tune").addFilter(_RayResumeAdvice())
    watch = StorageWatch(layout, concurrent, stop.storage_short)
    try:
        sweep = Sweep(spec, layout, corpus)
        problem = placement_problem(sweep.settings, ray.nodes())
        if problem is not None and args.wait_for_workers > 0:
            problem = _wait_for_workers(sweep.settings, problem, args.wait_for_workers, stop)
            if stop.signals:
                return _final_line(None, spec, exp_dir, stop.signals)
        if problem is not None:
            raise ConfigError(f"{args.space}: {problem}")
        restore = can_restore(layout)
        if restore:
            check_state(layout.scheduler_state)  # a damaged journal: one line, before Tune
        print(
            f"seg_tune.run: {'resuming' if restore else 'starting'} experiment {name} in {exp_dir}",
            flush=True,
        )
        exp_dir.mkdir(parents=True, exist_ok=True)
        local_cluster.note_head_file(layout.head_pointer)
        atomic_write_text(layout.space, json.dumps(spec.to_dict(), indent=1))
        final_on = bool(spec.final.enabled)
        with watch:
            if not (final_on and layout.final.root.is_dir()):  # a started final phase
                sweep.tuner(restore).fit()
                stop.watch_usr1()
            outcome = finish(
                spec,
                layout,
                interrupted=bool(stop.signals),
                report=not args.no_report,
                final_pending=final_on,
            )
            if final_on and _search_accepted(outcome, spec) and not stop.signals:
                outcome = _final_phase(spec, layout, sweep, stop, report=not args.no_report)
    except KeyboardInterrupt:
        stop.signals.append("SIGINT")
        outcome = None
    finally:
        ray.shutdown()
    if stop.storage is not None:
        print(
            f"seg_tune.run: FAILED: {stop.storage}; the experiment is saved in {exp_dir}: free "
            "space, then run the same command again to resume",
            flush=True,
        )
        return EXIT_FAILED
    return _final_line(outcome, spec, exp_dir, stop.signals)


def _wait_for_workers(settings: Any, problem: str, wait_s: float, stop: StopRequest) -> str | None:
    """Wait up to `wait_s` for nodes where a trial fits (`placement_problem` is None: returned),
    checking every few seconds; a stop ends the wait. The problem is returned when none came."""
    import ray

    from seg_tune.sweep.trial import placement_problem

    print(
        f"seg_tune.run: no trial fits the cluster yet ({problem}); waiting up to {wait_s:g} s "
        "(--wait-for-workers) for nodes that fit, e.g. worker jobs "
        "(sbatch cluster/ray_worker.wilkes3 --join ...)",
        flush=True,
    )
    deadline = time.monotonic() + wait_s
    while problem is not None and not stop.signals and time.monotonic() < deadline:
        time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))
        problem = placement_problem(settings, ray.nodes())
    if problem is None:
        print("seg_tune.run: a trial fits now: starting", flush=True)
        return None
    return f"{problem} (waited {wait_s:g} s, --wait-for-workers, for nodes that fit)"


def _search_accepted(outcome: Any, spec: Any) -> bool:
    """The search ended with no more failed trials than allowed: the final phase may start."""
    return outcome.outcome != "stopped" and len(outcome.failed) <= spec.failure.allow_failed_trials


def _final_phase(spec: Any, layout: Layout, sweep: Any, stop: StopRequest, *, report: bool) -> Any:
    """The final phase (`seg_tune.sweep.final`), then what the experiment leaves behind."""
    from seg_tune.sweep.final import run_phase
    from seg_tune.sweep.results import collect_trials, finish

    search = collect_trials(layout, spec.experiment.metric)
    print(
        f"seg_tune.run: final phase: the best {spec.final.top_k} configuration(s) x "
        f"{spec.final.seeds} seed(s), then scored once on the test split "
        f"({spec.base.data.describe_test()}); in {layout.final.root}",
        flush=True,
    )

    def fit(runs: list[Any], restore: bool) -> None:
        sweep.final_tuner(runs, restore).fit()
        stop.watch_usr1()  # the final phase scores next: a SIGUSR1 then stops it between runs

    final = run_phase(spec, layout, search, fit, interrupted=lambda: bool(stop.signals))
    return finish(spec, layout, interrupted=bool(stop.signals), report=report, final=final)


def _final_line(outcome: Any, spec: Any, exp_dir: Path, signals: list[str]) -> int:
    """Print the sweep's last line and return its exit status (0 only when every trial
    finished and every post-sweep step worked)."""
    if outcome is None or outcome.outcome == "stopped":
        print(
            f"seg_tune.run: stopped ({', '.join(signals) or 'before every trial finished'}); "
            f"state saved in {exp_dir}; run the same command again to resume",
            flush=True,
        )
        return EXIT_STOPPED
    status = EXIT_FINISHED
    allowed = spec.failure.allow_failed_trials
    if outcome.failed:
        first = outcome.failed[0]
        account = (
            f"{len(outcome.failed)} of {spec.experiment.num_samples} trials failed "
            f"(failure.allow_failed_trials: {allowed}); first: trial {first.trial_id}: "
            f"{first.error}; error file: {first.error_file}"
            + (f"; its log: {first.error_log}" if first.error_log else "")
        )
        if len(outcome.failed) > allowed:
            print(f"seg_tune.run: FAILED: {account}", flush=True)
            status = EXIT_FAILED
        else:
            print(f"seg_tune.run: warning: {account}", flush=True)
    for failure in outcome.step_failures:
        print(f"seg_tune.run: FAILED after the sweep: {failure}", flush=True)
        status = EXIT_FAILED
    word = "done" if status == EXIT_FINISHED else "ended"
    print(f"seg_tune.run: {word}. {outcome.best_line}", flush=True)
    return status


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _kept(layout: Layout) -> str:
    """What the moved-aside experiments of this name hold, so that they do not pile up unseen."""
    old = sorted(layout.root.parent.glob(f"{glob.escape(layout.name)}.old-*"))
    total = sum(_size(p) for p in old)
    return (
        f"{len(old)} moved-aside folder{'s' if len(old) != 1 else ''} of {layout.name}, "
        f"{total / 1e6:,.1f} MB in all; never deleted: remove them yourself when done"
    )


def _stop_before_the_sweep(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGUSR1 before the sweep's own handlers: stop, as SIGINT does


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGUSR1, _stop_before_the_sweep)  # (its default would kill us)
    try:
        # a study starts its cell drivers with SIGUSR1 blocked (`seg_tune.cli.study`): a stop
        # sent while this process started up is taken here
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        return run(parse_args(argv))
    except SegTuneError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:  # SIGINT or SIGUSR1 before the sweep's handlers (reading data)
        print("seg_tune.run: stopped (a signal) before the sweep started; run it again", flush=True)
        return EXIT_STOPPED
    except Exception as exc:  # a failure after validation: one line, the rest in Ray's logs
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:  # a full disk or quota
            print(f"error: {full_disk_line(exc)}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        # done: a stop that comes now (a study passing on Ctrl-C as this driver exits) changes
        # nothing, and at exit Python would give SIGUSR1 back its default action (exit -10)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
