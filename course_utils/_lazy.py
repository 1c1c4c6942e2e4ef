"""Lazy public faces for the package and its groups (PEP 562): a module loads on first use.

A group's face names its modules and forwards the public names (``__all__``) of its front modules, read
at each access, so ``cu.data.load_malaria`` is always ``cu.data.loaders.load_malaria``, even after a
wrapper has replaced it (a monkeypatch in a test, say).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable


def face(package: str, modules: Iterable[str], fronts: Iterable[str] = (),
         aliases: dict[str, str] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: its ``modules`` by name, the ``__all__`` names of its
    ``fronts`` (modules, first match wins), and ``aliases`` (a name -> a module path relative to ``package``)."""
    modules, fronts, aliases = set(modules), tuple(fronts), dict(aliases or {})

    def load(relative: str):
        return importlib.import_module(f".{relative}", package)

    def __getattr__(name: str) -> Any:
        if name.startswith("_"):   # private modules load through the import system (`from . import _drawing`)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if name in modules or name in aliases:
            return load(aliases.get(name, name))
        for front in fronts:
            module = load(front)
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(modules | set(aliases) | {n for f in fronts for n in getattr(load(f), "__all__", ())})

    return __getattr__, __dir__
