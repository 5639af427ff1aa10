"""Fault injection for the tests, with no hook in seg_tune itself.

A test puts this folder on PYTHONPATH and sets SEG_TUNE_TEST_FAIL to a message: every Python
process then imports this file at start-up (Python's `sitecustomize`), including the driver's Ray
workers, and `seg_tune.train.train_loop` becomes a function that raises RuntimeError(message)
once the module is imported. So every trial fails, for real, inside Ray, while the driver (which
never calls train_loop) reads and checks the data as usual.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

MESSAGE = os.environ.get("SEG_TUNE_TEST_FAIL")


class _PatchTrainLoop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != "seg_tune.train":
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            real_exec(module)

            def train_loop(*args, **kwargs):  # type: ignore[no-untyped-def]
                raise RuntimeError(MESSAGE)

            module.train_loop = train_loop

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if MESSAGE:
    sys.meta_path.insert(0, _PatchTrainLoop())
