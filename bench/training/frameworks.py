"""The lazy path from bench to a framework: build, load and configure segmenters by framework name.

``adapters.torch`` and ``adapters.tf`` hold only what is framework-specific (networks, layers, losses, steps
and the segmenter hooks); they are imported here, by name, when a network is built or loaded, so importing
bench never imports a framework and a user with only one framework installed can still use it.

Example:
    >>> seg = build("unet3d", "torch", base_filters=16, depth=3)   # doctest: +SKIP
    >>> probs = seg.predict_patches(batch)                         # [B,1,X,Y,Z] -> [B,4,X,Y,Z]
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.contract import Segmenter
from bench.errors import ConfigError
from bench.networks import registry
from bench.networks.configs import NetConfig
from bench.networks.registry import FRAMEWORKS
from bench.training.segmenter import META_FILE, read_meta

ARCHITECTURES: tuple[str, ...] = tuple(entry.name for entry in registry.BUILT_IN)
"""The built-in architectures (``registry.names()`` also lists those registered since)."""
__all__ = ["ARCHITECTURES", "FRAMEWORKS", "META_FILE", "build", "build_network", "configure_threads", "environment",
           "load", "segmenter_class"]


def _check_framework(framework: str) -> None:
    """ConfigError naming ``framework`` unless it is one of ``FRAMEWORKS``."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"framework={framework!r} is unknown", fix=f"use one of {', '.join(FRAMEWORKS)}")


def segmenter_class(framework: str) -> Any:
    """The Segmenter class of a framework (imports the framework)."""
    _check_framework(framework)
    return importlib.import_module(f"adapters.{framework}.segmenter").SEGMENTER


def configure_threads(framework: str, num_threads: int) -> None:
    """Set the framework's CPU thread count (0 = its default); call before building the first model.

    TensorFlow fixes its thread pools when it starts, which building a model does, so a thread count
    given only at ``fit`` time would come too late there.
    """
    _check_framework(framework)
    importlib.import_module(f"adapters.{framework}.steps").configure_threads(num_threads)


def environment(framework: str) -> dict[str, Any]:
    """What ``framework`` sees here (``adapters.<framework>.environment.describe()``: version, build, devices
    with their native precisions, threads), or ``{"error": ...}`` naming what is missing when it cannot be
    imported (a machine with one framework only)."""
    _check_framework(framework)
    try:
        module = importlib.import_module(f"adapters.{framework}.environment")
    except ImportError as exc:
        return {"error": f"cannot be imported ({type(exc).__name__}: {exc})"}
    info: dict[str, Any] = module.describe()
    return info


def build(architecture: str, framework: str, **params: Any) -> Segmenter:
    """Build an untrained segmenter.

    Args:
        architecture: A registered architecture (``registry.names()``).
        framework: One of ``FRAMEWORKS``.
        **params: Constructor arguments of the network (``base_filters``, ``depth``, ``norm``, ...).

    Raises:
        ConfigError: Unknown architecture, framework or network parameter, or a bad value.
    """
    entry = registry.lookup(architecture)
    return build_network(entry, entry.make_config(params), framework)  # config errors before a framework loads


def build_network(entry: registry.Architecture, config: NetConfig, framework: str) -> Segmenter:
    """An untrained segmenter of ``entry`` built from its validated ``config`` as it is (no second lookup)."""
    segmenter: Segmenter = segmenter_class(framework)(entry, config)
    return segmenter


def load(directory: str | Path) -> Segmenter:
    """Load a segmenter saved by any adapter's ``save`` (framework read from ``segmenter.json``)."""
    meta = read_meta(Path(directory) / META_FILE)
    segmenter: Segmenter = segmenter_class(meta["framework"]).load(Path(directory))
    return segmenter
