"""What TensorFlow sees on this machine, for ``bench env`` (``bench.training.frameworks.environment('tf')``).

Importing it runs ``adapters/tf/__init__.py`` first, which sets TensorFlow's environment variables
(``TF_FORCE_GPU_ALLOW_GROWTH`` among them) before TensorFlow starts."""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf

from bench import hardware


def describe() -> dict[str, Any]:
    """TensorFlow's version (and Keras's), build (``CUDA 12.5.1`` or ``CPU only``), the devices it can train on
    with the precisions each runs natively (``bench.hardware``'s rule), and its thread settings in this process
    (0: TensorFlow's default, every core)."""
    devices: list[dict[str, Any]] = [{"name": "/CPU:0", "model": hardware.cpu_model(),
                                      "native": list(hardware.cpu_native_precisions())}]
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        capability = tuple(int(part) for part in details.get("compute_capability", (0, 0)))
        devices.append({"name": f"/GPU:{index}", "model": str(details.get("device_name", gpu.name)),
                        "native": list(hardware.cuda_native_precisions((capability[0], capability[1])))})
    build = tf.sysconfig.get_build_info()
    cuda = build.get("cuda_version") if build.get("is_cuda_build") else None
    threading = tf.config.threading
    return {"version": tf.__version__, "keras": keras.__version__, "build": f"CUDA {cuda}" if cuda else "CPU only",
            "devices": devices, "memory_growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", ""),
            "threads": {"intra_op": threading.get_intra_op_parallelism_threads(),
                        "inter_op": threading.get_inter_op_parallelism_threads()}}
