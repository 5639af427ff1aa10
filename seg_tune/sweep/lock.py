"""One driver per experiment folder: an exclusive lock on `<storage>/<name>/`.

Two drivers on one folder (the same sbatch submitted twice, a run started on the login node
while the job runs) would write the same Tune state, scheduler state and wandb runs. The lock is
a file, `<experiment>/driver.lock`, created with O_CREAT | O_EXCL (atomic on local disks, NFS
v3+ and Lustre, with or without `flock` mounts), holding its holder's identity as JSON: host,
PID, SLURM job id and restart count, since when, and a random token. The holder touches it
(its mtime) every `HEARTBEAT_S` seconds from a daemon thread.

A lock is **stale**, and taken over with a notice, when its holder is gone:
- on this host, its PID is no longer running (a SIGKILLed driver);
- it is an earlier run of this very SLURM job (same job id, lower restart count: a requeue);
- or its heartbeat is older than `EXPIRY_S` (a holder on another host that died with its node).
Takeover renames the stale file aside first (only one contender's rename succeeds), then
creates a new one with O_EXCL. Otherwise the second driver refuses at once (exit 2), naming the
holder. Read-only users (`seg-tune report`) ask `holder()` and write nothing while it is held.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seg_tune.errors import ConfigError
from seg_tune.sweep.layout import LOCK_NAME, Layout

FORMAT = 1
HEARTBEAT_S = 20.0
EXPIRY_S = 120.0  # six missed heartbeats; generous for clock skew between cluster nodes


@dataclass(frozen=True)
class Holder:
    """Who holds an experiment's lock."""

    host: str
    pid: int
    since: float  # epoch seconds
    token: str
    slurm_job_id: str | None = None
    slurm_restart_count: int = 0
    format: int = FORMAT

    @classmethod
    def me(cls) -> Holder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            since=time.time(),
            token=uuid.uuid4().hex,
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
            slurm_restart_count=int(os.environ.get("SLURM_RESTART_COUNT") or 0),
        )

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"host {self.host}, PID {self.pid}{job}, since {when}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_holder(path: Path) -> tuple[Holder | None, float | None]:
    """The lock file's holder and its heartbeat (mtime); (None, None) without a lock file, and
    (None, mtime) for a file that cannot be read as a lock (a torn write: judged by age)."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, time.time()
    try:
        doc = json.loads(text)
        return Holder(**{k: doc[k] for k in Holder.__dataclass_fields__ if k in doc}), mtime
    except (ValueError, TypeError, KeyError):
        return None, mtime


def stale_reason(holder: Holder | None, heartbeat: float, me: Holder) -> str | None:
    """Why the lock's holder is gone (the lock may be taken over), or None when it may be alive."""
    if holder is not None and holder.host == me.host and not _pid_running(holder.pid):
        return f"its driver (PID {holder.pid}) is no longer running"
    if (
        holder is not None
        and holder.slurm_job_id
        and holder.slurm_job_id == me.slurm_job_id
        and holder.slurm_restart_count < me.slurm_restart_count
    ):
        return f"it was held by an earlier run of this SLURM job ({holder.slurm_job_id}, requeued)"
    age = time.time() - heartbeat
    if age > EXPIRY_S:
        return f"its heartbeat is {age:.0f} s old (expiry {EXPIRY_S:.0f} s)"
    return None


class ExperimentLock:
    """Held by the driver for the whole run: `acquire()`, then `release()` (or a `with`)."""

    def __init__(self, root: Path, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Layout(Path(root)).lock
        self.heartbeat_s = heartbeat_s
        self.me = Holder.me()
        self.notice: str | None = None  # set when a stale lock was taken over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made = False

    def acquire(self) -> ExperimentLock:
        """Take the lock, or raise ConfigError (exit 2) naming its live holder. The experiment
        folder is made if needed (and removed again by `release` if nothing else was written)."""
        self._made = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a contender may take over a stale lock between our two steps
            if self._create():
                self._start_heartbeat()
                return self
            holder, heartbeat = read_holder(self.path)
            if heartbeat is None:
                continue  # released meanwhile: try again
            if holder is not None and holder.token == self.me.token:
                return self
            reason = stale_reason(holder, heartbeat, self.me)
            if reason is None:
                who = holder.describe() if holder else "an unreadable lock file"
                raise ConfigError(
                    f"{self.path.parent}: another seg_tune driver is running this experiment "
                    f"({who}; lock file {self.path}); wait for it to end or stop it, or use "
                    "--name for another experiment"
                )
            aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.me.token[:8]}")
            try:
                os.rename(self.path, aside)  # only one contender's rename finds the file
            except FileNotFoundError:
                continue
            who = holder.describe() if holder else "an unreadable lock file"
            self.notice = f"took over a stale lock ({who}): {reason}"
            aside.unlink(missing_ok=True)
        raise ConfigError(f"{self.path}: could not take the experiment's lock; try again")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(self.me), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    return  # taken away (moved aside): nothing to keep alive

        self._thread = threading.Thread(target=beat, name="seg_tune-lock", daemon=True)
        self._thread.start()

    def owns(self) -> bool:
        holder, _ = read_holder(self.path)
        return holder is not None and holder.token == self.me.token

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        self._stop.set()
        if self.owns():
            self.path.unlink(missing_ok=True)
            if self._made and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()  # the run wrote nothing: leave no empty folder

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder(root: Path) -> Holder | None:
    """The live holder of an experiment folder's lock, or None (no lock, or a stale one)."""
    path = Layout(Path(root)).lock
    found, heartbeat = read_holder(path)
    if heartbeat is None:
        return None
    if stale_reason(found, heartbeat, Holder.me()) is not None:
        return None
    return found or Holder(host="?", pid=0, since=heartbeat, token="")
