"""PyTorch's part of training: runtime set-up, optimizer and the ``TrainSteps`` that ``bench.training.loop`` drives.

Everything else about training (epochs, validation Dice, plateau, early stopping, best weights) is in the
framework-neutral ``bench.training.loop``.

Precision: ``bf16`` and ``fp16`` run the network's forward under ``torch.autocast`` (convolutions in the low
precision, weights and optimizer state float32); the loss is computed in float32 from ``logits.float()``,
outside the autocast region, and so are softmax and the confusion counts. ``fp16`` (CUDA) scales the loss
with ``torch.amp.GradScaler`` (a step whose gradients overflow is skipped and the scale halved). Measured
(``make bench``, 1 thread, 32³, batch 8, channels-last, AVX-512 BF16/AMX CPU): U-Net base 16 28.2 -> 56.8
patches/s (2.0×), quick-profile U-Net 58 -> 92, paper-width U-Net 7.9 -> 23.4.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from adapters.torch.losses import LossFn, deep_supervised, make_loss
from bench import hardware
from bench.contract import OptimizerSpec, PatchBatch, TrainSpec
from bench.errors import ConfigError

MEMORY_FORMAT = torch.channels_last_3d
"""Layout of 5-D tensors (weights and activations): channels-last (NDHWC). oneDNN's 3D convolutions run
1.3-1.8x faster in it than in NCDHW on this CPU (1 thread, 32^3 patches, quick-profile U-Net, V-Net and
NeuroNet, training and inference; ``benchmarks/bench_training.py`` times it). Results change only by float
rounding; the numpy interface stays ``[B, C, X, Y, Z]``."""


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each low precision (``fp32`` runs without autocast)."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context the forward pass runs in: nothing for ``fp32``, ``torch.autocast`` to bf16/fp16 otherwise."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def native_precisions(device: torch.device) -> tuple[str, ...]:
    """What ``device`` runs natively: a CUDA GPU by its compute capability, the CPU by its flags."""
    if device.type == "cuda":
        return hardware.cuda_native_precisions(tuple(torch.cuda.get_device_capability(device)))  # type: ignore[arg-type]
    return hardware.cpu_native_precisions()


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """Move ``net`` to ``device`` in ``MEMORY_FORMAT`` (in place; returned for chaining)."""
    return net.to(device=device, memory_format=MEMORY_FORMAT)  # type: ignore[call-overload, no-any-return]


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[B, C, X, Y, Z]`` numpy -> float32 tensor on ``device`` in ``MEMORY_FORMAT``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device, non_blocking=True)
    return tensor.contiguous(memory_format=MEMORY_FORMAT)


def pinned(array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """A copy of ``array`` as ``dtype`` in pinned (page-locked) host memory (CUDA only): a copy from it to the
    GPU with ``non_blocking=True`` returns at once and runs while the host goes on queueing work."""
    tensor = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
    out = tensor.numpy()  # a view that keeps the pinned tensor alive
    out[...] = array
    return out


def to_tensors(batch: PatchBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A numpy batch as (float32 image in ``MEMORY_FORMAT``, int64 label) tensors on ``device`` (asynchronous
    from pinned memory, see ``TorchSteps.stage``)."""
    label = torch.from_numpy(np.ascontiguousarray(batch.label, dtype=np.int64))
    return image_tensor(batch.image, device), label.to(device, non_blocking=True)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_runtime(spec: TrainSpec) -> torch.device:
    """Apply seeds, determinism and thread count from ``spec``; return the device to train on.

    Determinism (``torch.use_deterministic_algorithms(..., warn_only=True)``, cuDNN autotuning off, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set) and the thread count are process-wide settings in torch;
    unlike TF's, torch's determinism can be switched off again in the same process. The device is CUDA when present and ``spec.device != "cpu"``, else CPU.
    """
    seed_everything(spec.seed)
    if spec.deterministic:  # cuBLAS is deterministic only with this workspace (read when its handle is made)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not spec.deterministic
    configure_threads(spec.num_threads)
    if spec.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if spec.device == "cuda":
        raise ConfigError(f"train.device=cuda but torch {torch.__version__} sees no CUDA device",
                          fix="install its CUDA build (make install DEVICE=cuda), or use profile.device=auto or cpu")
    return torch.device("cpu")


def configure_threads(num_threads: int) -> None:
    """Use ``num_threads`` CPU threads for torch ops (0: every core this process may use)."""
    torch.set_num_threads(num_threads or available_cores())


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_optimizer(params: Iterator[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimizer named by ``spec`` with every hyperparameter passed explicitly.

    Adam's ``weight_decay`` is torch's L2 penalty added to the gradient (the TF adapter adds the same).
    Keras Adam adds epsilon to ``sqrt(v)`` before bias correction ("epsilon hat"); torch adds it after, so
    the two agree exactly only once ``beta2**t`` is negligible. SGD momentum multiplies the learning rate
    after accumulating (torch) rather than before (Keras): identical while the learning rate is constant.
    """
    if spec.name == "adam":
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay, amsgrad=False
        )
    if spec.name == "adadelta":
        return torch.optim.Adadelta(params, lr=spec.lr, rho=spec.rho, eps=spec.eps, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, dampening=0.0, weight_decay=spec.weight_decay, nesterov=False,
    )


def gradients_finite(net: nn.Module) -> bool:
    """True when every parameter gradient of ``net`` is finite (no NaN, no inf); one device sync."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class TorchSteps:
    """``bench.training.loop.TrainSteps`` for a torch module on ``device``, its forward in ``precision``.

    ``precision`` must be concrete (``fp32``, ``bf16``, ``fp16``); the segmenter checks that the device runs it.
    """

    def __init__(self, net: nn.Module, spec: TrainSpec, device: torch.device, precision: str = "fp32") -> None:
        self.net, self.device, self.precision = net, device, precision
        self.loss_fn: LossFn = make_loss(spec.loss)
        self.optimizer = make_optimizer(net.parameters(), spec.optimizer)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.skipped_steps = 0
        """Updates skipped because a gradient was not finite (the loss was); fp16's scaler skips its own."""

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The network's float32 logits, its forward run in ``self.precision``."""
        with autocast(self.device, self.precision):
            logits = self.net(image)
        return logits.float()

    def head_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Every head's float32 logits (full resolution first): one unless the network has deep supervision."""
        if not getattr(self.net, "deep_supervision", 0):
            return [self.logits(image)]
        with autocast(self.device, self.precision):
            heads = self.net.forward_heads(image)  # type: ignore[operator]
        return [logits.float() for logits in heads]

    def stage(self, batch: PatchBatch) -> PatchBatch:
        """On CUDA the batch copied into pinned host memory (run in the prefetch thread, so that the step's
        copy to the GPU is asynchronous and the host copy is off the step's path); on the CPU the batch itself."""
        if self.device.type != "cuda":
            return batch
        return PatchBatch(image=pinned(batch.image, np.float32), label=pinned(batch.label, np.int64))

    def train_step(self, batch: PatchBatch) -> float:
        self.net.train()
        image, label = to_tensors(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = deep_supervised(self.loss_fn, self.head_logits(image), label)
        value = float(loss.item())
        if not np.isfinite(value):  # the loop stops on a non-finite loss: do not apply its update
            return value
        if self.scaler is None:
            loss.backward()
            if not gradients_finite(self.net):  # e.g. a low-precision kernel's NaN: skip, as a scaler would
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                return value
            self.optimizer.step()
        else:  # fp16: scaled backward; the step is skipped (and the scale halved) if a gradient overflowed
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return value

    @torch.inference_mode()
    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        self.net.eval()
        image, label = to_tensors(batch, self.device)
        logits = self.logits(image)
        classes = logits.shape[1]
        pairs = (label * classes + logits.argmax(dim=1)).flatten()
        confusion = torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)
        return float(self.loss_fn(logits, label).item()), confusion.cpu().numpy()

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A detached copy of the network's parameters and buffers."""
        return {name: value.detach().clone() for name, value in self.net.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)
