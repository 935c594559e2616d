"""TensorFlow / Keras 3 adapter: the three networks behind bench's ``Segmenter`` protocol.

Importing this package (which every module of the adapter does first) sets four environment variables
unless the user has already set them; they only work if TensorFlow and Keras are not imported yet:
``KERAS_BACKEND=tensorflow``, ``TF_CPP_MIN_LOG_LEVEL=2`` (quiet C++ logs), ``TF_ENABLE_ONEDNN_OPTS=1``
(oneDNN CPU kernels: this TF 2.21 CPU wheel leaves them off, and 3D convolutions train about 10x slower
without them) and ``TF_FORCE_GPU_ALLOW_GROWTH=true`` (TensorFlow takes GPU memory as it needs it instead of
all of it at start-up, so that runs can share a GPU: ``hydra.launcher.n_jobs`` above the GPU count, Ray's
``num_gpus: 0.5``).

Networks run channels-last internally (``[B, X, Y, Z, C]``); arrays cross the adapter boundary
channels-first (``[B, C, X, Y, Z]``) as everywhere in brainbench. The two helpers below are the only place
the axes are moved, used by the training loop and by ``TfSegmenter.predict_patches`` alike.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
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
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # GPU memory on demand: runs can share a GPU

_SEVERITY = "IWEF"  # absl/glog line prefixes, in TF_CPP_MIN_LOG_LEVEL order (0 INFO ... 3 FATAL)
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _kept_import_lines(captured: str, min_level: int) -> list[str]:
    """The lines TensorFlow printed on import that ``TF_CPP_MIN_LOG_LEVEL`` lets through.

    TF 2.19+ logs through absl before absl is initialised, and those early lines ignore the variable
    (tensorflow/tensorflow#100442): ``I…] oneDNN custom operations are on`` on every import. Lines with a
    severity prefix are kept when their severity reaches ``min_level``; anything else is kept as printed.
    """
    kept = []
    for line in captured.splitlines():
        if line.strip() == _ABSL_PREAMBLE:
            continue
        tagged = re.match(r"([IWEF])\d{4} ", line)
        if tagged is None or _SEVERITY.index(tagged.group(1)) >= min_level:
            kept.append(line)
    return kept


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow once with its C++ stderr filtered by ``TF_CPP_MIN_LOG_LEVEL``.

    The process's file descriptor 2 is captured for the import only; what the level allows is written
    back to stderr, and an import error still propagates (its traceback is printed after the restore).
    """
    try:
        min_level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        min_level = 0
    if min_level <= 0 or "tensorflow" in sys.modules:
        import tensorflow
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = _kept_import_lines(captured.read().decode(errors="replace"), min_level)
            if lines:
                print("\n".join(lines), file=sys.stderr)


_import_tensorflow_quietly()


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
