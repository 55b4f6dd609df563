"""The one model registry: heads, fusion algorithms and caption decoders register themselves by name from their
own file, and nothing else lists them.

    from etser.models import register

    @register("fusion")                 # the name is the file's: etser/models/fusion/tfn.py registers "tfn"
    class TFN(FusionModel): ...

    @register("head", "superb")         # several models in one file name themselves
    class SuperbHead(Head): ...

A family's models are found by importing its package and every module in it (:data:`FAMILIES`), so an 11th
fusion algorithm is one new file in ``etser/models/fusion/`` (and its ``conf/fusion/<name>.yaml``).  ``get`` and
``names`` are the only ways in; an unknown name is an error listing the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil

# family -> the package (or module) whose modules hold its models
FAMILIES = {"head": "etser.models.heads", "fusion": "etser.models.fusion", "decoder": "etser.models.decoders"}
WHAT = {"head": "head", "fusion": "fusion model", "decoder": "decoder"}
_REGISTRY: dict[str, dict[str, type]] = {family: {} for family in FAMILIES}
_DISCOVERED: set[str] = set()


def register(family: str, name: str | None = None):
    """Class decorator: register the class under ``name`` (default: its module's file name) in ``family``;
    the class's ``name`` attribute is set to it.  A name taken by another class is an error naming both."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(_REGISTRY)}")

    def add(cls: type) -> type:
        key = name or cls.__module__.rpartition(".")[2]
        old = _REGISTRY[family].get(key)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"{WHAT[family]} {key!r} registered twice: {old.__module__}.{old.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        cls.name = key
        _REGISTRY[family][key] = cls
        return cls
    return add


def discover(family: str) -> dict[str, type]:
    """Import the family's package and every module in it (once); returns the family's registry (name -> class)."""
    if family not in _DISCOVERED:
        _DISCOVERED.add(family)
        pkg = importlib.import_module(FAMILIES[family])
        for mod in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return _REGISTRY[family]


def family(family: str) -> dict[str, type]:
    """The registry dict of ``family`` as filled so far (its package fills it when imported)."""
    return _REGISTRY[family]


def get(family: str, name: str) -> type:
    models = discover(family)
    if name not in models:
        raise ValueError(f"unknown {WHAT[family]} {name!r}; known: {', '.join(sorted(models))}")
    return models[name]


def names(family: str) -> list[str]:
    return sorted(discover(family))
