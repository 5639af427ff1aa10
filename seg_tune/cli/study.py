"""A study's driver: `python -m seg_tune.run STUDY.yaml [--only CELL ...] [--smoke] ...`.

Every cell (`seg_tune.sweep.study`) is validated and its data read and checked before Ray
starts (exit 2 naming the cell). Then one Ray cluster is started (or `--address` joined) and each
cell runs as an experiment of its own, `<storage>/<study>/<cell>/`, by the same driver as a space
file (`python -m seg_tune.run STUDY.yaml --cell CELL`, joined to the study's cluster), up to
`study.max_concurrent_cells` at once, so that one cell's end game or final phase leaves its slots
to the next cell's search. Each cell driver's output goes to `logs/<cell>.log`.

SIGINT, SIGTERM and SIGUSR1 stop the study: each cell driver gets SIGUSR1 (a graceful stop, as
alone; a second signal here reaches them as SIGINT: stop at once); no new cell starts, and the
study exits 3. Run the same command again to resume: cells that
finished are not run again, and the others resume inside themselves. Exit status: 0 every cell
finished, 1 a cell failed, 2 bad input (or a cell refused to start), 3 stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from seg_tune.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_FINISHED, EXIT_STOPPED
from seg_tune.cli.prepare import (
    ray_environment,
    read_data,
    refuse_changed_space,
    refuse_cpu_torch_for_gpus,
)
from seg_tune.errors import ConfigError, DataError, SegTuneError
from seg_tune.sweep import cluster as local_cluster
from seg_tune.sweep.layout import StudyLayout
from seg_tune.sweep.lock import ExperimentLock
from seg_tune.sweep.study import STUDY_FORMAT, Cell, Study, read_state, write_state

_POLL_S = 1.0


def run_study(args: argparse.Namespace, study: Study) -> int:
    from seg_tune.sweep.load import smoke

    cells = list(study.cells) if not args.only else [study.cell(n) for n in args.only]
    layout = StudyLayout.of(
        args.storage, args.name or study.name + ("-smoke" if args.smoke else "")
    )
    specs = {}
    for cell in cells:  # every cell checked before anything runs (ConfigError: exit 2)
        spec = study.spec(cell)
        specs[cell.name] = smoke(spec) if args.smoke else spec
        refuse_changed_space(specs[cell.name], layout.cell(cell.name), smoke=args.smoke)
        refuse_cpu_torch_for_gpus(specs[cell.name])
    for cell in cells:
        print(f"seg_tune.run: cell {cell.name}:", flush=True)
        try:
            read_data(specs[cell.name])
        except (ConfigError, DataError) as exc:
            raise type(exc)(f"{study.path} (cell {cell.name}): {exc}") from None
    if args.fresh and layout.root.exists():
        with ExperimentLock(layout.root):
            moved = layout.moved_aside()
            layout.root.rename(moved)
        StudyLayout(moved).lock.unlink(missing_ok=True)
        print(f"seg_tune.run: --fresh: moved the old study to {moved} (never deleted)", flush=True)
    lock = ExperimentLock(layout.root).acquire()
    if lock.notice:
        print(f"seg_tune.run: notice: {layout.root}: {lock.notice}", flush=True)
    try:
        local_cluster.note_head_file(layout.head_pointer)
        return _run_cells(args, study, layout, cells, specs)
    finally:
        lock.release()


def _run_cells(
    args: argparse.Namespace,
    study: Study,
    layout: StudyLayout,
    cells: list[Cell],
    specs: dict[str, Any],
) -> int:
    ray_environment()
    import ray

    at_once = study.section.max_concurrent_cells
    slots = sum(
        sorted((s.experiment.max_concurrent for s in specs.values()), reverse=True)[:at_once]
    )
    context = local_cluster.start_ray(args.address, slots, args.host)
    local_cluster.print_dashboard(context, joined=bool(args.address))
    address = args.address or context.address_info["gcs_address"]
    state = read_state(layout)
    state.update(format=STUDY_FORMAT, name=layout.name, file=str(study.path), unit=study.unit)
    records: dict[str, dict[str, Any]] = state.setdefault("cells", {})
    for cell in study.cells:
        old = records.get(cell.name, {})
        records[cell.name] = {
            "axis": cell.axis,
            "value": cell.value,
            "size": cell.size,
            "exit": old.get("exit"),
            "started_at": old.get("started_at"),
            "ended_at": old.get("ended_at"),
        }
    write_state(layout, state)
    pending = []
    for cell in cells:
        if records[cell.name]["exit"] == EXIT_FINISHED and layout.cell(cell.name).summary.is_file():
            print(f"seg_tune.run: cell {cell.name} finished before; not run again", flush=True)
        else:
            pending.append(cell)
    print(
        f"seg_tune.run: study {layout.name} in {layout.root}: {len(cells)} cells, "
        f"{len(pending)} to run, {at_once} at a time",
        flush=True,
    )
    running: dict[str, subprocess.Popen] = {}
    signals: list[int] = []
    told: set[str] = set()  # the cells whose drivers were passed the first stop

    def forward(signum: int, frame: Any) -> None:
        # The first stop reaches each cell driver as SIGUSR1 (from the loop below, so that a
        # cell being started meanwhile is not missed), the graceful stop that never counts as a
        # second signal: under SLURM, scancel or a requeue also sends every process of the job
        # SIGTERM itself, and a second SIGINT/SIGTERM makes a driver stop at once. A second stop
        # here (a second Ctrl-C) is passed on at once as SIGINT: stop at once.
        signals.append(signum)
        if len(signals) > 1:
            for proc in running.values():
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, forward)
    codes: dict[str, int] = {}
    try:
        while pending or running:
            while pending and len(running) < at_once and not signals:
                cell = pending.pop(0)
                running[cell.name] = _start_cell(args, study, layout, cell, address)
                records[cell.name].update(started_at=_now(), ended_at=None)
                write_state(layout, state)
                print(
                    f"seg_tune.run: cell {cell.name} started (log: {layout.cell_log(cell.name)})",
                    flush=True,
                )
            if signals and not running:
                break
            for name, proc in running.items() if signals else ():
                if name not in told and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGUSR1)
                    told.add(name)
            time.sleep(_POLL_S)
            for name, proc in list(running.items()):
                if (code := proc.poll()) is None:
                    continue
                del running[name]
                codes[name] = code
                records[name].update(exit=code, ended_at=_now())
                write_state(layout, state)
                print(
                    f"seg_tune.run: cell {name} {_ENDED.get(code, 'ended')} (exit {code})",
                    flush=True,
                )
    finally:
        for proc in running.values():  # only after an error here: the cells stop as they do alone
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait()
        ray.shutdown()
    report_failed = False
    if not args.no_report:
        from seg_tune.study_report import write_study_report

        try:
            print(f"seg_tune.run: study report: {write_study_report(layout.root)}", flush=True)
        except (SegTuneError, OSError) as exc:
            print(f"seg_tune.run: FAILED after the study: the report: {exc}", flush=True)
            report_failed = True
    return _study_line(layout, cells, records, codes, signals, report_failed)


_ENDED = {0: "finished", 1: "failed", 2: "refused to start", 3: "stopped"}


def _start_cell(
    args: argparse.Namespace, study: Study, layout: StudyLayout, cell: Cell, address: str
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "seg_tune.run",
        str(study.path),
        "--cell",
        cell.name,
        "--name",
        cell.name,
        "--storage",
        str(layout.root),
        "--address",
        address,
    ]
    cmd += ["--smoke"] * bool(args.smoke) + ["--no-report"] * bool(args.no_report)
    if args.wait_for_workers:
        cmd += ["--wait-for-workers", f"{args.wait_for_workers:g}"]
    log = layout.cell_log(cell.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # its own session: a Ctrl-C in the terminal reaches the study's driver, which passes it
        # on. SIGUSR1 starts blocked (the mask survives exec): a stop passed on while the driver
        # still starts up waits until its main() can take it (`seg_tune.cli.run.main`), where
        # SIGUSR1's default action would have killed it (exit -10, nothing saved).
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_block_usr1,
        )


def _block_usr1() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def _study_line(
    layout: StudyLayout,
    cells: list[Cell],
    records: dict[str, dict[str, Any]],
    codes: dict[str, int],
    signals: list[int],
    report_failed: bool,
) -> int:
    finished = [c.name for c in cells if records[c.name]["exit"] == EXIT_FINISHED]
    left = [c.name for c in cells if c.name not in finished]
    account = f"{len(finished)} of {len(cells)} cells finished"
    if signals or any(code == EXIT_STOPPED for code in codes.values()):
        names = ", ".join(signal.Signals(s).name for s in signals) or "a cell stopped"
        print(
            f"seg_tune.run: study stopped ({names}); {account}; state saved in {layout.root}; "
            "run the same command again to resume",
            flush=True,
        )
        return EXIT_STOPPED
    if not left and EXIT_FAILED not in codes.values() and not report_failed:
        print(f"seg_tune.run: study done. {account}; report: {layout.report}", flush=True)
        return EXIT_FINISHED
    print(
        f"seg_tune.run: study ended. {account}; not finished: {', '.join(left) or 'none'} "
        f"(each cell's log: {layout.cell_log('<cell>')})",
        flush=True,
    )
    return EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes.values() else EXIT_FAILED


def _now() -> str:
    """study.json's times: local time to the millisecond (the study bench measures with them)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
