"""``TfSegmenter``: the Keras/TensorFlow hooks of ``bench.training.segmenter.NetSegmenter`` (channels-first numpy
in and out; the model runs channels-last).

Example:
    >>> seg = TfSegmenter.build("unet3d", base_filters=8, depth=3)
    >>> probs = seg.predict_patches(np.zeros((2, 1, 32, 32, 32), np.float32))   # [2, 4, 32, 32, 32]
    >>> seg.save(Path("runs/model")); again = TfSegmenter.load(Path("runs/model"))
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from adapters.tf import to_channels_first, to_channels_last
from adapters.tf.steps import (
    TfSteps,
    configure_runtime,
    heads,
    native_precisions,
    policy_scope,
    select_device,
)
from bench import hardware
from bench.contract import TrainSpec
from bench.errors import DataError
from bench.io import write_atomic
from bench.training.segmenter import NetSegmenter
from bench.types import FloatArray


def weights_layout(path: Path) -> dict[str, tuple[int, ...]]:
    """Every variable stored in a ``.weights.h5`` file: its path in the file and its shape."""
    layout: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, obj: layout.__setitem__(name, tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None
        )
    return layout


class TfSegmenter(NetSegmenter):
    """A Keras 3 (TensorFlow backend) segmenter (``model``: the channels-last ``keras.Model``).

    Weights are created at build time from TF's global random state; the first ``fit`` rebuilds them from
    ``spec.seed`` (see ``NetSegmenter``).
    """

    framework = "tf"
    weights_file = "weights.weights.h5"
    """Keras insists on the ``.weights.h5`` suffix."""
    model: keras.Model

    def _build_network(self) -> None:
        with policy_scope(self.precision):  # bf16: Keras mixed_bfloat16 (layers compute in bf16, weights fp32)
            self.model = self.architecture.builder(self.framework)(self.config)
        self._predict_fn: Any = None

    def _apply_precision(self) -> None:
        """Rebuild the model under ``self.precision``'s policy with the same (float32) weights."""
        weights = self.model.get_weights()
        self._build_network()
        self.model.set_weights(weights)

    def _configure(self, spec: TrainSpec) -> None:
        configure_runtime(spec)
        self._tf_device = select_device(spec)

    def _steps(self, spec: TrainSpec) -> TfSteps:
        return TfSteps(self.model, spec, self.precision)

    def _device_kind(self) -> hardware.DeviceKind:
        return "cuda" if self._current_device().startswith("/GPU") else "cpu"

    def _native_precisions(self) -> tuple[str, ...]:
        return native_precisions(self._current_device())

    def _current_device(self) -> str:
        return getattr(self, "_tf_device", None) or self.device()

    def _forward(self, batch: FloatArray) -> FloatArray:
        if self._predict_fn is None:
            model = self.model
            shape = [None, None, None, None, int(model.input_shape[-1])]

            @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
            def predict(image: tf.Tensor) -> tf.Tensor:
                logits = heads(model(image, training=False))[0]  # the full-resolution head
                return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

            self._predict_fn = predict
        image = tf.convert_to_tensor(to_channels_last(batch))
        probs: FloatArray = to_channels_first(self._predict_fn(image).numpy()).astype(np.float32, copy=False)
        return probs

    def _probe(self, batch: FloatArray) -> dict[str, Any]:
        image = tf.convert_to_tensor(to_channels_last(batch))
        outputs: dict[str, Any] = {}
        for mode, training in (("training", True), ("inference", False)):
            logits = heads(self.model(image, training=training))[0]  # the full-resolution head
            array = np.asarray(tf.cast(logits, tf.float32))
            outputs[mode] = to_channels_first(array) if array.ndim == 5 else array
        return outputs

    def parameter_count(self) -> int:
        return int(sum(int(np.prod(v.shape)) for v in self.model.trainable_weights))

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def device(self) -> str:
        return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"

    def _save_weights(self, path: Path) -> None:
        def save_weights(tmp: Path) -> None:
            tmp.unlink()  # Keras refuses to overwrite the empty placeholder
            self.model.save_weights(str(tmp))

        write_atomic(path, save_weights, suffix=".weights.h5")

    def _load_weights(self, path: Path) -> None:
        if not path.is_file():
            raise DataError("weights file is missing", path=path, fix="save the segmenter again")
        try:
            stored = weights_layout(path)
        except OSError as exc:
            raise DataError(f"unreadable or corrupt weights file ({exc})", path=path) from exc
        with tempfile.TemporaryDirectory() as tmp:
            reference = Path(tmp) / "reference.weights.h5"
            self.model.save_weights(str(reference))
            expected = weights_layout(reference)
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


SEGMENTER = TfSegmenter
"""The class ``frameworks.segmenter_class('tf')`` returns."""
