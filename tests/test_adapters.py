"""Tests of the adapters' networks, each written once (``bench.networks.configs`` and ``bench.networks.registry`` without a
framework: ``test_registry.py``).

- ``bench.training.loop`` with both frameworks' real steps: early stopping, plateau, non-finite checks and best
  weights (the loop with stand-in steps is ``test_loop.py``).
- The segmenters, parametrised by framework (``torch``, ``tf``): shapes, parameter counts against the shared
  spec, losses against a numpy oracle, save/load, learning, seeding, scheduler, early stopping.
- Framework-specific only where the behaviour is: optimizer hyperparameter mapping (torch / Keras), thread
  settings (TF's pools need a fresh process), the channel moves of ``adapters.tf``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from adapter_helpers import (
    ARCHITECTURES,
    CONFIGS,
    COUNTERS,
    DEFAULT_COUNTS,
    FRAMEWORKS,
    TINY,
    CropSource,
    RecordingLogger,
    foreground_dice,
    neuronet_count,
    np_ce_loss,
    quick_spec,
    spheres,
    unet3d_count,
    vnet_count,
)

from bench.contract import (
    EarlyStoppingSpec,
    LossName,
    LossSpec,
    NullLogger,
    OptimizerSpec,
    PatchBatch,
    SchedulerSpec,
    Segmenter,
    TrainSpec,
)
from bench.errors import BenchError, ConfigError, DataError
from bench.networks import registry
from bench.networks.configs import NetConfig, UNet3DConfig
from bench.training import frameworks, loop

WEIGHTS_MISMATCH = {"torch": "do not match", "tf": "do not fit"}
CPU_DEVICE = {"torch": "cpu", "tf": "/CPU:0"}
VERSION_KEY = {"torch": "torch", "tf": "tensorflow"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: much faster than two on a shared, loaded 2-core machine (torch fits set it too)."""
    try:
        import torch
    except ImportError:  # the TF half still runs
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    """Each framework in turn (skipped where it is not installed); ``adapters.tf`` sets TF's environment first."""
    name: str = request.param
    pytest.importorskip(f"adapters.{name}.segmenter")
    return name


@pytest.fixture(scope="module")
def tiny_cache() -> dict[tuple[str, str], Any]:
    return {}


@pytest.fixture
def tiny(framework: str, tiny_cache: dict[tuple[str, str], Any]) -> Callable[[str], Any]:
    """``tiny(architecture)``: a segmenter of ``config.tiny()`` in this framework, built once per module.

    Shared: only tests that neither train nor change it may use it.
    """

    def get(architecture: str) -> Any:
        key = (framework, architecture)
        if key not in tiny_cache:
            tiny_cache[key] = frameworks.build(architecture, framework, **CONFIGS[architecture].tiny().to_params())
        return tiny_cache[key]

    return get


# --- what differs between the frameworks, said once ------------------------------------------------------


def build_network(framework: str, config: NetConfig) -> Any:
    """The raw network of ``config`` from the registry's builder (torch module or channels-last Keras model)."""
    return registry.lookup(config.architecture).builder(framework)(config)


def logits_shape(framework: str, net: Any, patch: tuple[int, ...], channels: int = 1) -> tuple[int, ...]:
    """The channels-first shape of the raw network's logits for a random ``[1, channels, *patch]`` input."""
    image = np.random.default_rng(0).normal(size=(1, channels, *patch)).astype(np.float32)
    if framework == "torch":
        import torch

        with torch.no_grad():
            return tuple(net.eval()(torch.from_numpy(image)).shape)
    from adapters.tf import to_channels_last

    out = net(to_channels_last(image), training=False)
    return (out.shape[0], out.shape[-1], *out.shape[1:-1])


def max_conv_filters(framework: str, net: Any) -> int:
    if framework == "torch":
        import torch

        return max(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    import keras

    return max(layer.filters for layer in net.layers if isinstance(layer, keras.layers.Conv3D))


def weights(seg: Any) -> list[np.ndarray]:
    """Every weight of a segmenter (trainable or not) as numpy copies; the head's kernel is ``[-2]`` in both."""
    if seg.framework == "torch":
        return [t.detach().cpu().numpy().copy() for t in seg.net.state_dict().values()]
    return [np.array(w) for w in seg.model.get_weights()]


def moving_means(seg: Any) -> list[np.ndarray]:
    """The running means of every batch norm."""
    if seg.framework == "torch":
        import torch

        return [np.asarray(m.running_mean) for m in seg.net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    return [v.numpy() for v in seg.model.non_trainable_weights if "moving_mean" in v.path]


def make_steps(seg: Any, spec: TrainSpec) -> loop.TrainSteps:
    """The framework's real ``TrainSteps`` for a segmenter's network on the CPU."""
    if seg.framework == "torch":
        import torch

        from adapters.torch.steps import TorchSteps

        return TorchSteps(seg.net, spec, torch.device("cpu"))
    from adapters.tf.steps import TfSteps

    return TfSteps(seg.model, spec)


def optimizer_lr(optimizer: Any) -> float:
    if hasattr(optimizer, "param_groups"):  # torch
        return float(optimizer.param_groups[0]["lr"])
    return float(optimizer.learning_rate)


def seed_framework(framework: str, seed: int) -> None:
    """Seed the framework's global generator (what a build without a fit draws its weights from)."""
    if framework == "torch":
        import torch

        torch.manual_seed(seed)
    else:
        import keras

        keras.utils.set_random_seed(seed)


def configure_runtime(framework: str, spec: TrainSpec) -> None:
    """What a first fit does before it rebuilds the network: seeds, determinism, threads."""
    if framework == "torch":
        from adapters.torch.steps import configure_runtime as torch_configure

        torch_configure(spec)
    else:
        from adapters.tf.steps import configure_runtime as tf_configure

        tf_configure(spec)


class OneConv(NamedTuple):
    """A 1³ conv 1 -> 4 of one framework: its steps, its trainable weights, and its loss gradients."""

    steps: loop.TrainSteps
    trainable: Callable[[], list[np.ndarray]]
    gradients: Callable[[PatchBatch], list[np.ndarray]]


def one_conv(framework: str, spec: TrainSpec) -> OneConv:
    bias = np.array([0.1, -0.2, 0.3, 0.4], np.float32)
    if framework == "torch":
        import torch

        from adapters.torch.losses import make_loss
        from adapters.torch.steps import TorchSteps

        net = torch.nn.Conv3d(1, 4, 1)
        with torch.no_grad():
            net.bias = torch.nn.Parameter(torch.from_numpy(bias))

        def torch_gradients(batch: PatchBatch) -> list[np.ndarray]:
            loss = make_loss(spec.loss)(net(torch.from_numpy(batch.image)), torch.from_numpy(batch.label))
            return [g.numpy() for g in torch.autograd.grad(loss, list(net.parameters()))]

        return OneConv(TorchSteps(net, spec, torch.device("cpu")),
                       lambda: [p.detach().numpy().copy() for p in net.parameters()], torch_gradients)
    import keras
    import tensorflow as tf

    from adapters.tf import to_channels_last
    from adapters.tf.losses import make_loss as tf_make_loss
    from adapters.tf.steps import TfSteps

    inputs = keras.Input((None, None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv3D(4, 1)(inputs))
    model.layers[-1].bias.assign(bias)

    def tf_gradients(batch: PatchBatch) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            loss = tf_make_loss(spec.loss)(model(to_channels_last(batch.image)), tf.constant(batch.label))
        return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    return OneConv(TfSteps(model, spec), lambda: [v.numpy().copy() for v in model.trainable_variables],
                   tf_gradients)


# === the segmenters, once per framework =====================================================================

# --- shapes, patch sizes, arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_output_shapes_for_every_patch_size(framework: str, architecture: str, tiny: Callable[[str], Any]) -> None:
    seg = tiny(architecture)
    net = seg.net if framework == "torch" else seg.model
    rng = np.random.default_rng(0)
    for patch in [(32, 32, 32), (48, 48, 48), (64, 64, 64), (32, 16, 32), (32, 16, 48)]:
        assert logits_shape(framework, net, patch) == (1, 4, *patch), patch  # the raw network
        probs = seg.predict_patches(rng.normal(size=(1, 1, *patch)).astype(np.float32))
        assert probs.shape == (1, 4, *patch) and probs.dtype == np.float32, patch
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_default_networks_match_the_spec(framework: str, architecture: str) -> None:
    by_hand = COUNTERS[architecture]()
    assert by_hand == DEFAULT_COUNTS[architecture]
    seg: Any = frameworks.build(architecture, framework)
    assert seg.parameter_count() == by_hand
    assert seg.describe()["trainable_parameters"] == by_hand
    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 16, 32)).astype(np.float32)
    probs = seg.predict_patches(batch)
    assert probs.shape == (2, 4, 16, 16, 32) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unet3d_variants_and_two_input_channels(framework: str) -> None:
    seg: Any = frameworks.build("unet3d", framework, in_channels=2, num_classes=3, base_filters=4, depth=2,
                         convs_per_level=2, skip="concat", norm="instance", dropout=0.2)
    batch = np.random.default_rng(1).normal(size=(2, 2, 8, 12, 16)).astype(np.float32)
    probs = seg.predict_patches(batch)
    assert probs.shape == (2, 3, 8, 12, 16)
    np.testing.assert_array_equal(probs, seg.predict_patches(batch))  # eval mode: dropout off
    net = seg.net if framework == "torch" else seg.model
    assert logits_shape(framework, net, (8, 12, 16), channels=2) == (1, 3, 8, 12, 16)


def test_segmenter_rejects_bad_patch_sizes_in_predict_and_fit(framework: str, tiny: Callable[[str], Any]) -> None:
    seg = tiny("unet3d")  # divisor 4; the fit fails on its patch size before anything changes
    with pytest.raises(ConfigError, match=r"\(16, 10, 16\)"):
        seg.predict_patches(np.zeros((1, 1, 16, 10, 16), np.float32))
    with pytest.raises(ConfigError, match=r"is not \[B, 1, X, Y, Z\]"):
        seg.predict_patches(np.zeros((1, 2, 16, 16, 16), np.float32))
    with pytest.raises(ConfigError, match=r"is not \[B, 1, X, Y, Z\]"):
        seg.predict_patches(np.zeros((1, 16, 16, 16), np.float32))
    image, label = spheres(size=12)
    with pytest.raises(ConfigError, match=r"\(6, 6, 6\).*multiples of 4"):
        seg.fit(CropSource(image, label, 6, 1, 1), None, quick_spec(framework), NullLogger())


def test_build_rejects_unknown_architecture_parameter_and_value(framework: str) -> None:
    cls = frameworks.segmenter_class(framework)
    assert cls.framework == framework
    with pytest.raises(ConfigError, match="'unet2d'"):
        cls.build("unet2d")
    with pytest.raises(ConfigError, match="'widths'"):
        cls.build("unet3d", widths=(8, 16))
    with pytest.raises(ConfigError, match="'resnet'"):
        frameworks.build("resnet", framework)
    with pytest.raises(ConfigError, match=re.escape("vnet.convs=(1, 1, 1)")):
        frameworks.build("vnet", framework, widths=(8, 16), convs=(1, 1, 1))


# --- parameter counts, computed by hand from the shared spec ---------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "kwargs", "by_hand"),
    [
        ("unet3d", {"base_filters": 64}, unet3d_count(base=64)),
        ("unet3d", {"base_filters": 8, "depth": 3, "convs_per_level": 2, "skip": "concat", "norm": "batch"},
         unet3d_count(base=8, depth=3, convs=2, skip="concat", norm="batch")),
        ("unet3d", {"in_channels": 2, "num_classes": 3, "base_filters": 4, "norm": "instance", "dropout": 0.3},
         unet3d_count(in_ch=2, k=3, base=4, norm="instance")),
        ("unet3d", {"base_filters": 8, "block": "residual"}, unet3d_count(base=8, block="residual")),
        ("unet3d", {"base_filters": 4, "depth": 4, "convs_per_level": 2, "skip": "concat", "norm": "instance",
                    "block": "residual", "deep_supervision": 2},
         unet3d_count(base=4, convs=2, skip="concat", norm="instance", block="residual", deep_supervision=2)),
        ("vnet", {"widths": (8, 16, 32), "convs": (2, 1, 3), "kernel_size": 3},
         vnet_count(widths=(8, 16, 32), convs=(2, 1, 3), kernel=3)),
        ("neuronet", {"filters": (8, 16, 32), "strides": (1, 2, 1), "units_per_scale": 3, "norm": "none"},
         neuronet_count(filters=(8, 16, 32), strides=(1, 2, 1), units=3, norm="none")),
        ("neuronet", {"norm": "instance", "num_classes": 2}, neuronet_count(k=2, norm="instance")),
        ("unet3d", {"base_filters": 4, "norm": "instance_layer"}, unet3d_count(base=4, norm="instance_layer")),
        ("neuronet", {"norm": "instance_layer"}, neuronet_count(norm="instance_layer")),
    ],
)
def test_variant_parameter_counts_match_the_spec(framework: str, architecture: str, kwargs: dict[str, Any],
                                                 by_hand: int) -> None:
    seg: Any = frameworks.build(architecture, framework, **kwargs)
    assert seg.parameter_count() == by_hand


def test_base_64_unet_reaches_512_feature_maps(framework: str) -> None:
    net = build_network(framework, UNet3DConfig(base_filters=64))
    assert max_conv_filters(framework, net) == 512
    assert unet3d_count(base=64) == 8_347_396


def test_instance_layer_norm_matches_numpy(framework: str) -> None:
    """ILN = scale * (rho * IN + (1 - rho) * LN) + shift, rho clipped to [0, 1]; rho = 1 is instance norm."""
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, size=(2, 4, 5, 6, 3)).astype(np.float32)  # channels first
    gamma, beta = np.array([1.5, 0.5, 2.0, 1.0]), np.array([0.1, -0.2, 0.0, 0.3])
    rho = np.array([0.0, 1.0, 0.3, 1.7])  # 1.7 acts as 1

    def standardise(axes: tuple[int, ...]) -> np.ndarray:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5)

    r = np.clip(rho, 0, 1).reshape(1, -1, 1, 1, 1)
    expected = (gamma.reshape(1, -1, 1, 1, 1) * (r * standardise((2, 3, 4)) + (1 - r) * standardise((1, 2, 3, 4)))
                + beta.reshape(1, -1, 1, 1, 1))
    if framework == "torch":
        import torch

        from adapters.torch.layers import InstanceLayerNorm3d
        layer = InstanceLayerNorm3d(4)
        with torch.no_grad():
            for name, value in (("weight", gamma), ("bias", beta), ("rho", rho)):
                getattr(layer, name).copy_(torch.tensor(value, dtype=torch.float32))
        got = layer(torch.from_numpy(x)).detach().numpy()
        instance = torch.nn.functional.instance_norm(torch.from_numpy(x), eps=1e-5).numpy()
        np.testing.assert_allclose(got[:, 1], instance[:, 1] * 0.5 - 0.2, atol=1e-5)  # rho = 1: instance norm
    else:
        from adapters.tf import to_channels_first, to_channels_last
        from adapters.tf.layers import InstanceLayerNormalization
        tf_layer = InstanceLayerNormalization()
        tf_layer.build((None, 5, 6, 3, 4))
        tf_layer.set_weights([gamma.astype(np.float32), beta.astype(np.float32), rho.astype(np.float32)])
        got = to_channels_first(np.asarray(tf_layer(to_channels_last(x))))
        again = InstanceLayerNormalization.from_config(tf_layer.get_config())  # Keras serialisation works
        assert again.epsilon == tf_layer.epsilon and again.dtype_policy.name == "float32"
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_layer_norm_gradients_match_autograd_of_the_formula(channels_last: bool) -> None:
    """The fused backward of the torch ILN equals autograd through the plain formula (float64), and passes
    ``gradcheck`` (finite differences), in both memory formats the training loop can hand it."""
    import torch

    from adapters.torch.layers import InstanceLayerNorm3d, _InstanceLayerNormFunction

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, 3, generator=generator, dtype=torch.float64) * 2.0 + 1.0
    if channels_last:
        x = x.to(memory_format=torch.channels_last_3d)
    weight = torch.tensor([1.5, 0.5, 2.0], dtype=torch.float64)
    bias = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    rho = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)  # inside (0, 1): the clip has a gradient
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias, rho)]
    assert torch.autograd.gradcheck(lambda *args: _InstanceLayerNormFunction.apply(*args, 1e-5), leaves)

    def formula(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        def standardise(dims: tuple[int, ...]) -> torch.Tensor:
            var, mean = torch.var_mean(x, dim=dims, unbiased=False, keepdim=True)
            return (x - mean) / torch.sqrt(var + 1e-5)
        per_channel = (1, -1, 1, 1, 1)
        r = rho.clamp(0, 1).view(per_channel)
        return weight.view(per_channel) * (r * standardise((2, 3, 4)) + (1 - r) * standardise((1, 2, 3, 4))) \
            + bias.view(per_channel)

    upstream = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    fused = _InstanceLayerNormFunction.apply(*leaves, 1e-5)
    fused_grads = torch.autograd.grad(fused, leaves, upstream)
    plain_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    plain = formula(*plain_leaves)
    plain_grads = torch.autograd.grad(plain, plain_leaves, upstream)
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected)
    layer = InstanceLayerNorm3d(3)
    out = layer(x.float())
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last_3d) == channels_last  # keeps the layout


def test_eval_step_gives_the_loss_and_true_by_predicted_counts(framework: str, tiny: Callable[[str], Any]) -> None:
    seg = tiny("unet3d")
    rng = np.random.default_rng(4)
    batch = PatchBatch(rng.normal(size=(2, 1, 8, 8, 8)).astype(np.float32), rng.integers(0, 4, size=(2, 8, 8, 8)))
    spec = quick_spec(framework, loss=LossSpec(name="ce"))
    loss, confusion = make_steps(seg, spec).eval_step(batch)
    probs = seg.predict_patches(batch.image)
    expected = np.zeros((4, 4), np.int64)
    np.add.at(expected, (batch.label.ravel(), probs.argmax(axis=1).ravel()), 1)
    np.testing.assert_array_equal(confusion, expected)
    assert loss == pytest.approx(np_ce_loss(np.log(probs.astype(np.float64)), batch.label), abs=1e-5)


# --- optimizer steps -------------------------------------------------------------------------------------


def test_sgd_weight_decay_is_coupled_l2_as_in_torch(framework: str) -> None:
    """One SGD train step gives w - lr * (dL/dw + weight_decay * w) for every variable, biases included."""
    lr, decay = 0.1, 0.05
    spec = quick_spec(framework, loss=LossSpec(name="ce"), optimizer=OptimizerSpec(name="sgd", lr=lr,
                                                                                   weight_decay=decay))
    conv = one_conv(framework, spec)
    batch = PatchBatch(np.random.default_rng(0).normal(size=(1, 1, 2, 2, 2)).astype(np.float32),
                       np.array([[[[0, 1], [2, 3]], [[3, 2], [1, 0]]]], np.int64))
    before, grads = conv.trainable(), conv.gradients(batch)
    assert math.isfinite(conv.steps.train_step(batch))
    for w0, g, w1 in zip(before, grads, conv.trainable(), strict=True):
        np.testing.assert_allclose(w1, w0 - lr * (g + decay * w0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("spec", "expected", "cls"),
    [
        (OptimizerSpec(name="adadelta", lr=1.0, rho=0.9, eps=1e-6),
         {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}, "Adadelta"),
        (OptimizerSpec(name="adam", lr=3e-4, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-5),
         {"lr": 3e-4, "betas": (0.8, 0.99), "eps": 1e-7, "weight_decay": 1e-5, "amsgrad": False}, "Adam"),
        (OptimizerSpec(name="sgd", lr=0.05, momentum=0.95, weight_decay=1e-4),
         {"lr": 0.05, "momentum": 0.95, "weight_decay": 1e-4, "nesterov": False, "dampening": 0.0}, "SGD"),
    ],
)
def test_torch_optimizer_hyperparameters_reach_torch(spec: OptimizerSpec, expected: dict[str, Any], cls: str) -> None:
    torch = pytest.importorskip("torch")
    from adapters.torch.steps import make_optimizer

    optimizer = make_optimizer(build_network("torch", UNet3DConfig(base_filters=2, depth=2)).parameters(), spec)
    assert type(optimizer) is getattr(torch.optim, cls)
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key


@pytest.mark.parametrize(
    ("spec", "cls", "expected"),
    [
        (OptimizerSpec(name="adadelta", lr=1.0, rho=0.9, eps=1e-6), "Adadelta",
         {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6}),
        (OptimizerSpec(name="adam", lr=3e-4, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-5), "Adam",
         {"learning_rate": 3e-4, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7, "amsgrad": False}),
        (OptimizerSpec(name="sgd", lr=0.05, momentum=0.95, weight_decay=1e-4), "SGD",
         {"learning_rate": 0.05, "momentum": 0.95, "nesterov": False}),
    ],
)
def test_tf_optimizer_hyperparameters_reach_keras(spec: OptimizerSpec, cls: str, expected: dict[str, Any]) -> None:
    pytest.importorskip("adapters.tf.steps")
    import keras

    from adapters.tf.steps import make_optimizer

    optimizer = make_optimizer(spec)
    assert type(optimizer) is getattr(keras.optimizers, cls)
    config = optimizer.get_config()
    for key, value in expected.items():
        assert config[key] == pytest.approx(value, rel=1e-7) if isinstance(value, float) else config[key] == value
    # weight decay is applied as torch's coupled L2 in the train step, never Keras's decoupled one
    assert config["weight_decay"] is None
    for key in ("clipnorm", "clipvalue", "global_clipnorm"):
        assert config[key] is None
    assert config["use_ema"] is False


# --- save / load ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "params", "by_hand"),
    [("neuronet", {"filters": (4, 8), "strides": (1, 2), "units_per_scale": 1},
      neuronet_count(filters=(4, 8), strides=(1, 2), units=1)),
     ("unet3d", {"base_filters": 4, "depth": 2, "norm": "batch"}, unet3d_count(base=4, depth=2, norm="batch"))],
    ids=["neuronet", "unet3d"],
)
def test_save_load_round_trip_gives_identical_predictions(framework: str, architecture: str, params: dict[str, Any],
                                                          by_hand: int, tmp_path: Path) -> None:
    seg: Any = frameworks.build(architecture, framework, **params)  # both with batch norm
    image, label = spheres(size=16)
    seg.fit(CropSource(image, label, 8, 2, 2), None, quick_spec(framework, epochs=1), NullLogger())
    means = moving_means(seg)
    assert means and all(np.any(m != 0) for m in means)  # the batch-norm statistics moved
    seg.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "segmenter.json").read_text())
    assert meta["framework"] == framework and meta["architecture"] == architecture
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    assert meta["params"] == CONFIGS[architecture]().to_params() | given  # every argument, lists for tuples
    assert meta["params"]["norm"] == "batch"
    library = VERSION_KEY[framework]
    assert meta["versions"][library] == importlib.import_module(library).__version__
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(["segmenter.json", seg.weights_file])

    batch = image[None, None, :16, :8, :16].copy()
    loaded = type(seg).load(tmp_path / "model")
    via_registry = frameworks.load(tmp_path / "model")  # reads the framework, then calls <class>.load
    assert isinstance(via_registry, Segmenter) and isinstance(via_registry, type(seg))
    np.testing.assert_array_equal(loaded.predict_patches(batch), seg.predict_patches(batch))
    np.testing.assert_array_equal(via_registry.predict_patches(batch), seg.predict_patches(batch))
    assert loaded.describe() == seg.describe()
    described = seg.describe()
    assert described["trainable_parameters"] == seg.parameter_count() == by_hand
    assert described["framework"] == framework and described["device"] == CPU_DEVICE[framework]


def test_corrupt_missing_or_foreign_weights_raise_data_error(framework: str, tmp_path: Path) -> None:
    frameworks.build("unet3d", framework, base_filters=2, depth=2).save(tmp_path / "unet")
    frameworks.build("unet3d", framework, base_filters=2, depth=3).save(tmp_path / "deeper")
    frameworks.build("unet3d", framework, base_filters=4, depth=2).save(tmp_path / "wider")
    frameworks.build("vnet", framework, **TINY["vnet"]).save(tmp_path / "vnet")
    cls = frameworks.segmenter_class(framework)
    weights_file = cls.weights_file
    weights = tmp_path / "unet" / weights_file
    good = weights.read_bytes()

    for foreign in ("deeper", "wider", "vnet"):  # more variables / other shapes / another architecture
        weights.write_bytes((tmp_path / foreign / weights_file).read_bytes())
        with pytest.raises(DataError, match=WEIGHTS_MISMATCH[framework]) as info:
            cls.load(tmp_path / "unet")
        assert str(weights) in str(info.value), foreign

    weights.write_bytes(b"this is not a weights file")
    with pytest.raises(DataError, match="corrupt") as info:
        cls.load(tmp_path / "unet")
    assert str(weights) in str(info.value)
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=re.escape(weights_file)):
        cls.load(tmp_path / "unet")
    weights.unlink()
    with pytest.raises(DataError, match="missing"):
        cls.load(tmp_path / "unet")

    other = "tf" if framework == "torch" else "torch"
    meta = tmp_path / "wider" / "segmenter.json"
    meta.write_text("{not json")
    with pytest.raises(DataError, match=r"segmenter\.json"):
        cls.load(tmp_path / "wider")
    meta.write_text(json.dumps({"framework": other, "architecture": "unet3d", "params": {}}))
    with pytest.raises(DataError, match=f"'{other}'"):
        cls.load(tmp_path / "wider")
    meta.write_text(json.dumps({"framework": framework, "architecture": "vnet", "params": {"widths": []}}))
    with pytest.raises(DataError, match=r"segmenter\.json"):
        cls.load(tmp_path / "wider")
    with pytest.raises(DataError, match="missing"):
        cls.load(tmp_path / "nowhere")
    with pytest.raises(DataError, match="missing"):
        frameworks.load(tmp_path / "nowhere")


def test_save_leaves_no_temporary_files_and_overwrites(framework: str, tmp_path: Path) -> None:
    seg: Any = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    seg.save(tmp_path)
    seg.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["segmenter.json", seg.weights_file])


# --- training -------------------------------------------------------------------------------------------


class Recipe(NamedTuple):
    """How a small network learns the spheres: epochs of 10 steps on 16³ crops."""

    params: dict[str, Any]
    loss: LossName
    lr: float  # Adam
    batch_size: int
    epochs: int
    loss_drop: float  # the last epoch's loss is below this fraction of the first's


# Robust over seeds 0-3 (Dice 0.94-0.99). torch's NeuroNet needs the larger batch: with 2 crops its batch
# statistics swing with how much background a crop holds, and these spheres differ by absolute intensity alone.
UNET = {"base_filters": 8, "depth": 3}
VNET = {"widths": (8, 16, 32, 64), "convs": (1, 1, 1, 1), "kernel_size": 3}
NEURONET = {"filters": (8, 16, 32), "strides": (1, 2, 2), "units_per_scale": 1}
LEARNING: dict[str, dict[str, Recipe]] = {
    "torch": {"unet3d": Recipe(UNET, "dice_ce", 1e-2, 2, 10, 0.5),
              "vnet": Recipe(VNET, "dice_ce", 3e-3, 2, 10, 0.5),
              "neuronet": Recipe(NEURONET, "dice_ce", 1e-2, 8, 6, 0.5)},
    "tf": {"unet3d": Recipe(UNET, "dice_ce", 1e-2, 4, 8, 1.0),
           "vnet": Recipe(VNET, "dice_ce", 5e-3, 4, 8, 1.0),
           "neuronet": Recipe(NEURONET, "dice", 5e-3, 4, 8, 1.0)},
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_learns_nested_spheres(framework: str, architecture: str) -> None:
    recipe = LEARNING[framework][architecture]
    image, label = spheres()
    seg = frameworks.build(architecture, framework, **recipe.params)
    spec = quick_spec(framework, epochs=recipe.epochs, loss=LossSpec(name=recipe.loss),
                      optimizer=OptimizerSpec(name="adam", lr=recipe.lr))
    history = seg.fit(CropSource(image, label, 16, recipe.batch_size, 10), None, spec, NullLogger())
    pred = seg.predict_patches(image[None, None]).argmax(axis=1)[0]
    assert foreground_dice(pred, label) > 0.9, [round(r.train_loss, 3) for r in history.epochs]
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss * recipe.loss_drop


def test_same_seed_same_weights_different_seed_different_weights(framework: str) -> None:
    image, label = spheres(size=16)

    def fitted(seed: int, construction_seed: int) -> Any:
        seed_framework(framework, construction_seed)  # the first fit re-initialises from spec.seed regardless
        seg = frameworks.build("unet3d", framework, base_filters=4, depth=2, dropout=0.2)
        spec = quick_spec(framework, seed=seed)
        seg.fit(CropSource(image, label, 8, 2, 3, seed=seed), None, spec, NullLogger())
        return seg

    a, b, c = fitted(0, 1), fitted(0, 2), fitted(1, 1)
    for index, (wa, wb) in enumerate(zip(weights(a), weights(b), strict=True)):
        np.testing.assert_array_equal(wa, wb, err_msg=str(index))
    batch = image[None, None, :8, :8, :16].copy()
    np.testing.assert_array_equal(a.predict_patches(batch), b.predict_patches(batch))
    assert not np.array_equal(weights(a)[-2], weights(c)[-2])  # the head's kernel
    # what the first fit does to initialise: seed, then build; the same seed again gives the same weights
    config = UNet3DConfig(base_filters=4, depth=2)
    initial = []
    for seed in (0, 1, 0):
        configure_runtime(framework, quick_spec(framework, seed=seed))
        initial.append(weights(type(a)(registry.lookup("unet3d"), config))[0])
    assert not np.array_equal(initial[0], initial[1])
    np.testing.assert_array_equal(initial[0], initial[2])


def test_early_stopping_restores_best_weights(framework: str, capsys: pytest.CaptureFixture[str]) -> None:
    image, label = spheres(size=16)
    wrong = (label + 1) % 4  # validation labels that get worse as training gets better
    val = CropSource(image, wrong, 8, 2, 2, seed=5, fixed=True)
    seg = frameworks.build("unet3d", framework, base_filters=4, depth=2)
    logger = RecordingLogger()
    spec = quick_spec(framework, epochs=10, early_stopping=EarlyStoppingSpec(patience=2), progress=True)
    history = seg.fit(CropSource(image, label, 8, 2, 4), val, spec, logger)

    assert all(r.val_loss is not None for r in history.epochs)
    val_losses = [float(r.val_loss or 0.0) for r in history.epochs]
    assert logger.records == history.epochs
    assert history.best_epoch == int(np.argmin(val_losses))
    assert history.stopped_early and len(history.epochs) == history.best_epoch + 3 < 10
    restored, dice = loop.evaluate(make_steps(seg, spec), val.batches(0), epoch=0)
    assert restored == pytest.approx(val_losses[history.best_epoch], abs=1e-6)
    assert restored != pytest.approx(val_losses[-1], abs=1e-4)
    assert set(dice) == {"CSF", "GM", "WM"} and history.epochs[0].val_dice is not None
    assert all(r.patches_per_s > 0 and r.seconds > 0 for r in history.epochs)
    assert [r.epoch for r in history.epochs] == list(range(len(history.epochs)))
    assert capsys.readouterr().err == ""  # progress stays quiet when stderr is not a terminal


def test_reduce_lr_on_plateau_lowers_lr(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps_module = importlib.import_module(f"adapters.{framework}.steps")
    made: list[Any] = []
    make_optimizer = steps_module.make_optimizer

    def spy(*args: Any) -> Any:
        made.append(make_optimizer(*args))
        return made[-1]

    monkeypatch.setattr(steps_module, "make_optimizer", spy)
    image, label = spheres(size=16)
    val = CropSource(image, label, 8, 1, 1, fixed=True)
    seg = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    spec = quick_spec(
        framework, epochs=7, optimizer=OptimizerSpec(name="sgd", lr=0.01),
        # an improvement must cut the val loss by 99 %: no epoch after the first improves
        scheduler=SchedulerSpec(factor=0.5, patience=1, min_lr=0.003, threshold=0.99),
    )
    history = seg.fit(CropSource(image, label, 8, 1, 1), val, spec, NullLogger())
    # epoch 0 sets the best value; every later epoch is a bad epoch; the lr drops once >patience bad epochs
    assert [r.lr for r in history.epochs] == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.003, 0.003])
    assert not history.stopped_early and len(history.epochs) == 7
    assert len(made) == 1 and optimizer_lr(made[0]) == pytest.approx(0.003)  # the optimizer really got it


@pytest.mark.parametrize("where", ["one voxel", "everywhere"])
def test_non_finite_input_is_refused_before_training(framework: str, where: str) -> None:
    image, label = spheres(size=8)
    if where == "one voxel":
        image[2, 3, 4] = np.nan  # TF's fused ReLU would turn it into 0 and train on silently
    else:
        image[...] = np.nan
    seg = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    with pytest.raises(BenchError, match=r"epoch 0, step 0 holds non-finite intensities"):
        seg.fit(CropSource(image, label, 8, 1, 1), None, quick_spec(framework), NullLogger())


def huge_batch() -> PatchBatch:
    """Finite intensities whose activations overflow float32: the loss of any network is not finite."""
    _, label = spheres(size=8)
    return PatchBatch(np.full((1, 1, 8, 8, 8), 3e38, np.float32), label[None])


def test_non_finite_loss_stops_the_fit_naming_epoch_and_step(framework: str) -> None:
    batch = huge_batch()
    seg = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    source = CropSource(batch.image[0, 0], batch.label[0], 8, 1, 1)
    with pytest.raises(BenchError, match=r"loss became (nan|inf) at epoch 0, step 0.*lower optimizer.lr"):
        seg.fit(source, None, quick_spec(framework), NullLogger())


def test_a_non_finite_loss_updates_no_weight(framework: str) -> None:
    """``loop.TrainSteps.train_step``: no update when the loss is not finite (the loop then stops)."""
    seg = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    steps = make_steps(seg, quick_spec(framework))
    before = weights(seg)
    assert not math.isfinite(steps.train_step(huge_batch()))
    for index, (w0, w1) in enumerate(zip(before, weights(seg), strict=True)):
        np.testing.assert_array_equal(w1, w0, err_msg=str(index))


def test_a_non_finite_gradient_skips_the_update_and_is_counted(framework: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite loss with non-finite gradients (NaN is what a bf16 CPU kernel gave V-Net's 5^3 convolutions on one host):
    ``train_step`` returns the loss, applies no update and counts the skip."""
    module = importlib.import_module(f"adapters.{framework}.steps")
    make_loss = module.make_loss
    if framework == "torch":
        import torch

        def zero_with_nan_gradient(logits: Any) -> Any:
            return torch.sqrt(logits.sum() - logits.sum().detach())
    else:
        import tensorflow as tf

        def zero_with_nan_gradient(logits: Any) -> Any:
            return tf.sqrt(tf.reduce_sum(logits) - tf.stop_gradient(tf.reduce_sum(logits)))

    def nan_gradient_loss(spec: Any) -> Any:
        base = make_loss(spec)
        # forward: + sqrt(0) = 0; backward: d sqrt(u)/du at u = 0 is inf, in every gradient
        return lambda logits, label: base(logits, label) + zero_with_nan_gradient(logits)

    monkeypatch.setattr(module, "make_loss", nan_gradient_loss)
    seg = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    steps = make_steps(seg, quick_spec(framework))
    image, label = spheres(size=8)
    batch = next(iter(CropSource(image, label, 8, 1, 1).batches(0)))
    before = weights(seg)
    assert math.isfinite(steps.train_step(batch)) and steps.skipped_steps == 1  # type: ignore[attr-defined]
    for index, (w0, w1) in enumerate(zip(before, weights(seg), strict=True)):
        np.testing.assert_array_equal(w1, w0, err_msg=str(index))
    monkeypatch.setattr(module, "make_loss", make_loss)
    plain = make_steps(seg, quick_spec(framework))
    plain.train_step(batch)
    assert plain.skipped_steps == 0  # type: ignore[attr-defined]
    assert any(not np.array_equal(w1, w0) for w0, w1 in zip(before, weights(seg), strict=True))


# --- framework specifics -----------------------------------------------------------------------------


def test_channel_moves_are_inverse_transposes() -> None:
    pytest.importorskip("adapters.tf")
    from adapters.tf import to_channels_first, to_channels_last

    x = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6)
    last = to_channels_last(x)
    assert last.shape == (2, 4, 5, 6, 3) and last.flags.c_contiguous
    assert last[1, 2, 3, 4, 0] == x[1, 0, 2, 3, 4]
    np.testing.assert_array_equal(to_channels_first(last), x)
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        to_channels_last(x[0])
    with pytest.raises(ValueError, match="B, X, Y, Z, C"):
        to_channels_first(x[0])


def test_tf_import_log_lines_are_filtered_by_level() -> None:
    """TF 2.19+ prints its early absl lines whatever TF_CPP_MIN_LOG_LEVEL says; adapters.tf filters them."""
    tf_adapter = pytest.importorskip("adapters.tf")
    captured = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                "I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n"
                "W0000 00:00:1.0 1 x.cc:1] a warning\n"
                "E0000 00:00:1.0 1 x.cc:2] an error\n"
                "plain text from a library\n")
    kept = tf_adapter._kept_import_lines(captured, 2)
    assert kept == ["E0000 00:00:1.0 1 x.cc:2] an error", "plain text from a library"]
    assert len(tf_adapter._kept_import_lines(captured, 1)) == 3
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", "import adapters.tf, tensorflow as tf; print(tf.__version__)"],
                           capture_output=True, text=True, timeout=300, check=True, env=env)
    verbose = subprocess.run([sys.executable, "-c", "import adapters.tf"], capture_output=True, text=True,
                             timeout=300, check=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "oneDNN custom operations are on" in verbose.stderr  # what TF prints unfiltered
    assert "oneDNN" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr, quiet.stderr
    assert quiet.stdout.strip()  # TensorFlow imported


def test_configure_threads_sets_torch_threads() -> None:
    torch = pytest.importorskip("torch")
    from adapters.torch.steps import available_cores

    try:
        frameworks.configure_threads("torch", 1)
        assert torch.get_num_threads() == 1
        frameworks.configure_threads("torch", 0)  # every core this process may use
        assert torch.get_num_threads() == available_cores()
    finally:
        torch.set_num_threads(1)  # the module's one-thread setting


def test_configure_threads_before_build_sets_both_tf_pools() -> None:
    """A fresh process: frameworks.configure_threads fixes intra- and inter-op pools before TF starts."""
    pytest.importorskip("adapters.tf.steps")
    code = ("from bench.training import frameworks; import tensorflow as tf; frameworks.configure_threads('tf', 1); "
            "frameworks.build('unet3d', 'tf', base_filters=2, depth=2); t = tf.config.threading; "
            "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split()[-2:] == ["1", "1"]
