"""A trial's own log (`seg_tune.sweep.trial_log`): what it copies, how a failure finds its
attempt's lines, and that a log that cannot be written never fails the trial."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seg_tune.sweep import trial_log
from seg_tune.sweep.trial_log import HEADER, captured, tail


def test_the_log_copies_stdout_and_stderr_after_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "t1.log"
    with captured(log):
        print("step=10 loss=2.5")
        print("a warning", file=sys.stderr)
    lines = log.read_text().splitlines()
    assert lines[0].startswith(HEADER) and " trial on " in lines[0] and " pid " in lines[0]
    assert lines[1:] == ["step=10 loss=2.5", "a warning"]
    out, err = capsys.readouterr()
    assert out == "step=10 loss=2.5\n" and err == "a warning\n"  # still written through
    assert sys.stdout is not None and not hasattr(sys.stdout, "_sink")  # restored


def test_a_train_workers_lines_carry_its_rank(tmp_path: Path) -> None:
    log = tmp_path / "t1.log"
    with captured(log, "train worker", rank=1):
        sys.stdout.write("one\ntwo ")
        sys.stdout.write("still two\n")
    lines = log.read_text().splitlines()
    assert "train worker rank 1 on" in lines[0]
    assert lines[1:] == ["[rank 1] one", "[rank 1] two still two"]


def test_an_exception_leaves_its_traceback_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "t1.log"
    with pytest.raises(ValueError, match="bad batch"), captured(log):
        raise ValueError("bad batch")
    lines = tail(log)
    assert lines[-1] == "ValueError: bad batch" and "Traceback (most recent call last):" in lines


def _attempt(started: str, lines: list[str]) -> str:
    return "\n".join([f"{HEADER}{started} trial on n1 pid 7", *lines]) + "\n"


def test_a_failure_gets_the_lines_of_the_attempt_running_when_it_occurred(tmp_path: Path) -> None:
    log = tmp_path / "t1.log"
    log.write_text(
        _attempt("2026-12-03_10-00-00", ["step=10", "step=20"])
        + _attempt("2026-12-03_10-05-00", ["step=30", "MemoryError"])
        + _attempt("2026-12-03_10-09-59", ["step=40"])
    )
    assert tail(log, "2026-12-03_10-04-59")[1:] == ["step=10", "step=20"]
    assert tail(log, "2026-12-03_10-05-00")[1:] == ["step=30", "MemoryError"]
    assert tail(log, "2026-12-03_11-00-00")[1:] == ["step=40"]
    assert tail(log)[1:] == ["step=40"]  # the last attempt
    # a clock behind Tune's: an error before every attempt still gets the first one
    assert tail(log, "2026-12-03_09-00-00")[1:] == ["step=10", "step=20"]
    assert tail(log, lines=1) == ["step=40"]
    assert tail(tmp_path / "missing.log") == []


def test_a_long_attempt_keeps_its_last_lines_cut_to_length(tmp_path: Path) -> None:
    log = tmp_path / "t1.log"
    log.write_text(
        _attempt("2026-12-03_10-00-00", [f"line {i}" for i in range(1000)] + ["x" * 5000])
    )
    lines = tail(log)
    assert len(lines) == trial_log.TAIL_LINES and lines[-2] == "line 999"
    assert lines[-1] == "x" * 400


def test_a_log_on_a_full_disk_never_fails_the_trial(capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/full: every write fails with ENOSPC, as on a full storage folder."""
    with captured(Path("/dev/full")):
        for i in range(3):
            print(f"step={i}")
    assert capsys.readouterr().out == "step=0\nstep=1\nstep=2\n"


def test_a_crash_in_c_code_leaves_pythons_stack_in_the_log(tmp_path: Path) -> None:
    """faulthandler writes the fatal signal and the Python stack into the log."""
    log = tmp_path / "t1.log"
    code = textwrap.dedent(
        f"""
        import ctypes
        from pathlib import Path
        from seg_tune.sweep.trial_log import captured

        def training_step():
            ctypes.string_at(0)  # a segmentation fault

        with captured(Path({str(log)!r})):
            print("step=20", flush=True)
            training_step()
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode != 0
    text = log.read_text()
    assert "step=20" in text and "Fatal Python error: Segmentation fault" in text, text
    assert "training_step" in text
