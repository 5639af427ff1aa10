"""A local cluster of `seg_tune.run`: its token file (0600 in a 0700 folder, never printed) and its
ports (all on 127.0.0.1): `seg_tune.sweep.cluster`.

The unit tests of the token file take well under a second (a few with `import ray`); the one real
run (smoke.yaml --smoke, stopped with SIGINT once a trial has checkpointed) about a minute.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import REPO
from test_run import _checkpoint_steps, _env, _start, _stop_and_check, _wait_for

from seg_tune.errors import SegTuneError
from seg_tune.sweep import cluster as local_cluster

RAY_ENV = (
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Ray token settings; SEG_TUNE_TOKEN_DIR in tmp; all restored afterwards."""
    for name in (*RAY_ENV, local_cluster.TOKEN_DIR_ENV):
        monkeypatch.setenv(name, "")  # records the old value (set or not) for the undo
        monkeypatch.delenv(name)
    monkeypatch.setenv(local_cluster.TOKEN_DIR_ENV, str(tmp_path / "tokens"))
    monkeypatch.setattr(local_cluster, "_made_token_file", None)
    return tmp_path / "tokens"


# ---------------------------------------------------------------------- worker jobs' pointer


def test_the_head_pointer_names_the_head_file_only_under_the_head_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`note_head_file` writes ray_head.json (what `ray_worker.wilkes3 --join FOLDER` reads) when
    the batch script set SEG_TUNE_HEAD_FILE, and nothing otherwise."""
    from seg_tune.sweep.layout import Layout

    layout = Layout(tmp_path / "exp")
    monkeypatch.delenv(local_cluster.HEAD_FILE_ENV, raising=False)
    local_cluster.note_head_file(layout.head_pointer)
    assert not layout.head_pointer.exists()

    monkeypatch.setenv(local_cluster.HEAD_FILE_ENV, str(tmp_path / "tokens" / "job-42.head"))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    local_cluster.note_head_file(layout.head_pointer)
    doc = json.loads(layout.head_pointer.read_text())
    assert doc == {
        "format": local_cluster.HEAD_POINTER_FORMAT,
        "head_file": str(tmp_path / "tokens" / "job-42.head"),
        "slurm_job": "42",
    }
    assert [p.name for p in layout.root.iterdir()] == ["ray_head.json"]  # no temp file left


# ---------------------------------------------------------------------- the token file


def test_token_file_is_private_from_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created (with missing parents) at folder 0700 / file 0600 even with umask 000; the token
    is written only into a file that is already 0600 in a folder that is already 0700."""
    folder = tmp_path / "home" / ".ray" / "seg_tune"
    seen: list[tuple[int, int]] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        seen.append((stat.S_IMODE(os.fstat(fd).st_mode), _mode(folder)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    old_umask = os.umask(0)
    try:
        path = local_cluster.local_token_file(folder)
    finally:
        os.umask(old_umask)
    assert seen == [(0o600, 0o700)]
    assert path == folder / "local.token"
    assert _mode(path) == 0o600 and stat.S_ISREG(os.lstat(path).st_mode)
    assert _mode(folder) == _mode(folder.parent) == 0o700  # the missing ~/.ray too
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert os.listdir(folder) == ["local.token"]  # no temporary file left


def test_a_private_token_file_is_kept(tmp_path: Path) -> None:
    first = local_cluster.local_token_file(tmp_path)
    token, inode = first.read_text(), first.stat().st_ino
    again = local_cluster.local_token_file(tmp_path)
    assert again == first and again.read_text() == token and again.stat().st_ino == inode


@pytest.mark.parametrize(
    ("content", "mode"), [("a" * 64, 0o644), ("a" * 64, 0o640), ("", 0o600), ("x y\n", 0o600)]
)
def test_an_untrusted_token_file_is_replaced(tmp_path: Path, content: str, mode: int) -> None:
    """Readable by others (the token may be known), empty or malformed: a new token, 0600."""
    path = tmp_path / "local.token"
    path.write_text(content)
    path.chmod(mode)
    local_cluster.local_token_file(tmp_path)
    new = path.read_text()
    assert new != content and re.fullmatch(r"[0-9a-f]{64}", new)
    assert _mode(path) == 0o600


def test_a_wider_folder_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    local_cluster.local_token_file(folder)
    assert _mode(folder) == 0o700 and _mode(folder / "local.token") == 0o600


def test_links_and_files_of_others_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    folder = tmp_path / "tokens"
    folder.mkdir(mode=0o700)
    (folder / "local.token").symlink_to(target)
    with pytest.raises(SegTuneError, match="cannot open the Ray token file"):
        local_cluster.local_token_file(folder)
    assert target.read_text() == ""  # nothing written through the link
    (folder / "local.token").unlink()
    (folder / "local.token").mkdir()
    with pytest.raises(SegTuneError, match="not a file of yours"):
        local_cluster.local_token_file(folder)
    (folder / "local.token").rmdir()
    if os.getuid() != 0:
        return  # only root can give a file to another user
    (folder / "local.token").write_text("a" * 64)
    os.chmod(folder / "local.token", 0o600)
    os.chown(folder / "local.token", 12345, -1)
    with pytest.raises(SegTuneError, match="not a file of yours"):
        local_cluster.local_token_file(folder)
    os.chown(folder, 12345, -1)
    with pytest.raises(SegTuneError, match="owned by uid 12345"):
        local_cluster.local_token_file(folder)


def test_write_token_file_never_writes_through_or_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_EXCL | O_NOFOLLOW on the temporary file: a file planted at its name (here a link to a
    file elsewhere) stops the write; without `replace`, an existing token file is never
    overwritten (a concurrent start keeps its token); with it, it is replaced in one rename."""
    monkeypatch.setattr(local_cluster.secrets, "token_hex", lambda n: "ab" * n)
    path = tmp_path / "local.token"
    target = tmp_path / "elsewhere"
    target.write_text("")
    planted = tmp_path / f".local.token.{os.getpid()}.{'ab' * 4}.tmp"
    planted.symlink_to(target)
    with pytest.raises(FileExistsError):
        local_cluster.write_token_file(path)
    assert target.read_text() == "" and not path.exists()
    planted.unlink()

    path.write_text("c" * 64)
    local_cluster.write_token_file(path)
    assert path.read_text() == "c" * 64
    local_cluster.write_token_file(path, replace=True)
    assert path.read_text() == "ab" * 32 and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "local.token"]


def test_without_hard_links_the_token_file_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    path = local_cluster.local_token_file(tmp_path)
    assert _mode(path) == 0o600 and re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert os.listdir(tmp_path) == ["local.token"]


# ---------------------------------------------------------------------- Ray's settings, the hint


@pytest.fixture
def fake_init(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """ray.init recorded instead of run; Ray's single-machine switch restored afterwards."""
    import ray
    from ray._private import ray_constants

    calls: list[dict] = []

    class Context:
        def __init__(self) -> None:
            self.dashboard_url = "127.0.0.1:8265"
            self.address_info = {"node_ip_address": "127.0.0.1", "gcs_address": "127.0.0.1:6379"}

    def init(**kwargs: object) -> Context:
        calls.append({**kwargs, "env": {k: os.environ.get(k) for k in RAY_ENV}})
        return Context()

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    return calls


def test_local_start_uses_its_token_file_and_loopback(
    clean_env: Path, fake_init: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    from ray._private import ray_constants

    context = local_cluster.start_ray(None, 2)
    (call,) = fake_init
    token_file = clean_env / "local.token"
    assert call["env"]["RAY_AUTH_TOKEN_PATH"] == str(token_file) and _mode(token_file) == 0o600
    assert call["env"]["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray_constants.ENABLE_RAY_CLUSTER is False and "_node_ip_address" not in call
    assert call["dashboard_host"] == "127.0.0.1"
    local_cluster.print_dashboard(context, joined=False)
    out = capsys.readouterr().out
    assert f"paste the token from {token_file} (mode 0600: readable by you only)" in out
    assert f"RAY_AUTH_TOKEN_PATH={token_file} ray status --address 127.0.0.1:6379" in out
    assert token_file.read_text() not in out


def test_listen_all_and_a_given_host(clean_env: Path, fake_init: list[dict]) -> None:
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    local_cluster.start_ray(None, 2, host="auto")
    local_cluster.start_ray(None, 2, host="0.0.0.0")
    local_cluster.start_ray(None, 2, host="10.1.2.3")
    assert "_node_ip_address" not in fake_init[0] and "_node_ip_address" not in fake_init[1]
    assert fake_init[2]["_node_ip_address"] == "10.1.2.3"
    assert ray_constants.ENABLE_RAY_CLUSTER is before
    assert all(c["env"]["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] is None for c in fake_init)


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({"RAY_AUTH_TOKEN_PATH": "/somewhere/my.token"}, "from /somewhere/my.token when"),
        ({"RAY_AUTH_TOKEN": "f" * 64}, "from the RAY_AUTH_TOKEN environment variable"),
        ({"RAY_AUTH_MODE": "disabled"}, "token authentication is OFF"),
    ],
)
def test_a_token_the_user_chose_is_kept(
    clean_env: Path,
    fake_init: list[dict],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    hint: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context = local_cluster.start_ray(None, 2)
    assert {k: v for k, v in fake_init[0]["env"].items() if v and k in env} == env
    assert "RAY_AUTH_TOKEN_PATH" in env or fake_init[0]["env"]["RAY_AUTH_TOKEN_PATH"] is None
    assert not clean_env.exists()  # no token file made
    local_cluster.print_dashboard(context, joined=False)
    out = capsys.readouterr().out
    assert hint in out and "f" * 64 not in out


def test_joining_changes_no_token_setting(
    clean_env: Path, fake_init: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    context = local_cluster.start_ray("10.1.2.3:6379", 2)
    assert fake_init[0]["address"] == "10.1.2.3:6379" and "resources" not in fake_init[0]
    assert fake_init[0]["env"]["RAY_AUTH_TOKEN_PATH"] is None
    assert fake_init[0]["env"]["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] is None
    assert not clean_env.exists()
    local_cluster.print_dashboard(context, joined=True)
    out = capsys.readouterr().out
    assert "from ~/.ray/auth_token when asked" in out and "ray status" not in out


# ---------------------------------------------------------------------- one real run


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # [::ffff:127.0.0.1]: IPv4 loopback only
    return (mapped or address).is_loopback


def _listening(pid: int) -> dict[tuple[str, int], str]:
    """(ip, port) -> process name of every listening TCP socket of `pid` and its descendants."""
    found: dict[tuple[str, int], str] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(proc.cmdline())[:120] or proc.name()
            conns = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                found[(conn.laddr.ip, conn.laddr.port)] = name
    return found


def _http_status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short RAY_TMPDIR of this test's own (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_local_run_token_is_private_and_every_port_on_loopback(
    tmp_path: Path, ray_tmp: Path
) -> None:
    """smoke.yaml --smoke with HOME in tmp (and an old world-readable ~/.ray/auth_token there):
    while it runs, the token file it names is 0600 in a 0700 folder and opens the dashboard,
    Ray wrote no ~/.ray/auth_token of its own and the old one neither works nor changed, every
    listening TCP socket of the run's processes is on 127.0.0.1; after SIGINT the token is in
    none of the driver's output, Ray's logs or the experiment."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    old_token = home / ".ray" / "auth_token"
    old_token.write_text("0" * 64)
    old_token.chmod(0o644)
    storage, log = tmp_path / "results", tmp_path / "driver.log"
    env = _env(HOME=str(home), RAY_TMPDIR=str(ray_tmp))
    env.pop(local_cluster.TOKEN_DIR_ENV, None)
    env.pop(local_cluster.HOST_ENV, None)
    proc = _start(REPO / "search_spaces/smoke.yaml", storage, log, "--smoke", env=env)
    try:
        hint = re.compile(r"Ray dashboard: http://(\S+)  \(.*paste the token from (\S+) ")

        def running_and(condition: Callable[[], object]) -> Callable[[], bool]:
            def check() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                return bool(condition())

            return check

        _wait_for(running_and(lambda: hint.search(log.read_text())), 180, "the dashboard line")
        url, named = hint.search(log.read_text()).groups()  # type: ignore[union-attr]
        token_file = home / ".ray" / "seg_tune" / "local.token"
        assert Path(named) == token_file
        assert _mode(token_file) == 0o600 and _mode(token_file.parent) == 0o700
        token = token_file.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        assert old_token.read_text() == "0" * 64 and _mode(old_token) == 0o644
        assert sorted(p.name for p in (home / ".ray").iterdir()) == ["auth_token", "seg_tune"]

        _wait_for(
            running_and(lambda: _checkpoint_steps(storage / "smoke-smoke")), 240, "a checkpoint"
        )
        sockets = _listening(proc.pid)
        # the dashboard with the token file's token, not with the old ~/.ray/auth_token
        assert _http_status(f"http://{url}/api/version", token) == 200
        assert _http_status(f"http://{url}/api/version", None) == 401
        assert _http_status(f"http://{url}/api/version", "0" * 64) in (401, 403)
        assert _mode(token_file) == 0o600 and _mode(token_file.parent) == 0o700

        names = " ".join(sockets.values())
        assert "gcs_server" in names and "raylet" in names and "dashboard" in names, sockets
        assert len(sockets) >= 8, sockets  # driver, GCS, raylet x2, dashboard, agents, workers
        wide = {addr: name for addr, name in sockets.items() if not _is_loopback(addr[0])}
        assert wide == {}, f"listening beyond loopback: {wide}"
        _stop_and_check(proc, signal.SIGINT, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert _mode(token_file) == 0o600 and token_file.read_text().strip() == token
    assert old_token.read_text() == "0" * 64 and _mode(old_token) == 0o644
    out = log.read_bytes()
    assert token.encode() not in out and b"seg_tune.run: Ray dashboard" in out
    for tree in (ray_tmp, storage):
        leaks = [p for p in tree.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert leaks == [], leaks
