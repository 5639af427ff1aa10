"""Real Ray clusters for the tests, started here with `ray start --block`: a head (token auth,
its own temp dir and ports) and nodes that join it, each a separate raylet on this machine, as
on a multi-node cluster. Each is stopped at the end with SIGTERM to its `ray start` process,
which stops its own processes only (never `ray stop`: it kills every Ray process of the user on
the machine); a node can also be killed outright, as when its machine fails (`kill_node`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from conftest import DRIVERS, free_port_block
from test_run import _env, _wait_for

VENV_BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """n distinct TCP ports that are free now (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class Head:
    address: str  # GCS address, ip:port, as `ray start` wrote it
    env: dict[str, str]  # the environment of a client of this cluster (token included)
    temp_dir: Path  # its --temp-dir: session_*/logs hold its processes' logs
    pid: int  # `ray start --block`: its processes are the cluster's


@dataclass
class Node:
    temp_dir: Path
    pid: int  # `ray start --block`: its raylet and workers are its descendants


def processes_of(temp_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if str(temp_dir) in " ".join(p.cmdline()):
                found.append(p)
    return found


def _node_ports(avoid: frozenset[int] = frozenset()) -> list[str]:
    """The port flags of one node (all distinct, free now; workers above Ray's own)."""
    ports = _free_ports(6)
    agent, agent_grpc, metrics, runtime_env, node_mgr, obj_mgr = ports
    workers = free_port_block(100, 40000, 49000, avoid=frozenset(ports) | avoid)
    flags = [
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
        f"--min-worker-port={workers}",
        f"--max-worker-port={workers + 99}",
    ]
    return flags


@contextlib.contextmanager
def _ray_process(
    cmd: list[str], env: dict[str, str], log: Path, temp_dir: Path
) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    DRIVERS.append(proc)  # killed with its process group after the test, should it fail
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        left = processes_of(temp_dir)
        for p in left:  # only after a failed stop: the test fails below
            with contextlib.suppress(psutil.Error):
                p.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
    # (only when the test passed: an error in it stays the one reported)
    assert proc.returncode is not None and not left, f"stopping {cmd[2:4]} left {left}"


@contextlib.contextmanager
def ray_head(tmp: Path, num_cpus: int, trial_slots: int = 2) -> Iterator[Head]:
    """A Ray head with `num_cpus` CPUs and `trial_slots` of seg_tune's trial resource."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: unix sockets <= 107 B
    token = tmp / "ray-token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode())
    os.close(fd)
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    gcs, dash, client = _free_ports(3)
    flags = _node_ports(avoid=frozenset((gcs, dash, client)))
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        f"--num-cpus={num_cpus}",
        f'--resources={{"seg_tune_trial": {trial_slots}}}',
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        *flags,
        "--object-store-memory=200000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log = tmp / "ray_head.log"
    with _ray_process(cmd, env, log, temp_dir) as proc:
        current = temp_dir / "ray_current_cluster"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return current.is_file() and "Ray runtime started" in log.read_text()

        _wait_for(up, 120, "the Ray head")
        yield Head(current.read_text().strip(), env, temp_dir, proc.pid)


@contextlib.contextmanager
def ray_node(head: Head, tmp: Path, num_cpus: int, name: str) -> Iterator[Node]:
    """A node with `num_cpus` CPUs joined to `head` (its token), up once the head counts it."""
    temp_dir = Path(tempfile.mkdtemp(prefix=f"r{name}", dir="/tmp"))
    flags = _node_ports()
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        f"--address={head.address}",
        "--block",
        f"--num-cpus={num_cpus}",
        *flags,
        "--object-store-memory=100000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log = tmp / f"ray_{name}.log"
    with _ray_process(cmd, head.env, log, temp_dir) as proc:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return "Ray runtime started" in log.read_text()

        _wait_for(up, 120, f"Ray node {name}")
        yield Node(temp_dir, proc.pid)


def kill_node(node: Node) -> list[int]:
    """SIGKILL every process of the node at once (its raylet, workers and `ray start`), as when
    its machine fails; the pids killed."""
    root = psutil.Process(node.pid)
    tree = [root, *root.children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return [p.pid for p in tree]
