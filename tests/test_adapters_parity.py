"""PyTorch vs TensorFlow adapters: the same networks, losses, train and eval steps, schedules and batches.

Skipped unless both adapters import. The strongest check copies the torch weights into the Keras model
and asks for the same probabilities: that pins down every layer, padding and normalisation convention.
The optimizer checks drive each framework's real ``TrainSteps`` (what ``bench.training.loop`` drives).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("adapters.tf.segmenter")  # before tensorflow itself: adapters.tf sets TF's environment
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytest.importorskip("adapters.torch.segmenter")

from adapters.tf import to_channels_last  # noqa: E402
from adapters.tf.losses import make_loss as tf_make_loss  # noqa: E402
from adapters.tf.segmenter import TfSegmenter  # noqa: E402
from adapters.tf.steps import TfSteps  # noqa: E402
from adapters.torch.layers import InstanceLayerNorm3d  # noqa: E402
from adapters.torch.losses import make_loss as torch_make_loss  # noqa: E402
from adapters.torch.segmenter import TorchSegmenter  # noqa: E402
from adapters.torch.steps import TorchSteps  # noqa: E402
from bench.contract import (  # noqa: E402
    EarlyStoppingSpec,
    LossSpec,
    NullLogger,
    OptimizerSpec,
    PatchBatch,
    SchedulerSpec,
    TrainSpec,
)
from bench.training import frameworks  # noqa: E402
from bench.training.loop import Plateau  # noqa: E402

nn = torch.nn

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("unet3d", {}),
    ("vnet", {}),
    ("neuronet", {}),
    ("unet3d", {"base_filters": 64}),
    ("unet3d", {"base_filters": 8, "depth": 3, "convs_per_level": 2, "skip": "concat", "norm": "batch"}),
    ("unet3d", {"in_channels": 2, "num_classes": 3, "base_filters": 4, "norm": "instance", "dropout": 0.3}),
    ("unet3d", {"base_filters": 4, "depth": 5, "skip": "concat", "dropout": 0.5}),
    ("unet3d", {"base_filters": 8, "block": "residual"}),
    ("unet3d", {"base_filters": 4, "depth": 3, "convs_per_level": 2, "skip": "concat", "norm": "instance",
                "block": "residual", "deep_supervision": 1}),
    ("unet3d", {"in_channels": 2, "base_filters": 4, "depth": 5, "deep_supervision": 3}),
    ("vnet", {"widths": (8, 16, 32), "convs": (2, 1, 3), "kernel_size": 3}),
    ("vnet", {"in_channels": 3, "num_classes": 2, "kernel_size": 4}),
    ("neuronet", {"filters": (8, 16, 32), "strides": (1, 2, 1), "units_per_scale": 3, "norm": "none"}),
    ("neuronet", {"norm": "instance", "num_classes": 2}),
    ("unet3d", {"base_filters": 4, "depth": 3, "norm": "instance_layer"}),
    ("neuronet", {"filters": (4, 8), "strides": (1, 2), "norm": "instance_layer"}),
]

SMALL: dict[str, dict[str, Any]] = {
    "unet3d": {"base_filters": 2, "depth": 4},
    "vnet": {"widths": (2, 4, 8, 16), "convs": (1, 2, 1, 1), "kernel_size": 3},
    "neuronet": {"filters": (2, 4, 8, 16), "units_per_scale": 1},
}


# --- copying torch weights into the Keras model -----------------------------------------------------------


def torch_layers_in_call_order(net: Any, batch: np.ndarray) -> list[Any]:
    """Leaf modules holding parameters or buffers, in the order a forward pass first calls them."""
    order: list[Any] = []
    leaves = [m for m in net.modules()
              if not list(m.children()) and (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)))]
    hooks = [m.register_forward_hook(lambda module, inputs, output: order.append(module)) for m in leaves]
    try:
        with torch.no_grad():
            net.eval()
            forward = net.forward_heads if getattr(net, "deep_supervision", 0) else net  # every head is called
            forward(torch.from_numpy(batch))
    finally:
        for hook in hooks:
            hook.remove()
    unique: list[Any] = []
    for module in order:
        if not any(module is seen for seen in unique):
            unique.append(module)
    return unique


def keras_arrays(module: Any) -> list[np.ndarray]:
    """A torch layer's tensors in the order and layout of the matching Keras layer's weights."""
    def array(t: Any) -> np.ndarray:
        return np.asarray(t.detach().cpu().numpy(), dtype=np.float32)

    if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):  # [out|in, in|out, x, y, z] -> [x, y, z, ., .]
        return [array(module.weight).transpose(2, 3, 4, 1, 0), array(module.bias)]
    if isinstance(module, nn.PReLU):
        return [array(module.weight).reshape(1, 1, 1, -1)]
    if isinstance(module, nn.BatchNorm3d):
        return [array(module.weight), array(module.bias), array(module.running_mean), array(module.running_var)]
    if isinstance(module, nn.InstanceNorm3d):
        return [array(module.weight), array(module.bias)]
    if isinstance(module, InstanceLayerNorm3d):
        return [array(module.weight), array(module.bias), array(module.rho)]
    raise TypeError(f"no Keras counterpart known for {module}")


def layer_pairs(torch_seg: TorchSegmenter, tf_seg: TfSegmenter, batch: np.ndarray) -> list[tuple[Any, Any]]:
    modules = torch_layers_in_call_order(torch_seg.net, batch)
    layers = [layer for layer in tf_seg.model.layers if layer.weights]
    assert len(modules) == len(layers), (len(modules), len(layers))
    return list(zip(modules, layers, strict=True))


def copy_torch_into_keras(torch_seg: TorchSegmenter, tf_seg: TfSegmenter, batch: np.ndarray) -> None:
    for module, layer in layer_pairs(torch_seg, tf_seg, batch):
        arrays = keras_arrays(module)
        assert [a.shape for a in arrays] == [tuple(w.shape) for w in layer.weights], (module, layer.name)
        layer.set_weights(arrays)


def randomise_torch(seg: TorchSegmenter, seed: int) -> None:
    """Non-default norm scales, shifts, running statistics and PReLU slopes, so they are tested too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in seg.net.modules():
            if isinstance(module, nn.BatchNorm3d | nn.InstanceNorm3d | nn.PReLU | InstanceLayerNorm3d):
                for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                    if tensor.is_floating_point():
                        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            if isinstance(module, InstanceLayerNorm3d):  # IN shares inside (0, 1), so both parts count
                module.rho.copy_(0.1 + 0.8 * torch.rand(module.rho.shape, generator=generator))


def pair(architecture: str, params: dict[str, Any], batch: np.ndarray) -> tuple[TorchSegmenter, TfSegmenter]:
    torch.manual_seed(0)
    torch_seg = TorchSegmenter.build(architecture, **params)
    randomise_torch(torch_seg, 1)
    tf_seg = TfSegmenter.build(architecture, **params)
    copy_torch_into_keras(torch_seg, tf_seg, batch)
    return torch_seg, tf_seg


def max_weight_difference(torch_seg: TorchSegmenter, tf_seg: TfSegmenter, batch: np.ndarray) -> float:
    """The largest difference between a torch weight and its Keras counterpart (in Keras layout)."""
    return max(
        float(np.abs(actual - expected).max())
        for module, layer in layer_pairs(torch_seg, tf_seg, batch)
        for expected, actual in zip(keras_arrays(module), layer.get_weights(), strict=True)
    )


# --- the same networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("architecture", "params"), VARIANTS)
def test_trainable_parameter_counts_are_equal(architecture: str, params: dict[str, Any]) -> None:
    torch_count = frameworks.build(architecture, "torch", **params).parameter_count()  # type: ignore[attr-defined]
    tf_count = frameworks.build(architecture, "tf", **params).parameter_count()  # type: ignore[attr-defined]
    assert torch_count == tf_count


@pytest.mark.parametrize("architecture", list(SMALL))
def test_output_shapes_are_equal(architecture: str) -> None:
    torch_seg = TorchSegmenter.build(architecture, **SMALL[architecture])
    tf_seg = TfSegmenter.build(architecture, **SMALL[architecture])
    rng = np.random.default_rng(0)
    for patch in [(32, 32, 32), (48, 48, 48), (64, 64, 64), (16, 32, 48)]:
        batch = rng.normal(size=(1, 1, *patch)).astype(np.float32)
        assert torch_seg.predict_patches(batch).shape == tf_seg.predict_patches(batch).shape == (1, 4, *patch)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize(
    ("architecture", "params", "patch"),
    [
        ("unet3d", {"base_filters": 4, "depth": 3}, (16, 24, 32)),
        ("unet3d", {"in_channels": 2, "base_filters": 4, "depth": 3, "convs_per_level": 2, "skip": "concat",
                    "norm": "instance", "dropout": 0.3}, (16, 8, 24)),
        ("unet3d", {"base_filters": 4, "depth": 2, "norm": "batch"}, (8, 16, 12)),
        ("unet3d", {"base_filters": 4, "depth": 3, "norm": "instance", "block": "residual"}, (16, 8, 12)),
        ("unet3d", {"in_channels": 2, "base_filters": 4, "depth": 4, "convs_per_level": 2, "skip": "concat",
                    "block": "residual", "deep_supervision": 2}, (16, 8, 24)),
        ("vnet", {"widths": (4, 8, 16), "convs": (1, 2, 2), "kernel_size": 5}, (16, 12, 8)),
        ("vnet", {"widths": (4, 8), "convs": (2, 1), "kernel_size": 4}, (8, 10, 12)),  # even kernel: "same"
        ("neuronet", {"filters": (4, 8, 16), "strides": (1, 2, 2)}, (16, 8, 12)),  # batch norm
        ("neuronet", {"filters": (4, 8), "strides": (1, 3), "norm": "instance"}, (9, 12, 6)),
        ("unet3d", {"base_filters": 4, "depth": 3, "norm": "instance_layer", "block": "residual"}, (16, 8, 12)),
        ("neuronet", {"filters": (4, 8), "strides": (1, 2), "norm": "instance_layer"}, (8, 12, 6)),
    ],
)
def test_same_weights_give_the_same_probabilities(architecture: str, params: dict[str, Any],
                                                  patch: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(2, params.get("in_channels", 1), *patch)).astype(np.float32)
    torch_seg, tf_seg = pair(architecture, params, batch)
    np.testing.assert_allclose(tf_seg.predict_patches(batch), torch_seg.predict_patches(batch), atol=2e-5)


# --- the same losses, train steps and eval steps ---------------------------------------------------------


@pytest.mark.parametrize("spec", [LossSpec(name="dice"), LossSpec(name="dice", smooth=1.0), LossSpec(name="ce"),
                                  LossSpec(name="dice_ce", dice_weight=0.3, ce_weight=2.0),
                                  LossSpec(name="dice", dice_reduction="batch")])
def test_losses_agree(spec: LossSpec) -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 4, size=(3, 4, 8, 6, 5)).astype(np.float32)  # channels-first, as at the boundary
    labels = rng.integers(0, 4, size=(3, 8, 6, 5))
    labels[2][labels[2] == 1] = 0  # a class absent from one sample
    torch_value = torch_make_loss(spec)(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    tf_value = float(tf_make_loss(spec)(tf.constant(to_channels_last(logits)), tf.constant(labels)))
    assert tf_value == pytest.approx(torch_value, abs=1e-5)


@pytest.mark.parametrize(
    ("spec", "architecture", "params"),
    [
        (OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01),
         "unet3d", {"base_filters": 2, "depth": 2, "skip": "concat", "norm": "instance"}),
        (OptimizerSpec(name="adadelta", lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.001),
         "vnet", {"widths": (2, 4), "convs": (1, 2), "kernel_size": 3}),
        (OptimizerSpec(name="sgd", lr=0.1, momentum=0.9),  # instance-layer norm: rho is trained alike
         "unet3d", {"base_filters": 2, "depth": 2, "norm": "instance_layer"}),
        (OptimizerSpec(name="sgd", lr=0.1, momentum=0.0),  # deep supervision: the same weighted loss of 2 heads
         "unet3d", {"base_filters": 2, "depth": 3, "block": "residual", "norm": "instance", "deep_supervision": 1}),
        # Keras adds Adam's epsilon before the bias correction, torch after (adapters/tf/steps.py): with
        # eps=1e-8 that alone moves weights with gradients below ~1e-6 differently, so a tiny eps here
        (OptimizerSpec(name="adam", lr=1e-3, betas=(0.8, 0.99), eps=1e-12, weight_decay=0.01),
         "neuronet", {"filters": (2, 4), "strides": (1, 2), "units_per_scale": 1, "norm": "none"}),
    ],
)
def test_training_steps_from_the_same_weights_give_the_same_weights(
    spec: OptimizerSpec, architecture: str, params: dict[str, Any]
) -> None:
    rng = np.random.default_rng(11)
    image = rng.normal(size=(2, 1, 8, 8, 8)).astype(np.float32)
    label = rng.integers(0, 4, size=(2, 8, 8, 8))
    torch_seg, tf_seg = pair(architecture, params, image)
    assert max_weight_difference(torch_seg, tf_seg, image) == 0.0  # the copy is exact
    train = TrainSpec(optimizer=spec, loss=LossSpec(name="dice_ce"), progress=False)  # what the steps read
    torch_steps = TorchSteps(torch_seg.net, train, torch.device("cpu"))
    tf_steps = TfSteps(tf_seg.model, train)
    batch = PatchBatch(image, label)
    for _ in range(3):
        assert tf_steps.train_step(batch) == pytest.approx(torch_steps.train_step(batch), abs=1e-5)
    assert max_weight_difference(torch_seg, tf_seg, image) < 2e-5


@pytest.mark.parametrize(
    ("architecture", "params"),
    [("unet3d", {"base_filters": 4, "depth": 2, "norm": "batch"}),
     ("vnet", {"widths": (4, 8), "convs": (1, 1), "kernel_size": 3}),
     ("neuronet", {"filters": (4, 8), "strides": (1, 2), "units_per_scale": 1, "norm": "instance"})],
)
def test_eval_steps_give_the_same_loss_and_confusion(architecture: str, params: dict[str, Any]) -> None:
    rng = np.random.default_rng(13)
    batch = PatchBatch(rng.normal(size=(2, 1, 8, 8, 8)).astype(np.float32), rng.integers(0, 4, size=(2, 8, 8, 8)))
    torch_seg, tf_seg = pair(architecture, params, batch.image)
    with torch.no_grad():
        top2 = np.sort(torch_seg.net.eval()(torch.from_numpy(batch.image)).numpy(), axis=1)[:, -2:]
    # every voxel's two largest logits differ by far more than the frameworks do: the argmax cannot flip
    assert float((top2[:, 1] - top2[:, 0]).min()) > 1e-4
    spec = TrainSpec(loss=LossSpec(name="dice_ce"), progress=False)
    torch_loss, torch_confusion = TorchSteps(torch_seg.net, spec, torch.device("cpu")).eval_step(batch)
    tf_loss, tf_confusion = TfSteps(tf_seg.model, spec).eval_step(batch)
    assert tf_loss == pytest.approx(torch_loss, abs=1e-5)
    np.testing.assert_array_equal(tf_confusion, torch_confusion)
    assert tf_confusion.sum() == batch.label.size


def test_plateau_schedule_matches_torch_reduce_lr_on_plateau() -> None:
    """``bench.training.loop.Plateau`` (both frameworks' scheduler) against torch's own ReduceLROnPlateau."""
    rng = np.random.default_rng(5)
    values = list(np.cumsum(rng.normal(-0.01, 0.05, size=60)) + 5.0)
    spec = SchedulerSpec(factor=0.5, patience=2, min_lr=1e-3, threshold=1e-3)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=spec.factor, patience=spec.patience, threshold=spec.threshold,
        threshold_mode="rel", cooldown=0, min_lr=spec.min_lr)
    plateau, lr, ours, theirs = Plateau(spec), 0.1, [], []
    for value in values:
        scheduler.step(value)
        theirs.append(optimizer.param_groups[0]["lr"])
        lr = plateau.step(float(value), lr)
        ours.append(lr)
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert len(set(ours)) > 2  # the sequence really exercised the schedule


# --- the same batches -------------------------------------------------------------------------------------


class RecordingSource:
    """Random crops of one volume, seeded per epoch; remembers a digest of every batch handed out."""

    def __init__(self, steps: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.image = rng.normal(size=(16, 16, 16)).astype(np.float32)
        self.label = rng.integers(0, 4, size=(16, 16, 16))
        self.patch_size, self.batch_size, self.steps, self.seed = (8, 8, 8), 2, steps, seed
        self.seen: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        rng = np.random.default_rng((self.seed, epoch))
        for _ in range(self.steps):
            x, y, z = rng.integers(0, 9, size=3)
            image = self.image[None, None, x:x + 8, y:y + 8, z:z + 8].repeat(2, axis=0)
            label = self.label[None, x:x + 8, y:y + 8, z:z + 8].repeat(2, axis=0)
            self.seen.append((epoch, hashlib.sha1(image.tobytes() + label.tobytes()).hexdigest()))
            yield PatchBatch(np.ascontiguousarray(image), label)


def test_both_frameworks_consume_the_same_batches() -> None:
    spec = TrainSpec(epochs=3, steps_per_epoch=2, optimizer=OptimizerSpec(name="adam", lr=1e-3),
                     loss=LossSpec(name="dice"), scheduler=SchedulerSpec(factor=1.0),
                     early_stopping=EarlyStoppingSpec(patience=0), progress=False, seed=3)
    seen: dict[str, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {}
    epochs: dict[str, list[int]] = {}
    for framework in ("torch", "tf"):
        train, val = RecordingSource(steps=3, seed=1), RecordingSource(steps=2, seed=2)
        history = frameworks.build("unet3d", framework, base_filters=2, depth=2).fit(train, val, spec, NullLogger())
        seen[framework] = (train.seen, val.seen)
        epochs[framework] = [record.epoch for record in history.epochs]
    assert seen["torch"] == seen["tf"]
    train_seen, val_seen = seen["tf"]
    assert [epoch for epoch, _ in train_seen] == [0, 0, 1, 1, 2, 2]  # steps_per_epoch=2 of 3 batches
    assert [epoch for epoch, _ in val_seen] == [0, 0, 1, 1, 2, 2]
    assert epochs["torch"] == epochs["tf"] == [0, 1, 2]


class OptimizerLr:
    """Wraps a framework's ``TrainSteps``; records the lr its optimizer holds when each train step runs."""

    def __init__(self, steps: Any, read: Any) -> None:
        self.steps, self.read, self.seen = steps, read, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.steps, name)

    def train_step(self, batch: PatchBatch) -> float:
        self.seen.append(self.read())
        return float(self.steps.train_step(batch))


def test_both_frameworks_train_with_the_same_scheduled_lr_sequence() -> None:
    """Cosine with warm-up, per step: the optimizers of both frameworks hold the same lr at every step."""
    from bench.training.loop import fit

    scheduler = SchedulerSpec(kind="cosine", warmup_epochs=1, interval="step", min_lr=1e-4)
    spec = TrainSpec(epochs=3, steps_per_epoch=2, optimizer=OptimizerSpec(name="sgd", lr=0.05), scheduler=scheduler,
                     early_stopping=EarlyStoppingSpec(patience=0), progress=False)
    image = np.random.default_rng(0).normal(size=(2, 1, 8, 8, 8)).astype(np.float32)
    torch_seg, tf_seg = pair("unet3d", {"base_filters": 2, "depth": 2}, image)
    torch_steps = TorchSteps(torch_seg.net, spec, torch.device("cpu"))
    tf_steps = TfSteps(tf_seg.model, spec)
    recorded = {}
    for name, steps, read in (
        ("torch", torch_steps, lambda: torch_steps.optimizer.param_groups[0]["lr"]),
        ("tf", tf_steps, lambda: float(tf_steps.optimizer.learning_rate.numpy())),
    ):
        wrapped = OptimizerLr(steps, read)
        fit(wrapped, RecordingSource(steps=2, seed=1), None, spec, NullLogger())
        recorded[name] = wrapped.seen
    assert len(recorded["torch"]) == 6 and len(set(recorded["torch"])) == 6
    assert recorded["tf"] == pytest.approx(recorded["torch"], rel=1e-6)  # TF holds the lr as float32
