"""Framework adapters: each architecture for PyTorch and TensorFlow behind bench's ``Segmenter`` protocol.

Frameworks are imported lazily, so listing what exists costs nothing and a user with only one framework
installed can still use it.

Example:
    >>> seg = build("unet3d", "torch", base_filters=16, depth=3)   # doctest: +SKIP
    >>> probs = seg.predict_patches(batch)                         # [B,1,X,Y,Z] -> [B,4,X,Y,Z]
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from bench.contract import Segmenter
from bench.errors import ConfigError, DataError

ARCHITECTURES: tuple[str, ...] = ("unet3d", "vnet", "neuronet")
FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
_SEGMENTER_CLASSES = {
    "torch": ("adapters.torch.segmenter", "TorchSegmenter"),
    "tf": ("adapters.tf.segmenter", "TfSegmenter"),
}
META_FILE = "segmenter.json"
"""Written by every adapter's ``save``: ``{"framework": ..., "architecture": ..., "params": {...}}``."""


def _check_framework(framework: str) -> None:
    """ConfigError naming ``framework`` unless it is one of ``FRAMEWORKS``."""
    if framework not in _SEGMENTER_CLASSES:
        raise ConfigError(f"framework={framework!r} is unknown", fix=f"use one of {', '.join(FRAMEWORKS)}")


def segmenter_class(framework: str) -> Any:
    """The Segmenter class of a framework (imports the framework)."""
    _check_framework(framework)
    module_name, class_name = _SEGMENTER_CLASSES[framework]
    return getattr(importlib.import_module(module_name), class_name)


def configure_threads(framework: str, num_threads: int) -> None:
    """Set the framework's CPU thread count (0 = its default); call before building the first model.

    TensorFlow fixes its thread pools when it starts, which building a model does, so a thread count
    given only at ``fit`` time would come too late there.
    """
    _check_framework(framework)
    module = importlib.import_module(f"adapters.{framework}.training")
    module.configure_threads(num_threads)


def build(architecture: str, framework: str, **params: Any) -> Segmenter:
    """Build an untrained segmenter.

    Args:
        architecture: One of ``ARCHITECTURES``.
        framework: One of ``FRAMEWORKS``.
        **params: Constructor arguments of the network (``base_filters``, ``depth``, ``norm``, ...).

    Raises:
        ConfigError: Unknown architecture, framework or network parameter.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"model architecture={architecture!r} is unknown", fix=f"use one of {', '.join(ARCHITECTURES)}"
        )
    cls = segmenter_class(framework)
    segmenter: Segmenter = cls.build(architecture, **params)
    return segmenter


def load(directory: str | Path) -> Segmenter:
    """Load a segmenter saved by any adapter's ``save`` (framework read from ``segmenter.json``)."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        framework = meta["framework"]
    except FileNotFoundError as exc:
        raise DataError("no saved segmenter here (segmenter.json missing)", path=directory) from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"corrupt segmenter metadata: {exc}", path=meta_path) from exc
    segmenter: Segmenter = segmenter_class(framework).load(directory)
    return segmenter
