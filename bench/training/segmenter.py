"""``NetSegmenter``: what every framework's segmenter shares (framework-neutral; numpy in, numpy out).

It holds the architecture and its validated config, checks batches and patch sizes, runs ``bench.training.loop``
with the framework's steps, and writes/reads ``segmenter.json``. A framework subclass supplies only the
framework work: build the network, make its ``TrainSteps``, one forward pass, and its weights file.

A freshly built segmenter is re-initialised from ``spec.seed`` at the start of its first ``fit``, so a fit is
reproducible from its spec; later fits (and fits after ``load``) continue from the current weights.

Precision (``spec.precision``, see ``bench.hardware``): ``fit`` resolves ``auto`` for the device it trains on
and refuses (``ConfigError``) a precision that device cannot run natively; training and ``predict_patches``
then run in it (weights, loss, softmax stay float32), and ``describe()`` and ``segmenter.json`` record it.
``load`` predicts in the saved precision, or in fp32 with a warning where that is not native.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from bench import hardware
from bench.contract import PatchSource, RunLogger, TrainHistory, TrainSpec
from bench.errors import ConfigError, DataError
from bench.io import write_text_atomic
from bench.networks import registry
from bench.networks.configs import NetConfig
from bench.networks.imports import first_line
from bench.networks.target import BUILDER, TargetConfig
from bench.training import loop
from bench.types import FloatArray

META_FILE = "segmenter.json"
"""Written by every segmenter's ``save``: framework, architecture, params, implementation, versions."""


class NetSegmenter:
    """A network of one registered architecture in one framework, behind bench's ``Segmenter`` protocol.

    Attributes:
        name: Architecture name (``unet3d``, ``vnet``, ``neuronet`` or a registered one).
        framework: ``torch`` or ``tf`` (set by the subclass).
        config: The validated constructor arguments.
        precision: What training and prediction run in: ``fp32``, ``bf16`` or ``fp16`` (never ``auto``).
    """

    framework: ClassVar[str]
    weights_file: ClassVar[str]

    def __init__(self, architecture: registry.Architecture, config: NetConfig, trained: bool = False,
                 precision: str = "fp32") -> None:
        self.architecture = architecture
        self.name = architecture.name
        self.config = config
        self._trained = trained
        self.precision = precision
        self._build_network()

    # ------------------------------------------------------------------------ framework hooks
    def _build_network(self) -> None:
        """Build a new network from ``self.config`` with fresh weights from the current seed (in ``self.precision``
        where the framework fixes it at build time)."""
        raise NotImplementedError

    def _apply_precision(self) -> None:
        """Make the network run in ``self.precision`` from now on, keeping its weights (default: nothing to do)."""

    def _device_kind(self) -> hardware.DeviceKind:
        """``cpu`` or ``cuda``: where the network trains and predicts now."""
        raise NotImplementedError

    def _native_precisions(self) -> tuple[str, ...]:
        """The precisions the device in use runs natively (``bench.hardware``)."""
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

    def _probe(self, batch: FloatArray) -> dict[str, Any]:
        """The network's raw output for a checked batch, without gradients, in ``training`` mode and in
        ``inference`` mode: a channels-first ``[B, K, X, Y, Z]`` array, or a description (``"a tuple"``) of
        anything else it returned. Only called before training (training mode may update norm statistics)."""
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
        """Train on ``train`` (validate on ``val``); the best weights are kept. See ``bench.training.loop``."""
        self.check_patch_size(tuple(train.patch_size))
        if val is not None:
            self.check_patch_size(tuple(val.patch_size))
        self._configure(spec)
        precision = self.resolve_precision(spec.precision)
        if not self._trained:
            self.precision = precision
            self._build_network()
            self._configure(spec)  # re-seed: training starts from the seed's random state, as the weights did
        else:
            self.use_precision(precision)
        history = loop.fit(self._steps(spec), train, val, spec, log)
        self._trained = True
        return history

    def resolve_precision(self, precision: str) -> str:
        """``precision`` for the device in use (``auto`` resolved as ``bench.hardware`` says).

        Raises:
            ConfigError: An unknown value, or one the device cannot run natively (bf16 on a CPU without
                ``avx512_bf16``/``amx_bf16``, fp16 on a CPU), naming the value and the fix.
        """
        return hardware.resolve_precision(precision, framework=self.framework, device=self._device_kind(),
                                          native=self._native_precisions())

    def check_forward(self, patch_size: Sequence[int], batch_size: int, spec: TrainSpec | None = None) -> None:
        """One dry forward pass on a zero batch of ``batch_size`` patches of ``patch_size`` (in both modes; with
        ``spec``, on its training device and in its precision): the output must be one logit map per class at
        the patch's size, and finite. Only before training (see ``_probe``).

        Raises:
            ConfigError: Naming the model, what came out, what was expected and the fix (for a network that
                fails on this patch size, the smallest larger patch it accepts, when one up to 8x is found).
        """
        if spec is not None:
            self._configure(spec)
            self.use_precision(spec.precision)
        size = tuple(int(s) for s in patch_size)
        in_channels = int(getattr(self.config, "in_channels", 1))
        classes = int(getattr(self.config, "num_classes", 0))
        expected = (batch_size, classes, *size)
        where = f"model {self.name} ({self.framework})"
        try:
            outputs = self._probe(np.zeros((batch_size, in_channels, *size), np.float32))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{where} fails on a zero batch of {batch_size} patches of {list(size)}: "
                              f"{type(exc).__name__}: {first_line(exc)}", fix=self._larger_patch_hint(size)) from None
        for mode, output in outputs.items():
            if isinstance(output, str):
                raise ConfigError(f"{where} returns {output} in {mode} mode; expected one logit tensor of shape "
                                  f"{list(expected)}", fix="return a single tensor (switch its deep supervision off)")
            shape = tuple(output.shape)
            if len(shape) == 5 and shape[1] != classes:
                raise ConfigError(f"{where} gives {shape[1]} output channels for {classes} classes "
                                  f"(output {list(shape)}, expected {list(expected)})",
                                  fix="its output channels must be the data's classes: name that keyword in "
                                  "model.channels.out and do not set it yourself")
            if shape != expected:
                raise ConfigError(f"{where} gives an output of {list(shape)} in {mode} mode for a patch of "
                                  f"{list(size)}; expected {list(expected)} (one logit per class at the patch's size)",
                                  fix=self._larger_patch_hint(size))
            if not np.all(np.isfinite(output)):
                raise ConfigError(f"{where} gives non-finite values for a zero patch in {mode} mode",
                                  fix="check its normalisation layers and initialisation")

    def _larger_patch_hint(self, size: tuple[int, ...]) -> str:
        """``use profile.patch_size=[32, 32, 32] ...`` for the smallest of 2x, 4x, 8x the patch that gives the
        right output (eval mode, batch 2), else a general hint."""
        in_channels = int(getattr(self.config, "in_channels", 1))
        for factor in (2, 4, 8):
            bigger = tuple(s * factor for s in size)
            if np.prod(bigger) > 128**3:
                break
            try:
                out = self._probe(np.zeros((2, in_channels, *bigger), np.float32))["inference"]
            except Exception:
                continue
            if not isinstance(out, str) and tuple(out.shape[2:]) == bigger:
                return (f"the smallest patch it accepts here is {list(bigger)}: set profile.patch_size={list(bigger)} "
                        "(and patch_step), or make the network shallower")
        return "use a patch size the network accepts (every axis a multiple of its total down-sampling)"

    def predict_patches(self, batch: FloatArray) -> FloatArray:
        """``float32[B, C, X, Y, Z]`` -> softmax ``float32[B, K, X, Y, Z]`` (eval mode, one forward pass)."""
        batch = np.asarray(batch)
        in_channels = getattr(self.config, "in_channels", 1)
        if batch.ndim != 5 or batch.shape[1] != in_channels:
            raise ConfigError(f"{self.name}: batch of shape {batch.shape} is not [B, {in_channels}, X, Y, Z]")
        self.check_patch_size(batch.shape[2:])
        return self._forward(batch.astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        """Architecture, framework, constructor parameters, trainable parameter count, versions, device, precision."""
        versions = self.versions()
        return {
            "architecture": self.name,
            "framework": self.framework,
            "params": self.params,
            "trainable_parameters": self.parameter_count(),
            "framework_version": ", ".join(f"{k} {v}" for k, v in versions.items()),
            "device": self.device(),
            "precision": self.precision,
        }

    def save(self, directory: Path) -> None:
        """Write the weights file then ``segmenter.json``, each atomically (temp file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory / self.weights_file)
        meta: dict[str, Any] = {
            "framework": self.framework,
            "architecture": self.name,
            "params": self.config.to_params(),
            "implementation": dict(self.architecture.implementation),
            "precision": self.precision,
            "versions": {**self.versions(), "numpy": np.__version__, "python": platform.python_version()},
        }
        if isinstance(self.config, TargetConfig):
            meta["target"] = self.config.target
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
                            fix="load it with frameworks.load(directory)")
        try:
            entry = architecture_of(meta)
            segmenter = cls(entry, entry.make_config(meta["params"]), trained=True)
        except ConfigError as exc:
            raise DataError(f"saved network is invalid: {exc.problem}", path=meta_path) from exc
        segmenter._load_weights(directory / cls.weights_file)
        segmenter._adopt_saved_precision(meta.get("precision", "fp32"), meta_path)
        return segmenter

    def use_precision(self, precision: str) -> str:
        """Predict (and keep training) in ``precision`` from now on, the weights unchanged; the resolved value.

        Raises:
            ConfigError: As ``resolve_precision``.
        """
        resolved = self.resolve_precision(precision)
        if resolved != self.precision:
            self.precision = resolved
            self._apply_precision()
        return resolved

    def _adopt_saved_precision(self, precision: Any, meta_path: Path) -> None:
        """Predict in the precision the weights were trained in, or in fp32 (with a warning) where it is not
        native on this machine; ``describe()`` says which. Checkpoints older than the setting are fp32."""
        if precision not in hardware.PRECISIONS or precision == "auto":
            raise DataError(f"precision={precision!r} in segmenter.json is not fp32, bf16 or fp16", path=meta_path)
        try:
            self.use_precision(precision)
        except ConfigError as exc:
            warnings.warn(f"{meta_path}: trained in {precision}, predicting in fp32 here ({exc.problem})",
                          RuntimeWarning, stacklevel=3)

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
    if meta.get("target"):  # a network named by its import path: its config holds the callable
        return registry.Architecture(meta["architecture"], TargetConfig, {meta["framework"]: BUILDER})
    implementation = meta.get("implementation") or {}
    if implementation:
        return registry.register_from_model_config(
            {"architecture": meta["architecture"], "implementation": implementation, "params": meta["params"]}
        )
    return registry.lookup(meta["architecture"])

