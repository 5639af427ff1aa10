"""seg_tune: tune character/phoneme GPT-2 language models for unsupervised word segmentation.

Stages of the data's path, one module each:
corpus -> tokenizer -> model -> train -> cues -> segment -> score (baseline: TP segmentation);
then the sweep (`seg_tune.sweep`: spec, trials, schedulers, results, cluster) -> report; the
commands are in `seg_tune.cli`, the SLURM scripts in cluster/.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Modules that moved into `seg_tune.sweep` / `seg_tune.cli`. An experiment started before the
# move holds pickles (Tune's searcher, scheduler and callbacks) that name the old modules: these
# aliases let it resume. Nothing in seg_tune imports the old names.
_MOVED = {
    "seg_tune.asha": "seg_tune.sweep.asha",
    "seg_tune.tracking": "seg_tune.sweep.tracking",
    "seg_tune.tune": "seg_tune.sweep.trial",
    "seg_tune.results": "seg_tune.sweep.results",
    "seg_tune.search_space": "seg_tune.sweep.spec",
    "seg_tune.distributions": "seg_tune.sweep.distributions",
    "seg_tune.wandb_sweep": "seg_tune.sweep.wandb",
    "seg_tune.local_cluster": "seg_tune.sweep.cluster",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module it moved to (the same module object)."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        pass  # already executed under its new name


if not any(isinstance(finder, _Moved) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Moved())
