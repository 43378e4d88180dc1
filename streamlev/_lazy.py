"""The compiled kernels and thread helpers, imported at first use: ``import streamlev`` does not load numba.

``kernels.NAME`` imports :mod:`streamlev._kernels` (compiling or loading its
numba functions) the first time any name is asked for, then returns the
function.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """Attribute access to a module imported at the first access."""

    def __init__(self, name: str):
        self._name = name
        self._mod = None

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        mod = self._mod
        if mod is None:
            mod = self._mod = importlib.import_module(self._name)
        return getattr(mod, attr)  # looked up at every call, so a patched function is seen


kernels = LazyModule("streamlev._kernels")
