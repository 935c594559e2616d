"""The U-Net's options beyond the paper (residual blocks, deep supervision), once per framework, and a tiny
network with every training option on learning a synthetic task in both frameworks.

Parameter counts by hand and torch-vs-TF parity (same weights, same probabilities, same train steps) for these
options are in tests/test_adapters.py and tests/test_adapters_parity.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from adapter_helpers import foreground_dice, np_ce_loss, np_dice_loss, quick_spec, spheres

from bench.contract import LossSpec, NullLogger, OptimizerSpec, SchedulerSpec
from bench.errors import ConfigError
from bench.networks.configs import UNet3DConfig
from bench.patching.augment import AugmentSpec
from bench.patching.sampler import PatchSampler, PatchSubject
from bench.training import frameworks
from bench.training.deep_supervision import head_weights, label_grid


@pytest.fixture(params=["torch", "tf"])
def framework(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    pytest.importorskip(f"adapters.{name}.segmenter")
    return name


def head_outputs(framework: str, seg: Any, image: np.ndarray) -> list[np.ndarray]:
    """Every head's logits, channels-first, as the training step sees them."""
    if framework == "torch":
        import torch

        with torch.no_grad():
            return [h.numpy() for h in seg.net.eval().forward_heads(torch.from_numpy(image))]
    from adapters.tf import to_channels_first, to_channels_last
    from adapters.tf.steps import heads

    return [to_channels_first(np.asarray(h)) for h in heads(seg.model(to_channels_last(image), training=False))]


def deep_supervised_value(framework: str, spec: LossSpec, heads: list[np.ndarray], labels: np.ndarray) -> float:
    if framework == "torch":
        import torch

        from adapters.torch.losses import deep_supervised, make_loss

        tensors = [torch.tensor(h, dtype=torch.float32) for h in heads]
        return float(deep_supervised(make_loss(spec), tensors, torch.from_numpy(labels)).item())
    import tensorflow as tf

    from adapters.tf import to_channels_last
    from adapters.tf.losses import deep_supervised as tf_deep_supervised
    from adapters.tf.losses import make_loss as tf_make_loss

    tensors = [tf.constant(to_channels_last(h.astype(np.float32))) for h in heads]
    return float(tf_deep_supervised(tf_make_loss(spec), tensors, tf.constant(labels)))


# --- deep supervision ------------------------------------------------------------------------------------
def test_head_weights_halve_per_level_and_sum_to_one() -> None:
    assert head_weights(0) == (1.0,)
    assert head_weights(1) == pytest.approx((2 / 3, 1 / 3))
    assert head_weights(3) == pytest.approx((8 / 15, 4 / 15, 2 / 15, 1 / 15))
    assert [label_grid(i) for i in range(4)] == [(0, 1), (1, 2), (2, 4), (4, 8)]


def test_deep_supervised_loss_matches_the_numpy_oracle(framework: str) -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, size=(2, 8, 8, 8))
    heads = [rng.normal(0, 3, size=(2, 4, 8 // 2**i, 8 // 2**i, 8 // 2**i)) for i in range(3)]
    spec = LossSpec(name="dice_ce", dice_weight=0.5, ce_weight=1.5)

    def oracle(logits: np.ndarray, target: np.ndarray) -> float:
        return 0.5 * np_dice_loss(logits, target, spec.smooth) + 1.5 * np_ce_loss(logits, target)

    expected = (4 * oracle(heads[0], labels) + 2 * oracle(heads[1], labels[:, 1::2, 1::2, 1::2])
                + oracle(heads[2], labels[:, 2::4, 2::4, 2::4])) / 7
    assert deep_supervised_value(framework, spec, heads, labels) == pytest.approx(expected, abs=1e-5)
    assert deep_supervised_value(framework, spec, heads[:1], labels) == pytest.approx(oracle(heads[0], labels),
                                                                                      abs=1e-5)


def test_deep_supervision_heads_train_but_prediction_is_full_resolution(framework: str) -> None:
    seg: Any = frameworks.build("unet3d", framework, base_filters=4, depth=4, deep_supervision=2)
    image = np.random.default_rng(0).normal(size=(2, 1, 16, 8, 24)).astype(np.float32)
    shapes = [h.shape for h in head_outputs(framework, seg, image)]
    assert shapes == [(2, 4, 16, 8, 24), (2, 4, 8, 4, 12), (2, 4, 4, 2, 6)]
    probs = seg.predict_patches(image)
    assert probs.shape == (2, 4, 16, 8, 24)
    main = head_outputs(framework, seg, image)[0]
    softmax = np.exp(main - main.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, softmax / softmax.sum(axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize(("params", "needle"), [
    ({"depth": 3, "deep_supervision": 2}, "unet3d.deep_supervision=2 needs more decoder levels than depth=3"),
    ({"deep_supervision": -1}, "unet3d.deep_supervision=-1 must be an integer >= 0"),
    ({"block": "dense"}, "unet3d.block='dense' is unknown"),
])
def test_bad_options_name_the_setting(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        UNet3DConfig(**params)
    assert needle in info.value.message


# --- residual blocks -------------------------------------------------------------------------------------
def test_residual_block_adds_its_shortcut_before_the_relu() -> None:
    torch = pytest.importorskip("torch")
    from adapters.torch.nets.unet3d import ResidualBlock

    x = torch.randn(1, 3, 4, 4, 4)
    same = ResidualBlock(3, 3, convs=2, norm="none")
    projected = ResidualBlock(3, 5, convs=1, norm="none")
    with torch.no_grad():
        for block in (same, projected):
            for module in block.main.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.weight.zero_()
                    module.bias.fill_(-0.25)  # main(x) = -0.25 everywhere (the inner ReLU zeroes it first)
        torch.testing.assert_close(same(x), torch.relu(x - 0.25))  # identity shortcut
        torch.testing.assert_close(projected(x), torch.relu(projected.shortcut(x) - 0.25))  # 1x1x1 projection
    assert isinstance(same.shortcut, torch.nn.Identity) and projected.shortcut.kernel_size == (1, 1, 1)


def test_the_default_unet_is_the_papers(framework: str) -> None:
    """No option on: the same parameters as before the options existed (the checkpoint layout is unchanged)."""
    default: Any = frameworks.build("unet3d", framework, base_filters=4, depth=3)
    if framework == "torch":
        assert not any(name.startswith("aux_heads") or ".shortcut" in name for name in default.net.state_dict())
    else:
        assert len(default.model.outputs) == 1
        assert [type(layer).__name__ for layer in default.model.layers].count("Add") == 2  # the two skips


# --- every option on ---------------------------------------------------------------------------------------
def test_a_tiny_unet_with_every_training_option_learns_the_spheres(framework: str) -> None:
    """Residual blocks, deep supervision, instance norm, Dice + CE, cosine with warm-up per step, flips and
    intensity augmentation, class-aware sampling: still learns (and predicts) nested spheres."""
    image, label = spheres(size=32)
    subject = PatchSubject(image=image, label=label, mask=np.ones(label.shape, bool))
    augment = AugmentSpec(flip_prob=(0.5, 0.5, 0.5), scale_prob=0.3, scale_range=(0.9, 1.1), shift_prob=0.3,
                          shift_range=(-0.1, 0.1), gamma_prob=0.3, noise_prob=0.3, noise_std=(0.0, 0.05))
    source = PatchSampler([subject], 16, batch_size=2, seed=0, mode="random", patches_per_epoch=20,
                          oversample=True, oversample_class=3, oversample_factor=2, augment=augment)
    seg: Any = frameworks.build("unet3d", framework, base_filters=8, depth=3, norm="instance", block="residual",
                              deep_supervision=1)
    spec = quick_spec(framework, epochs=10, loss=LossSpec(name="dice_ce"), optimizer=OptimizerSpec(name="adam", lr=1e-2),
                      scheduler=SchedulerSpec(kind="cosine", warmup_epochs=1, interval="step", min_lr=1e-4))
    history = seg.fit(source, None, spec, NullLogger())
    pred = seg.predict_patches(image[None, None]).argmax(axis=1)[0]
    # seeds 0-3: Dice 0.92-0.95 (torch), 0.90-0.91 (tf) in these 10 short epochs
    assert foreground_dice(pred, label) > 0.85, [round(r.train_loss, 3) for r in history.epochs]
    lrs = [r.lr for r in history.epochs]
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[1]  # the warm-up rose, the cosine fell
