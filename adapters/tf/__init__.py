"""TensorFlow / Keras 3 adapter: the three networks behind bench's ``Segmenter`` protocol.

Importing this package (which every module of the adapter does first) sets three environment variables
unless the user has already set them; they only work if TensorFlow and Keras are not imported yet:
``KERAS_BACKEND=tensorflow``, ``TF_CPP_MIN_LOG_LEVEL=2`` (quiet C++ logs) and ``TF_ENABLE_ONEDNN_OPTS=1``
(oneDNN CPU kernels: this TF 2.21 CPU wheel leaves them off, and 3D convolutions train about 10x slower
without them).

Networks run channels-last internally (``[B, X, Y, Z, C]``); arrays cross the adapter boundary
channels-first (``[B, C, X, Y, Z]``) as everywhere in brainbench. The two helpers below are the only place
the axes are moved, used by the training loop and by ``TfSegmenter.predict_patches`` alike.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

if "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
    warnings.warn(
        "tensorflow was imported before adapters.tf, so its oneDNN CPU kernels may be off (3D convolutions "
        "then train about 10x slower); import adapters.tf first or set TF_ENABLE_ONEDNN_OPTS=1",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def to_channels_last(array: np.ndarray) -> np.ndarray:
    """``[B, C, X, Y, Z]`` -> contiguous ``[B, X, Y, Z, C]`` (same dtype)."""
    if array.ndim != 5:
        raise ValueError(f"expected a [B, C, X, Y, Z] array, got shape {array.shape}")
    return np.ascontiguousarray(np.moveaxis(array, 1, -1))


def to_channels_first(array: np.ndarray) -> np.ndarray:
    """``[B, X, Y, Z, C]`` -> contiguous ``[B, C, X, Y, Z]`` (same dtype)."""
    if array.ndim != 5:
        raise ValueError(f"expected a [B, X, Y, Z, C] array, got shape {array.shape}")
    return np.ascontiguousarray(np.moveaxis(array, -1, 1))
