"""Fault injection for the tests, with no hook in seg_tune itself.

A test puts this folder on PYTHONPATH and sets SEG_TUNE_TEST_FAIL to a message: every Python
process then imports this file at start-up (Python's `sitecustomize`), including the driver's Ray
workers, and `seg_tune.train.train_loop` becomes a function that raises RuntimeError(message)
once the module is imported. So every trial fails, for real, inside Ray, while the driver (which
never calls train_loop) reads and checks the data as usual.

SEG_TUNE_TEST_FAKE_CUDA_BUILD=1 makes the CPU build of torch say it is a CUDA build
(`torch.version.cuda`), while `torch.cuda.is_available()` stays False: a machine whose GPU torch
cannot use. So Ray's GPU accounting can be tested here, past seg_tune's refusal of a CPU torch
for GPU trials (the trials then train on the CPU, saying so).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

MESSAGE = os.environ.get("SEG_TUNE_TEST_FAIL")
FAKE_CUDA_BUILD = os.environ.get("SEG_TUNE_TEST_FAKE_CUDA_BUILD") == "1"


class _Patch(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after the module `name` is first imported."""

    def __init__(self, name, patch):  # type: ignore[no-untyped-def]
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            real_exec(module)
            self.patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _failing_train_loop(module):  # type: ignore[no-untyped-def]
    def train_loop(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError(MESSAGE)

    module.train_loop = train_loop


def _cuda_build(module):  # type: ignore[no-untyped-def]
    module.cuda = "12.4"


if MESSAGE:
    sys.meta_path.insert(0, _Patch("seg_tune.train", _failing_train_loop))
if FAKE_CUDA_BUILD:
    sys.meta_path.insert(0, _Patch("torch.version", _cuda_build))
