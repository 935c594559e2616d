"""The training losses of both adapters against a numpy oracle (tests/adapter_helpers.py): Eq. 2's Dice per
sample or over the batch, cross-entropy, their weighted sum."""

from __future__ import annotations

import numpy as np
import pytest
from adapter_helpers import FRAMEWORKS, np_ce_loss, np_dice_loss

from bench.contract import LossSpec


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    pytest.importorskip(f"adapters.{name}.segmenter")
    return name


def loss_value(framework: str, spec: LossSpec, logits: np.ndarray, labels: np.ndarray) -> float:
    """The adapter's loss of channels-first logits (moved to channels-last for TF, as its boundary does)."""
    if framework == "torch":
        import torch

        from adapters.torch.losses import make_loss

        return float(make_loss(spec)(torch.tensor(logits, dtype=torch.float32), torch.from_numpy(labels)).item())
    import tensorflow as tf

    from adapters.tf import to_channels_last
    from adapters.tf.losses import make_loss as tf_make_loss

    return float(tf_make_loss(spec)(tf.constant(to_channels_last(logits.astype(np.float32))), tf.constant(labels)))


# --- losses against a numpy oracle ---------------------------------------------------------------------


@pytest.fixture
def logits_labels() -> tuple[np.ndarray, np.ndarray]:
    """Channels-first logits [B, K, X, Y, Z] and labels [B, X, Y, Z]."""
    rng = np.random.default_rng(42)
    logits = rng.normal(0, 3, size=(2, 4, 6, 5, 4))
    labels = rng.integers(0, 4, size=(2, 6, 5, 4))
    labels[1][labels[1] == 3] = 2  # class 3 absent from sample 1: exercises the smooth term
    return logits, labels


@pytest.mark.parametrize("spec", [LossSpec(name="dice"), LossSpec(name="dice", smooth=1.0), LossSpec(name="ce"),
                                  LossSpec(name="dice_ce", dice_weight=0.7, ce_weight=1.3),
                                  LossSpec(name="dice", dice_reduction="batch"),
                                  LossSpec(name="dice_ce", dice_reduction="batch", dice_weight=0.7, ce_weight=1.3)])
def test_losses_match_numpy_reference(framework: str, spec: LossSpec,
                                      logits_labels: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = logits_labels
    expected = {
        "dice": np_dice_loss(logits, labels, spec.smooth, spec.dice_reduction),
        "ce": np_ce_loss(logits, labels),
        "dice_ce": spec.dice_weight * np_dice_loss(logits, labels, spec.smooth, spec.dice_reduction)
        + spec.ce_weight * np_ce_loss(logits, labels),
    }[spec.name]
    assert loss_value(framework, spec, logits, labels) == pytest.approx(expected, abs=1e-5)


def test_perfect_prediction_gives_zero_loss(framework: str, logits_labels: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = logits_labels
    perfect = 30.0 * np.moveaxis(np.eye(4)[labels], -1, 1)  # channels-first one-hot logits
    assert loss_value(framework, LossSpec(name="dice"), perfect, labels) == pytest.approx(0.0, abs=1e-5)
    assert loss_value(framework, LossSpec(name="ce"), perfect, labels) == pytest.approx(0.0, abs=1e-5)
    assert loss_value(framework, LossSpec(name="dice"), -perfect, labels) > 0.5
    assert loss_value(framework, LossSpec(name="dice", dice_reduction="batch"), perfect, labels) == pytest.approx(
        0.0, abs=1e-5)


def test_batch_dice_ignores_which_patch_a_class_is_missing_from(framework: str) -> None:
    """A class present in one patch and absent from the other: per-sample Dice scores the empty patch's
    (correct) zero prediction as a Dice term near 1 only thanks to ``smooth``; batch Dice pools both patches
    and equals per-sample Dice of the two patches laid side by side as one sample."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, size=(2, 4, 4, 4, 4))
    labels = rng.integers(0, 4, size=(2, 4, 4, 4))
    labels[1][labels[1] == 1] = 0
    side_by_side = (np.concatenate([logits[0], logits[1]], axis=1)[None], np.concatenate([labels[0], labels[1]])[None])
    batch_spec = LossSpec(name="dice", dice_reduction="batch")
    assert loss_value(framework, batch_spec, logits, labels) == pytest.approx(
        loss_value(framework, LossSpec(name="dice"), *side_by_side), abs=1e-5)
    assert loss_value(framework, batch_spec, logits, labels) != pytest.approx(
        loss_value(framework, LossSpec(name="dice"), logits, labels), abs=1e-3)
