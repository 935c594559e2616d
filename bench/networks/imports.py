"""Resolving an import path to the object it names (``package.module.Name`` or ``package.module:Name``), with
errors that say what is missing: the module, the attribute (and the closest names there), or a module that moved.
Importing a network's module imports its framework: only building a network does this."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from bench.errors import ConfigError

MOVED_MODULES = {"adapters.configs": "bench.networks.configs", "adapters.registry": "bench.networks.registry",
                 "adapters.loop": "bench.training.loop", "adapters.segmenter": "bench.training.segmenter",
                 "adapters.schedules": "bench.training.schedules",
                 "adapters.deep_supervision": "bench.training.deep_supervision"}
"""Framework-neutral modules that left ``adapters/``: a user's module importing the old name gets told the new one."""


def closest(name: str, known: list[str] | tuple[str, ...]) -> str:
    """``" (closest: a, b)"`` for the known names most like ``name``, or ``""``."""
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" (closest: {', '.join(near)})" if near else ""


def import_callable(target: str, setting: str) -> Callable[..., Any]:
    """The object a dotted path (``a.b.C``) or ``a.b:C`` names, imported; ConfigError naming what is missing."""
    if ":" in target:
        module_name, _, attribute_path = target.partition(":")
        candidates = [(module_name, attribute_path)]
    else:
        parts = target.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    error: str | None = None
    for module_name, attribute_path in candidates:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            moved = MOVED_MODULES.get(exc.name or "")
            if moved:
                raise ConfigError(f"{setting}={target!r}: its module imports {exc.name}, which moved",
                                  fix=f"import {moved} instead of {exc.name}") from None
            if exc.name and module_name.startswith(exc.name) and exc.name != module_name.split(".")[0]:
                error = f"no module named {exc.name!r}"
                continue  # a submodule that does not exist: try a shorter module path
            if exc.name and not module_name.startswith(exc.name):
                raise ConfigError(f"{setting}={target!r}: importing {module_name} needs {exc.name!r}, which is "
                                  "not installed", fix=f"install {exc.name}") from None
            error = f"no module named {exc.name!r}"
            continue
        except Exception as exc:
            raise ConfigError(f"{setting}={target!r}: importing {module_name} failed "
                              f"({type(exc).__name__}: {first_line(exc)})") from None
        found: Any = module
        for attribute in attribute_path.split("."):
            if not hasattr(found, attribute):
                names = [n for n in dir(found) if not n.startswith("_")]
                raise ConfigError(f"{setting}={target!r}: {getattr(found, '__name__', module_name)} has no "
                                  f"attribute {attribute!r}{closest(attribute, names)}")
            found = getattr(found, attribute)
        if not callable(found):
            raise ConfigError(f"{setting}={target!r} is not callable ({type(found).__name__})")
        return found  # type: ignore[no-any-return]
    raise ConfigError(f"{setting}={target!r}: {error or 'cannot be imported'}",
                      fix="give the full import path, e.g. monai.networks.nets.UNet")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
