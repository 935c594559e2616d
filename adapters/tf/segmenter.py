"""``TfSegmenter``: one Keras network behind bench's ``Segmenter`` protocol (channels-first numpy in/out).

Example:
    >>> seg = TfSegmenter.build("unet3d", base_filters=8, depth=3)
    >>> probs = seg.predict_patches(np.zeros((2, 1, 32, 32, 32), np.float32))   # [2, 4, 32, 32, 32]
    >>> seg.save(Path("runs/model")); again = TfSegmenter.load(Path("runs/model"))
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
from pathlib import Path
from typing import Any, Self

import h5py
import keras
import numpy as np
import tensorflow as tf

from adapters import META_FILE
from adapters.tf import to_channels_first, to_channels_last
from adapters.tf.nets.neuronet import NeuroNet
from adapters.tf.nets.unet3d import UNet3D
from adapters.tf.nets.vnet import VNet
from adapters.tf.training import configure_runtime, fit_model
from bench.contract import PatchSource, RunLogger, TrainHistory, TrainSpec
from bench.errors import ConfigError, DataError
from bench.io import write_atomic, write_text_atomic
from bench.types import FloatArray

NetConfig = UNet3D | VNet | NeuroNet
NETS: dict[str, type[NetConfig]] = {"unet3d": UNet3D, "vnet": VNet, "neuronet": NeuroNet}
WEIGHTS_FILE = "weights.weights.h5"
"""Keras insists on the ``.weights.h5`` suffix."""


def make_net(architecture: str, params: dict[str, Any]) -> NetConfig:
    """The validated network config of ``architecture`` (ConfigError naming a bad name or parameter)."""
    if architecture not in NETS:
        raise ConfigError(f"architecture={architecture!r} is unknown", fix=f"use one of {', '.join(NETS)}")
    cls = NETS[architecture]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{architecture} has no parameter {unknown[0]!r}", fix=f"use some of {', '.join(sorted(known))}"
        )
    return cls(**params)


def _json_params(net: NetConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(net).items()}


def _weights_layout(path: Path) -> dict[str, tuple[int, ...]]:
    """Every variable stored in a ``.weights.h5`` file: its path in the file and its shape."""
    layout: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, obj: layout.__setitem__(name, tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None
        )
    return layout



class TfSegmenter:
    """A Keras 3 (TensorFlow backend) segmenter for ``unet3d``, ``vnet`` or ``neuronet``.

    Weights are created at build time from TF's global random state; the first ``fit`` of a segmenter that
    was neither fitted nor loaded rebuilds them from ``spec.seed``, so a fit is reproducible from its
    spec alone. Later fits (and fits of a loaded segmenter) continue from the current weights.
    """

    framework = "tf"

    def __init__(self, architecture: str, net: NetConfig) -> None:
        self.name = architecture
        self.net = net
        self.model: keras.Model = net.build()
        self._fresh = True
        self._predict_fn: Any = None

    # ------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, architecture: str, **params: Any) -> Self:
        """An untrained segmenter; ``params`` are the network's constructor arguments."""
        return cls(architecture, make_net(architecture, params))

    @property
    def params(self) -> dict[str, Any]:
        """All constructor arguments of the network (defaults filled in)."""
        return dataclasses.asdict(self.net)

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return int(sum(int(np.prod(v.shape)) for v in self.model.trainable_weights))

    def describe(self) -> dict[str, Any]:
        gpus = tf.config.list_physical_devices("GPU")
        return {
            "architecture": self.name,
            "framework": self.framework,
            "params": self.params,
            "trainable_parameters": self.parameter_count(),
            "framework_version": f"tensorflow {tf.__version__}, keras {keras.__version__}",
            "device": "/GPU:0" if gpus else "/CPU:0",
        }

    # ------------------------------------------------------------------------------------- training
    def fit(self, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger) -> TrainHistory:
        """Train in place (see ``adapters.tf.training.fit_model`` for the exact rules)."""
        self.net.check_patch_size(tuple(train.patch_size))
        if val is not None:
            self.net.check_patch_size(tuple(val.patch_size))
        if self._fresh:
            configure_runtime(spec)
            self.model = self.net.build()
            self._predict_fn = None
        history = fit_model(self.model, train, val, spec, log)
        self._fresh = False
        return history

    # ------------------------------------------------------------------------------------- inference
    def _predict(self) -> Any:
        if self._predict_fn is None:
            model = self.model
            spec = tf.TensorSpec([None, None, None, None, self.net.in_channels], tf.float32)

            @tf.function(input_signature=[spec])
            def predict(image: tf.Tensor) -> tf.Tensor:
                return tf.nn.softmax(model(image, training=False), axis=-1)

            self._predict_fn = predict
        return self._predict_fn

    def predict_patches(self, batch: FloatArray) -> FloatArray:
        """``float32[B, C, X, Y, Z]`` -> softmax ``float32[B, K, X, Y, Z]`` (eval mode, one call)."""
        batch = np.asarray(batch)
        if batch.ndim != 5 or batch.shape[1] != self.net.in_channels:
            raise ConfigError(
                f"predict_patches got a batch of shape {batch.shape}; {self.name} expects "
                f"[B, {self.net.in_channels}, X, Y, Z]"
            )
        self.net.check_patch_size(batch.shape[2:])
        image = tf.convert_to_tensor(to_channels_last(batch.astype(np.float32, copy=False)))
        probs: FloatArray = to_channels_first(self._predict()(image).numpy()).astype(np.float32, copy=False)
        return probs

    # ------------------------------------------------------------------------------------- files
    def save(self, directory: Path) -> None:
        """Write ``segmenter.json`` and ``weights.weights.h5`` into ``directory`` (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "framework": self.framework,
            "architecture": self.name,
            "params": _json_params(self.net),
            "versions": {
                "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }
        def save_weights(tmp: Path) -> None:
            tmp.unlink()  # Keras refuses to overwrite the empty placeholder
            self.model.save_weights(str(tmp))

        write_atomic(directory / WEIGHTS_FILE, save_weights, suffix=".weights.h5")
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild from ``segmenter.json`` and load the weights (no code is deserialised).

        Raises:
            DataError: Missing or corrupt metadata or weights, or weights that do not fit the network.
        """
        directory = Path(directory)
        meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
        try:
            meta = json.loads(meta_path.read_text())
            architecture, params = meta["architecture"], dict(meta["params"])
        except FileNotFoundError as exc:
            raise DataError("segmenter.json is missing", path=meta_path) from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"corrupt segmenter metadata ({exc})", path=meta_path) from exc
        if meta.get("framework") != cls.framework:
            raise DataError(f"framework={meta.get('framework')!r}, expected 'tf'", path=meta_path)
        try:
            segmenter = cls.build(architecture, **params)
        except ConfigError as exc:
            raise DataError(f"invalid network in metadata: {exc.message}", path=meta_path) from exc
        segmenter._load_weights(weights_path)
        segmenter._fresh = False
        return segmenter

    def _load_weights(self, path: Path) -> None:
        if not path.is_file():
            raise DataError("weights file is missing", path=path, fix="save the segmenter again")
        try:
            stored = _weights_layout(path)
        except OSError as exc:
            raise DataError(f"unreadable or corrupt weights file ({exc})", path=path) from exc
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / "reference.weights.h5"
            self.model.save_weights(str(reference))
            expected = _weights_layout(reference)
        if stored != expected:
            differing = sorted(set(stored.items()) ^ set(expected.items()))
            raise DataError(
                f"weights do not fit {self.name} {self.params} ({len(stored)} stored variables vs "
                f"{len(expected)} expected; first difference: {differing[0][0]})",
                path=path,
            )
        try:
            self.model.load_weights(str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"could not load weights ({exc})", path=path) from exc
