"""``TorchSegmenter``: the PyTorch hooks of ``bench.training.segmenter.NetSegmenter`` (numpy in, numpy out).

Example:
    >>> seg = TorchSegmenter.build("unet3d", base_filters=8, depth=3)
    >>> seg.predict_patches(np.zeros((1, 1, 16, 16, 16), np.float32)).shape
    (1, 4, 16, 16, 16)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapters.torch.steps import (
    TorchSteps,
    autocast,
    configure_runtime,
    image_tensor,
    native_precisions,
    place,
)
from bench import hardware
from bench.contract import TrainSpec
from bench.errors import DataError
from bench.io import write_atomic
from bench.training.segmenter import NetSegmenter
from bench.types import FloatArray


class TorchSegmenter(NetSegmenter):
    """A PyTorch network that trains on and predicts numpy patches (``net``: the ``torch.nn.Module``)."""

    framework = "torch"
    weights_file = "weights.pt"
    net: nn.Module

    def _build_network(self) -> None:
        device = next(self.net.parameters()).device if hasattr(self, "net") else torch.device("cpu")
        self.net = place(self.architecture.builder(self.framework)(self.config), device)

    def _configure(self, spec: TrainSpec) -> None:
        self._device = configure_runtime(spec)
        place(self.net, self._device)

    def _steps(self, spec: TrainSpec) -> TorchSteps:
        return TorchSteps(self.net, spec, self._device, self.precision)

    def _device_kind(self) -> hardware.DeviceKind:
        return "cuda" if self._net_device().type == "cuda" else "cpu"

    def _native_precisions(self) -> tuple[str, ...]:
        return native_precisions(self._net_device())

    def _net_device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _forward(self, batch: FloatArray) -> FloatArray:
        device = self._net_device()
        if self.net.training:  # eval() walks every module: ~0.3 ms a call, once per batch adds up
            self.net.eval()
        with torch.inference_mode():
            with autocast(device, self.precision):
                logits = self.net(image_tensor(batch, device))
            probabilities = torch.softmax(logits.float(), dim=1)  # softmax in float32 whatever the forward ran in
        return probabilities.cpu().contiguous().numpy()

    def _probe(self, batch: FloatArray) -> dict[str, Any]:
        device = self._net_device()
        image = image_tensor(batch, device)
        outputs: dict[str, Any] = {}
        with torch.no_grad():
            for mode, training in (("training", True), ("inference", False)):
                self.net.train(training)
                with autocast(device, self.precision):
                    logits = self.net(image)
                outputs[mode] = (logits.float().cpu().numpy() if isinstance(logits, torch.Tensor)
                                 else f"a {type(logits).__name__}")
        return outputs

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device(self) -> str:
        return str(self._net_device())

    def _save_weights(self, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    def _load_weights(self, path: Path) -> None:
        """Load ``weights.pt`` (``weights_only=True``: no code runs) if it fits the network exactly."""
        self.net.load_state_dict(read_state(path, self))


def read_state(path: Path, segmenter: TorchSegmenter) -> dict[str, Any]:
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


SEGMENTER = TorchSegmenter
"""The class ``frameworks.segmenter_class('torch')`` returns."""
