"""``TorchSegmenter``: one PyTorch network behind bench's ``Segmenter`` protocol (numpy in, numpy out).

Example:
    >>> seg = TorchSegmenter.build("unet3d", base_filters=8, depth=3)
    >>> seg.predict_patches(np.zeros((1, 1, 16, 16, 16), np.float32)).shape
    (1, 4, 16, 16, 16)
"""

from __future__ import annotations

import inspect
import json
import platform
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from adapters import META_FILE
from adapters.torch.nets import count_parameters
from adapters.torch.nets.neuronet import NeuroNet
from adapters.torch.nets.unet3d import UNet3D
from adapters.torch.nets.vnet import VNet
from adapters.torch.training import image_tensor, place, seed_everything, train_network
from bench.contract import PatchSource, RunLogger, TrainHistory, TrainSpec
from bench.errors import ConfigError, DataError
from bench.io import write_atomic, write_text_atomic
from bench.types import FloatArray

NETWORKS: dict[str, type[nn.Module]] = {"unet3d": UNet3D, "vnet": VNet, "neuronet": NeuroNet}
WEIGHTS_FILE = "weights.pt"


def network_params(architecture: str, params: dict[str, Any]) -> dict[str, Any]:
    """All constructor arguments of ``architecture`` (defaults filled in, lists as tuples).

    Raises:
        ConfigError: Unknown architecture or parameter name.
    """
    if architecture not in NETWORKS:
        raise ConfigError(
            f"model architecture={architecture!r} is unknown", fix=f"use one of {', '.join(NETWORKS)}"
        )
    signature = inspect.signature(NETWORKS[architecture])
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        raise ConfigError(
            f"{architecture} has no parameter {', '.join(map(repr, unknown))}",
            fix=f"use some of {', '.join(signature.parameters)}",
        )
    bound = signature.bind(**params)
    bound.apply_defaults()
    return {k: tuple(v) if isinstance(v, list) else v for k, v in bound.arguments.items()}


class TorchSegmenter:
    """A PyTorch network that trains on and predicts numpy patches.

    A freshly built segmenter is re-initialised from ``spec.seed`` at the start of its first ``fit``, so a
    fit is reproducible from its spec; later fits (and fits after ``load``) continue from the current
    weights.

    Attributes:
        name: Architecture (``unet3d``, ``vnet`` or ``neuronet``).
        framework: ``"torch"``.
        params: All constructor arguments of the network.
        net: The ``torch.nn.Module``.
    """

    framework = "torch"

    def __init__(self, architecture: str, params: dict[str, Any], trained: bool = False) -> None:
        self.name = architecture
        self.params = network_params(architecture, params)
        self.net: nn.Module = place(NETWORKS[architecture](**self.params), torch.device("cpu"))
        self._trained = trained

    @classmethod
    def build(cls, architecture: str, **params: Any) -> Self:
        """An untrained segmenter; ConfigError names an unknown architecture or parameter or a bad value."""
        return cls(architecture, params)

    def check_patch_size(self, patch_size: tuple[int, ...]) -> None:
        """ConfigError unless the network accepts patches of this ``(x, y, z)`` size."""
        self.net.check_patch_size(patch_size)  # type: ignore[operator]

    def fit(
        self, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger
    ) -> TrainHistory:
        """Train on ``train`` (validate on ``val``); the best weights are kept. See ``training``."""
        self.check_patch_size(train.patch_size)
        if val is not None:
            self.check_patch_size(val.patch_size)
        if not self._trained:
            seed_everything(spec.seed)
            self.net = NETWORKS[self.name](**self.params)
        history = train_network(self.net, train, val, spec, log)
        self._trained = True
        return history

    def predict_patches(self, batch: FloatArray) -> FloatArray:
        """``float32[B, C, X, Y, Z]`` -> softmax ``float32[B, K, X, Y, Z]`` (eval mode, one forward pass)."""
        in_channels = self.params["in_channels"]
        if batch.ndim != 5 or batch.shape[1] != in_channels:
            raise ConfigError(
                f"{self.name}: batch of shape {batch.shape} is not [B, {in_channels}, X, Y, Z]"
            )
        self.check_patch_size(batch.shape[2:])
        device = next(self.net.parameters()).device
        if self.net.training:  # eval() walks every module: ~0.3 ms a call, once per batch adds up
            self.net.eval()
        with torch.inference_mode():
            image = image_tensor(batch, device)
            probabilities = torch.softmax(self.net(image), dim=1)
        return probabilities.cpu().contiguous().numpy()

    def save(self, directory: Path) -> None:
        """Write ``weights.pt`` (state dict) then ``segmenter.json``, each atomically (temp + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        weights = directory / WEIGHTS_FILE
        write_atomic(weights, lambda tmp: torch.save(state, tmp))
        meta = {
            "framework": self.framework,
            "architecture": self.name,
            "params": self.params,
            "versions": {"torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        meta_path = directory / META_FILE
        write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild from ``segmenter.json`` and load ``weights.pt`` (``weights_only=True``: no code runs).

        Raises:
            DataError: Missing or corrupt files, another framework, or weights of another architecture.
        """
        directory = Path(directory)
        architecture, params = read_meta(directory / META_FILE)
        try:
            segmenter = cls(architecture, params, trained=True)
        except ConfigError as exc:
            raise DataError(f"saved parameters are invalid: {exc.problem}", path=directory / META_FILE) from exc
        segmenter.net.load_state_dict(read_state(directory / WEIGHTS_FILE, segmenter))
        return segmenter

    def describe(self) -> dict[str, Any]:
        """Architecture, framework, constructor parameters, trainable parameter count, torch version, device."""
        return {
            "architecture": self.name,
            "framework": self.framework,
            "params": dict(self.params),
            "trainable_parameters": self.parameter_count(),
            "framework_version": torch.__version__,
            "device": str(next(self.net.parameters()).device),
        }

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return count_parameters(self.net)


def read_meta(path: Path) -> tuple[str, dict[str, Any]]:
    """(architecture, params) from a ``segmenter.json`` written by ``save``; DataError naming it otherwise."""
    try:
        meta = json.loads(path.read_text())
        framework, architecture, params = meta["framework"], meta["architecture"], meta["params"]
    except FileNotFoundError as exc:
        raise DataError("no saved segmenter here (file missing)", path=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"corrupt segmenter metadata ({exc})", path=path) from exc
    if framework != "torch":
        raise DataError(f"framework={framework!r}, not a PyTorch segmenter", path=path,
                        fix="load it with adapters.load(directory)")
    if architecture not in NETWORKS or not isinstance(params, dict):
        raise DataError(f"unknown architecture={architecture!r} or malformed params", path=path)
    return architecture, params


def read_state(path: Path, segmenter: TorchSegmenter) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` that fits ``segmenter.net`` exactly; DataError naming the file otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise DataError("weights file missing", path=path) from exc
    except Exception as exc:  # torch raises many types for a damaged file (RuntimeError, UnpicklingError, ...)
        raise DataError(f"corrupt or unreadable weights file ({type(exc).__name__}: {exc})", path=path) from exc
    expected = segmenter.net.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError("weights file does not hold a state dict of tensors", path=path)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise DataError(
            f"weights do not match {segmenter.name} with params {segmenter.params} ({detail})", path=path,
            fix="load the directory the weights were saved with, or rebuild with the same parameters",
        )
    return state
