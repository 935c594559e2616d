"""``NetSegmenter``: what every framework's segmenter shares (framework-neutral; numpy in, numpy out).

It holds the architecture and its validated config, checks batches and patch sizes, runs ``adapters.loop``
with the framework's steps, and writes/reads ``segmenter.json``. A framework subclass supplies only the
framework work: build the network, make its ``TrainSteps``, one forward pass, and its weights file.

A freshly built segmenter is re-initialised from ``spec.seed`` at the start of its first ``fit``, so a fit is
reproducible from its spec; later fits (and fits after ``load``) continue from the current weights.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from adapters import loop, registry
from adapters.configs import NetConfig
from bench.contract import PatchSource, RunLogger, TrainHistory, TrainSpec
from bench.errors import ConfigError, DataError
from bench.io import write_text_atomic
from bench.types import FloatArray

META_FILE = "segmenter.json"
"""Written by every segmenter's ``save``: framework, architecture, params, implementation, versions."""


class NetSegmenter:
    """A network of one registered architecture in one framework, behind bench's ``Segmenter`` protocol.

    Attributes:
        name: Architecture name (``unet3d``, ``vnet``, ``neuronet`` or a registered one).
        framework: ``torch`` or ``tf`` (set by the subclass).
        config: The validated constructor arguments.
    """

    framework: ClassVar[str]
    weights_file: ClassVar[str]

    def __init__(self, architecture: registry.Architecture, config: NetConfig, trained: bool = False) -> None:
        self.architecture = architecture
        self.name = architecture.name
        self.config = config
        self._trained = trained
        self._build_network()

    # ------------------------------------------------------------------------ framework hooks
    def _build_network(self) -> None:
        """Build a new network from ``self.config`` with fresh weights from the current seed."""
        raise NotImplementedError

    def _configure(self, spec: TrainSpec) -> None:
        """Seeds, determinism, threads and device as ``spec`` asks (before the network is rebuilt)."""
        raise NotImplementedError

    def _steps(self, spec: TrainSpec) -> loop.TrainSteps:
        """The framework's steps for this network: optimizer and loss from ``spec``."""
        raise NotImplementedError

    def _forward(self, batch: FloatArray) -> FloatArray:
        """Eval-mode softmax of a checked ``float32[B, C, X, Y, Z]`` batch as ``[B, K, X, Y, Z]``."""
        raise NotImplementedError

    def _save_weights(self, path: Path) -> None:
        raise NotImplementedError

    def _load_weights(self, path: Path) -> None:
        """Load weights that must fit the network exactly; DataError naming ``path`` otherwise."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Framework library versions."""
        raise NotImplementedError

    def device(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------------ the shared surface
    @classmethod
    def build(cls, architecture: str, **params: Any) -> Self:
        """An untrained segmenter; ConfigError names an unknown architecture or parameter or a bad value."""
        entry = registry.lookup(architecture)
        return cls(entry, entry.make_config(params))

    @property
    def params(self) -> dict[str, Any]:
        """All constructor arguments of the network (defaults filled in, lists as tuples)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.to_params().items()}

    def check_patch_size(self, patch_size: tuple[int, ...]) -> tuple[int, int, int]:
        """ConfigError unless the network accepts patches of this ``(x, y, z)`` size."""
        return self.config.check_patch_size(patch_size)

    def fit(self, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger) -> TrainHistory:
        """Train on ``train`` (validate on ``val``); the best weights are kept. See ``adapters.loop``."""
        self.check_patch_size(tuple(train.patch_size))
        if val is not None:
            self.check_patch_size(tuple(val.patch_size))
        self._configure(spec)
        if not self._trained:
            self._build_network()
            self._configure(spec)  # re-seed: training starts from the seed's random state, as the weights did
        history = loop.fit(self._steps(spec), train, val, spec, log)
        self._trained = True
        return history

    def predict_patches(self, batch: FloatArray) -> FloatArray:
        """``float32[B, C, X, Y, Z]`` -> softmax ``float32[B, K, X, Y, Z]`` (eval mode, one forward pass)."""
        batch = np.asarray(batch)
        in_channels = getattr(self.config, "in_channels", 1)
        if batch.ndim != 5 or batch.shape[1] != in_channels:
            raise ConfigError(f"{self.name}: batch of shape {batch.shape} is not [B, {in_channels}, X, Y, Z]")
        self.check_patch_size(batch.shape[2:])
        return self._forward(batch.astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        """Architecture, framework, constructor parameters, trainable parameter count, versions, device."""
        versions = self.versions()
        return {
            "architecture": self.name,
            "framework": self.framework,
            "params": self.params,
            "trainable_parameters": self.parameter_count(),
            "framework_version": ", ".join(f"{k} {v}" for k, v in versions.items()),
            "device": self.device(),
        }

    def save(self, directory: Path) -> None:
        """Write the weights file then ``segmenter.json``, each atomically (temp file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory / self.weights_file)
        meta = {
            "framework": self.framework,
            "architecture": self.name,
            "params": self.config.to_params(),
            "implementation": dict(self.architecture.implementation),
            "versions": {**self.versions(), "numpy": np.__version__, "python": platform.python_version()},
        }
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild from ``segmenter.json`` and load the weights (no code is deserialised).

        Raises:
            DataError: Missing or corrupt files, another framework, or weights that do not fit.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        meta = read_meta(meta_path)
        if meta["framework"] != cls.framework:
            raise DataError(f"framework={meta['framework']!r}, not a {cls.framework} segmenter", path=meta_path,
                            fix="load it with adapters.load(directory)")
        try:
            entry = architecture_of(meta)
            segmenter = cls(entry, entry.make_config(meta["params"]), trained=True)
        except ConfigError as exc:
            raise DataError(f"saved network is invalid: {exc.problem}", path=meta_path) from exc
        segmenter._load_weights(directory / cls.weights_file)
        return segmenter


def read_meta(path: Path) -> dict[str, Any]:
    """A ``segmenter.json`` written by ``save``, checked; DataError naming the file otherwise."""
    try:
        meta = json.loads(path.read_text())
        framework, architecture, params = meta["framework"], meta["architecture"], meta["params"]
    except FileNotFoundError as exc:
        raise DataError("no saved segmenter here (segmenter.json missing)", path=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"corrupt segmenter metadata ({exc})", path=path) from exc
    if not isinstance(framework, str) or not isinstance(architecture, str) or not isinstance(params, dict):
        raise DataError("malformed segmenter metadata (framework, architecture or params)", path=path)
    return dict(meta)


def architecture_of(meta: dict[str, Any]) -> registry.Architecture:
    """The saved architecture: a built-in, or one registered again from its saved implementation."""
    implementation = meta.get("implementation") or {}
    if implementation:
        return registry.register_from_model_config(
            {"architecture": meta["architecture"], "implementation": implementation, "params": meta["params"]}
        )
    return registry.lookup(meta["architecture"])
