"""Starting or joining the Ray cluster of `seg_tune.run`: the token file, the bind address, the hint.

A local cluster (no `--address` / RAY_ADDRESS: seg_tune.run starts it with `ray.init`):
- its token is in `~/.ray/seg_tune/local.token` (`$SEG_TUNE_TOKEN_DIR/local.token`, the folder
  of the SLURM script's `job-<jobid>.token` files), mode 0600 in a folder of mode 0700, so only
  this user (and root) can read it. The file is written here before Ray starts: created with
  O_EXCL at mode 0600 inside the 0700 folder, so it never exists with wider permissions, and Ray
  is pointed at it (RAY_AUTH_TOKEN_PATH), so Ray never writes its own `~/.ray/auth_token` (mode
  0644 in a 0755 `~/.ray`). The file is kept for the next run (an open dashboard stays logged
  in); one that others could read, or that holds no token, is replaced by a new token.
  RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH set by the user win; `~/.ray/auth_token` is never used.
- with `--host 127.0.0.1` (the default) every Ray port is bound to 127.0.0.1: GCS, raylet (node
  and object manager), workers, dashboard, dashboard agent, runtime-env agent and the metrics
  servers. Ray binds them to loopback only when its node address is loopback, and Ray 2.60 on
  Linux turns a loopback `_node_ip_address` into the machine's address unless its single-machine
  mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the macOS default) is on; it is turned on here.
  `--host ADDRESS` (this machine's address, or `auto` for Ray's choice) makes the cluster
  joinable from other machines: Ray then listens on all interfaces. The dashboard stays on
  127.0.0.1 either way (tunnel to it).

Under `cluster/ray_head.wilkes3` the batch script names its head file (where worker jobs find
the cluster: `cluster/ray_nodes.sh` owns its format) in SEG_TUNE_HEAD_FILE, and the driver writes
that name into the experiment or study folder (`note_head_file`), so that `sbatch
cluster/ray_worker.wilkes3 --join FOLDER` needs no job id.

Joining (`--address`): the token is the user's (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
`~/.ray/auth_token`); nothing here changes it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from seg_tune.errors import SegTuneError

LOOPBACK = "127.0.0.1"
ANY_HOST = ("auto", "0.0.0.0", "::")  # --host values that leave the node address to Ray
HOST_ENV = "SEG_TUNE_RAY_HOST"
TOKEN_DIR_ENV = "SEG_TUNE_TOKEN_DIR"
LOCAL_TOKEN_NAME = "local.token"
HEAD_FILE_ENV = "SEG_TUNE_HEAD_FILE"
HEAD_POINTER_FORMAT = 1
TOKEN_BYTES = 32  # 64 hex characters, as Ray's own `ray get-auth-token --generate`


# ---------------------------------------------------------------------- the token file


def default_token_dir() -> Path:
    return Path(os.environ.get(TOKEN_DIR_ENV) or Path.home() / ".ray" / "seg_tune")


def private_dir(path: Path) -> Path:
    """`path` as a folder of this user's with mode 0700: created so (and any missing parents),
    tightened if it exists with a wider mode; a folder of another user's is refused."""
    path = Path(path)
    missing, folder = [], path
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent start
            os.mkdir(folder, 0o700)  # the umask may only narrow 0700
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise SegTuneError(f"{path}: not a folder (the Ray token folder, ${TOKEN_DIR_ENV})")
    if info.st_uid != os.getuid():
        raise SegTuneError(f"{path}: owned by uid {info.st_uid}, not you: choose ${TOKEN_DIR_ENV}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _valid_token(text: str) -> bool:
    return len(text) >= 32 and text.isascii() and text.isalnum()


def _existing_token(path: Path) -> str | None:
    """The token of an existing private token file of this user's; None when there is no file
    or it cannot be trusted (readable by others, empty, malformed). A link or a file of another
    user's is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SegTuneError(f"{path}: cannot open the Ray token file ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise SegTuneError(f"{path}: not a file of yours: remove it or choose ${TOKEN_DIR_ENV}")
    with os.fdopen(fd, "rb") as file:
        if stat.S_IMODE(info.st_mode) & 0o077:  # others could read it: the token may be known
            return None
        text = file.read(4096).decode("ascii", "replace").strip()
    return text if _valid_token(text) else None


def write_token_file(path: Path, replace: bool = False) -> None:
    """Write a new random token to `path` at mode 0600 from the first byte on.

    The token goes to a new temporary file beside it (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600,
    whatever the umask), which then becomes `path` in one step: a hard link, which never
    overwrites (a `path` created meanwhile by a concurrent start stays, and both use its token),
    or with `replace` a rename over the old file. `path`'s folder must be private already.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 (the umask could have made it narrower)
            os.write(fd, secrets.token_hex(TOKEN_BYTES).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # no hard links on this filesystem: a rename, unless one appeared
                if not os.path.lexists(path):
                    os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def local_token_file(folder: Path | None = None) -> Path:
    """The local cluster's token file, `<folder>/local.token` (default `~/.ray/seg_tune`): mode
    0600 in a folder of mode 0700; an existing trustworthy one is kept, any other replaced."""
    path = private_dir(folder or default_token_dir()) / LOCAL_TOKEN_NAME
    if _existing_token(path) is None:
        write_token_file(path, replace=os.path.lexists(path))
        if _existing_token(path) is None:  # e.g. a concurrent start's file, still wrong
            raise SegTuneError(f"{path}: could not write a private Ray token file")
    return path


_made_token_file: Path | None = None  # the local token file start_ray pointed Ray at


def _use_local_token() -> None:
    """Point Ray at the local token file, before it starts, unless the user chose a token."""
    global _made_token_file
    _made_token_file = None
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    _made_token_file = local_token_file()
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(_made_token_file)
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()  # in case anything read it already


# ---------------------------------------------------------------------- the cluster


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_only() -> None:
    """Ray's single-machine mode: the node address is loopback, and with it every bind address."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's processes started from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: ray_constants read it at import


def start_ray(address: str | None, max_concurrent: int, host: str = LOOPBACK) -> Any:
    """Join `address`, or start a local cluster (token file, bind address as described above)."""
    import ray

    from seg_tune.sweep.trial import TRIAL_RESOURCE

    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    if address:
        return ray.init(address=address, **common)
    _use_local_token()
    if is_loopback(host):
        _loopback_only()
    elif host not in ANY_HOST:
        common["_node_ip_address"] = host
    context = ray.init(
        include_dashboard=True,
        dashboard_host=LOOPBACK,
        resources={TRIAL_RESOURCE: max_concurrent},
        **common,
    )
    node_ip = context.address_info.get("node_ip_address", "")
    if is_loopback(host) and not is_loopback(node_ip):
        print(f"seg_tune.run: warning: Ray took node address {node_ip}, not loopback", flush=True)
    elif not is_loopback(host):
        print(
            f"seg_tune.run: Ray listens on all interfaces (node address {node_ip}); other "
            f"machines join with --address {context.address_info.get('gcs_address')} and the token",
            flush=True,
        )
    return context


def _token_hint() -> str:
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return "token authentication is OFF (RAY_AUTH_MODE): anyone who reaches it controls Ray"
    if os.environ.get("RAY_AUTH_TOKEN"):
        source = "the RAY_AUTH_TOKEN environment variable"
    else:
        source = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
        if _made_token_file is not None and source == str(_made_token_file):
            source += " (mode 0600: readable by you only)"
    return f"token authentication: paste the token from {source} when asked; never share it"


def print_dashboard(context: Any, joined: bool) -> None:
    url = getattr(context, "dashboard_url", None)
    if not url:
        print("seg_tune.run: no Ray dashboard on this cluster", flush=True)
        return
    print(f"seg_tune.run: Ray dashboard: http://{url}  ({_token_hint()})", flush=True)
    if not joined:
        print(
            "seg_tune.run: from another machine: ssh -L 8265:" + url + " <this host>, then "
            "open http://localhost:8265",
            flush=True,
        )
    gcs = getattr(context, "address_info", {}).get("gcs_address")
    if not joined and gcs and _made_token_file is not None:
        print(
            f"seg_tune.run: Ray CLI: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={_made_token_file} "
            f"ray status --address {gcs}",
            flush=True,
        )


# ---------------------------------------------------------------------- worker jobs


def note_head_file(pointer: Path) -> None:
    """Under the SLURM head script: write `pointer` (`Layout.head_pointer`), naming the head job's
    head file and job id, atomically (a worker job may read it at any time); else nothing."""
    from seg_tune.checkpoint import atomic_write_text

    head_file = os.environ.get(HEAD_FILE_ENV)
    if not head_file:
        return
    doc = {
        "format": HEAD_POINTER_FORMAT,
        "head_file": head_file,
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
    }
    pointer.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(pointer, json.dumps(doc, indent=1) + "\n")
