"""The structure the renovation promised, checked: no import cycle among seg_tune's modules, one
owner for the experiment folder's paths, old module names that still unpickle, and the refusal of
an untested Ray."""

from __future__ import annotations

import ast
import graphlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from seg_tune.errors import ConfigError
from seg_tune.sweep.layout import Layout

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "seg_tune"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The seg_tune modules a module imports, anywhere in it (functions included), except in its
    `if __name__ == "__main__":` entry and `if TYPE_CHECKING:` blocks."""
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                test = node.test
                if getattr(test, "id", "") == "TYPE_CHECKING":
                    continue
                if isinstance(test, ast.Compare) and getattr(test.left, "id", "") == "__name__":
                    continue
            if isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
                out.update(f"{node.module}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "handlers", "finalbody"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return out & known


def test_no_import_cycle_among_seg_tune_modules() -> None:
    modules = _modules()
    known = set(modules) - {"seg_tune"}
    graph = {
        name: {m for m in _imports(path, known) if not name.startswith(m + ".") and m != name}
        for name, path in modules.items()
    }
    assert len(graph) > 30 and graph["seg_tune.sweep.asha"], graph  # the walk found imports
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_library_modules_hold_no_command_line_code() -> None:
    """argparse and the commands' parsers live in seg_tune.cli; the science modules keep only
    the two-line `python -m` entry that hands over to it."""
    for name, path in _modules().items():
        if name.startswith("seg_tune.cli") or name == "seg_tune.run":
            continue
        text = path.read_text(encoding="utf-8")
        for word in ("import argparse", "ArgumentParser(", "def main(", "run_cli("):
            assert word not in text, f"{path.relative_to(REPO)} holds {word!r}"


def test_a_layout_owns_every_path_of_the_experiment_folder(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path / "results", "exp")
    assert layout.root == (tmp_path / "results" / "exp").resolve() and layout.name == "exp"
    root = layout.root
    assert layout.tune == root / "tune"
    assert layout.trial_dir("ab_00001") == root / "tune" / "trial_ab_00001"
    assert layout.train_run("ab_00001") == root / "train_runs" / "ab_00001"
    assert layout.space == root / "space.json"
    assert layout.scheduler_state == root / "scheduler_state.json"
    assert (layout.wandb, layout.wandb_steps) == (root / "wandb", root / "wandb_steps.json")
    assert layout.summary == root / "summary.json"
    assert layout.segmentation == root / "best_model" / "segmentation.json"
    assert (layout.report, layout.plots) == (root / "report.md", root / "plots")
    aside = layout.moved_aside()
    assert aside.parent == root.parent and aside.name.startswith("exp.old-")


def test_an_experiment_started_before_the_move_unpickles() -> None:
    """Tune's saved state pickles our scheduler, searcher and callbacks under the module names
    they had when the experiment started: `seg_tune.asha` must still give the same class."""
    from seg_tune.sweep.asha import PromotingASHA
    from seg_tune.sweep.tracking import WandbTrialRuns

    for cls, old in ((PromotingASHA, "seg_tune.asha"), (WandbTrialRuns, "seg_tune.tracking")):
        data = pickle.dumps(cls, protocol=0).replace(cls.__module__.encode(), old.encode())
        assert old.encode() in data
        assert pickle.loads(data) is cls
    # and in a fresh interpreter, where nothing imported the new names first
    code = (
        "import pickle; from seg_tune.sweep.trial import TrialSettings as new; "
        "data = pickle.dumps(new, protocol=0).replace(b'seg_tune.sweep.trial', b'seg_tune.tune'); "
        "import sys; [sys.modules.pop(m) for m in list(sys.modules) if m.startswith('seg_tune')]; "
        "cls = pickle.loads(data); print(cls.__module__, cls.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["seg_tune.sweep.trial", "TrialSettings"], out.stderr[-2000:]


def test_an_untested_ray_is_refused_with_what_to_install() -> None:
    from seg_tune.sweep.asha import TESTED_RAY, check_ray

    tested = ".".join(map(str, TESTED_RAY))
    check_ray(f"{tested}.0")
    check_ray(f"{tested}.3")
    check_ray()  # the installed one is the tested one
    for other in ("2.61.0", "3.0.0", "2.6.0", "nightly"):
        with pytest.raises(ConfigError) as err:
            check_ray(other)
        message = str(err.value)
        assert f"ray {other} is installed" in message and f"=={tested}.*" in message
        assert "\n" not in message


def test_the_sweep_refuses_an_untested_ray_before_starting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    from seg_tune.cli import run
    from seg_tune.sweep import cluster

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "2.99.1" if name == "ray" else real(name)
    )

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "start_ray", never)
    space = REPO / "search_spaces" / "smoke.yaml"
    status = run.main([str(space), "--smoke", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "ray 2.99.1 is installed" in err and "ray[tune,train,default]==2.60.*" in err
    assert list(tmp_path.iterdir()) == []  # nothing was written
