"""Modules that a dependency imports at start-up but uses only to draw pictures.

gymnax imports every environment it has when it is imported, and two of them import seaborn and
matplotlib.pyplot (with scipy.stats and pandas behind them) for their `render` methods. That is
about 2 s of every run's start-up, and of every test process, for code a training run never
calls. `defer_imports` puts a stand-in in `sys.modules` that imports the real module the first
time anything is looked up on it, so rendering and plotting still work unchanged.
"""

import importlib
import importlib.util
import sys
import types
from typing import Any


class _DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is used."""

    def __init__(self, name: str, spec: Any) -> None:
        super().__init__(name)
        # The import system reads `__spec__` each time the name is imported again; set here, it
        # does not count as a use.
        self.__spec__ = spec

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attribute)


def defer_imports(*names: str) -> None:
    """Defers importing each named module until it is used; already imported ones are left as
    they are, as are names that are not installed (their import fails where it is used)."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None:
            sys.modules[name] = _DeferredModule(name, spec)
