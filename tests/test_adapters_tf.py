"""Tests of the TensorFlow / Keras adapter (adapters/tf): networks, losses, optimizers, loop, segmenter."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adapter_helpers import (
    CropSource,
    RecordingLogger,
    foreground_dice,
    neuronet_count,
    np_ce_loss,
    np_dice_loss,
    spheres,
    unet3d_count,
    vnet_count,
)

import adapters
from adapters.tf import to_channels_first, to_channels_last, training
from adapters.tf.losses import make_loss
from adapters.tf.nets.neuronet import NeuroNet
from adapters.tf.nets.unet3d import UNet3D
from adapters.tf.nets.vnet import VNet
from adapters.tf.segmenter import NETS, WEIGHTS_FILE, TfSegmenter
from adapters.tf.training import (
    EarlyStopper,
    Plateau,
    evaluate,
    make_eval_step,
    make_optimizer,
    make_train_step,
    train_epoch,
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

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

# Small networks for tests where the architecture's size does not matter (the torch tests use the same).
SMALL: dict[str, dict[str, Any]] = {
    "unet3d": {"base_filters": 4, "depth": 3},
    "vnet": {"widths": (4, 8, 16, 32), "convs": (1, 1, 1, 1), "kernel_size": 3},
    "neuronet": {"filters": (4, 8, 16, 32)},
}


# --- synthetic data: three nested spheres (1 outermost .. 3 innermost) on a 32³ grid -----------------


def quick_spec(**changes: Any) -> TrainSpec:
    base: dict[str, Any] = {
        "epochs": 2, "optimizer": OptimizerSpec(name="adam", lr=1e-2), "loss": LossSpec(name="dice_ce"),
        "scheduler": SchedulerSpec(factor=1.0), "early_stopping": EarlyStoppingSpec(patience=0),
        "progress": False, "seed": 0,
    }
    return TrainSpec(**(base | changes))


@pytest.fixture(scope="module")
def small() -> dict[str, TfSegmenter]:
    """One small segmenter per architecture, shared by the read-only tests of this module."""
    return {name: TfSegmenter.build(name, **params) for name, params in SMALL.items()}


# --- shapes and patch-size rules ------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", list(NETS))
def test_output_shapes_for_every_patch_size(architecture: str, small: dict[str, TfSegmenter]) -> None:
    seg = small[architecture]
    rng = np.random.default_rng(0)
    for patch in [(32, 32, 32), (48, 48, 48), (64, 64, 64), (32, 16, 48)]:
        probs = seg.predict_patches(rng.normal(size=(1, 1, *patch)).astype(np.float32))
        assert probs.shape == (1, 4, *patch) and probs.dtype == np.float32, patch
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unet3d_variants_and_two_input_channels() -> None:
    seg = TfSegmenter.build("unet3d", in_channels=2, num_classes=3, base_filters=4, depth=2, convs_per_level=2,
                            skip="concat", norm="instance", dropout=0.2)
    batch = np.random.default_rng(1).normal(size=(2, 2, 8, 12, 16)).astype(np.float32)
    probs = seg.predict_patches(batch)
    assert probs.shape == (2, 3, 8, 12, 16)
    np.testing.assert_array_equal(probs, seg.predict_patches(batch))  # eval mode: dropout off


def test_channel_moves_are_inverse_transposes() -> None:
    x = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6)
    last = to_channels_last(x)
    assert last.shape == (2, 4, 5, 6, 3) and last.flags.c_contiguous
    assert last[1, 2, 3, 4, 0] == x[1, 0, 2, 3, 4]
    np.testing.assert_array_equal(to_channels_first(last), x)
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        to_channels_last(x[0])


@pytest.mark.parametrize(
    ("net", "bad", "divisor"),
    [(UNet3D(base_filters=2), (32, 36, 32), 8), (VNet(widths=(2, 2, 2, 2, 2), convs=(1,) * 5), (24, 32, 32), 16),
     (NeuroNet(filters=(2, 2, 2, 2)), (16, 16, 12), 8), (NeuroNet(filters=(2, 2), strides=(1, 3)), (6, 6, 4), 3)],
)
def test_check_patch_size_names_the_bad_size(net: Any, bad: tuple[int, int, int], divisor: int) -> None:
    assert net.divisor == divisor
    net.check_patch_size(tuple(divisor * k for k in (1, 2, 3)))
    with pytest.raises(ConfigError, match=f"multiples of {divisor}") as info:
        net.check_patch_size(bad)
    assert str(bad) in str(info.value)


def test_segmenter_rejects_bad_patch_sizes_in_predict_and_fit(small: dict[str, TfSegmenter]) -> None:
    seg = small["unet3d"]
    with pytest.raises(ConfigError, match=r"\(16, 10, 16\)"):
        seg.predict_patches(np.zeros((1, 1, 16, 10, 16), np.float32))
    with pytest.raises(ConfigError, match=r"\[B, 1, X, Y, Z\]"):
        seg.predict_patches(np.zeros((1, 2, 16, 16, 16), np.float32))
    image, label = spheres(size=12)
    with pytest.raises(ConfigError, match=r"\(6, 6, 6\)"):
        seg.fit(CropSource(image, label, 6, 1, 1), None, quick_spec(), NullLogger())


@pytest.mark.parametrize(
    ("cls", "kwargs", "shown"),
    [
        (UNet3D, {"base_filters": 0}, "base_filters=0"),
        (UNet3D, {"depth": 2.5}, "depth=2.5"),
        (UNet3D, {"convs_per_level": True}, "convs_per_level=True"),
        (UNet3D, {"skip": "sum"}, "skip='sum'"),
        (UNet3D, {"norm": "group"}, "norm='group'"),
        (UNet3D, {"dropout": 1.0}, "dropout=1.0"),
        (UNet3D, {"num_classes": 1}, "num_classes=1"),
        (VNet, {"widths": ()}, "widths=()"),
        (VNet, {"widths": (8, 16), "convs": (1, 1, 1)}, "convs=[1, 1, 1]"),
        (VNet, {"kernel_size": 0}, "kernel_size=0"),
        (VNet, {"convs": (1, 0, 1, 1, 1)}, "convs[1]=0"),
        (NeuroNet, {"strides": (2, 2, 2, 2)}, "strides=[2, 2, 2, 2]"),
        (NeuroNet, {"filters": (8, "a", 8, 8)}, "filters[1]='a'"),
        (NeuroNet, {"norm": "layer"}, "norm='layer'"),
        (NeuroNet, {"units_per_scale": 0}, "units_per_scale=0"),
        (NeuroNet, {"in_channels": -1}, "in_channels=-1"),
    ],
)
def test_bad_constructor_arguments_name_the_value(cls: type, kwargs: dict[str, Any], shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert shown in str(info.value)


def test_build_rejects_unknown_architecture_and_parameter() -> None:
    with pytest.raises(ConfigError, match="'unet2d'"):
        TfSegmenter.build("unet2d")
    with pytest.raises(ConfigError, match="'widths'"):
        TfSegmenter.build("unet3d", widths=(8, 16))
    with pytest.raises(ConfigError, match="'resnet'"):
        adapters.build("resnet", "tf")


# --- parameter counts, computed by hand from the shared spec ---------------------------------------------


COUNTS: dict[str, Callable[[], int]] = {"unet3d": unet3d_count, "vnet": vnet_count, "neuronet": neuronet_count}
DEFAULT_COUNTS = {"unet3d": 2_087_812, "vnet": 43_934_020, "neuronet": 2_451_060}  # as the torch tests record


@pytest.mark.parametrize("architecture", list(NETS))
def test_default_parameter_counts_match_the_spec(architecture: str) -> None:
    assert COUNTS[architecture]() == DEFAULT_COUNTS[architecture]
    seg = TfSegmenter.build(architecture)
    assert seg.parameter_count() == DEFAULT_COUNTS[architecture]
    assert seg.describe()["trainable_parameters"] == DEFAULT_COUNTS[architecture]


def test_default_unet3d_gives_softmax_of_input_size() -> None:
    seg = TfSegmenter.build("unet3d")
    probs = seg.predict_patches(np.random.default_rng(0).normal(size=(2, 1, 16, 16, 24)).astype(np.float32))
    assert probs.shape == (2, 4, 16, 16, 24) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("architecture", "kwargs", "by_hand"),
    [
        ("unet3d", {"base_filters": 64}, unet3d_count(base=64)),
        ("unet3d", {"base_filters": 8, "depth": 3, "convs_per_level": 2, "skip": "concat", "norm": "batch"},
         unet3d_count(base=8, depth=3, convs=2, skip="concat", norm="batch")),
        ("unet3d", {"in_channels": 2, "num_classes": 3, "base_filters": 4, "norm": "instance", "dropout": 0.3},
         unet3d_count(in_ch=2, k=3, base=4, norm="instance")),
        ("vnet", {"widths": (8, 16, 32), "convs": (2, 1, 3), "kernel_size": 3},
         vnet_count(widths=(8, 16, 32), convs=(2, 1, 3), kernel=3)),
        ("neuronet", {"filters": (8, 16, 32), "strides": (1, 2, 1), "units_per_scale": 3, "norm": "none"},
         neuronet_count(filters=(8, 16, 32), strides=(1, 2, 1), units=3, norm="none")),
        ("neuronet", {"norm": "instance", "num_classes": 2}, neuronet_count(k=2, norm="instance")),
    ],
)
def test_variant_parameter_counts_match_the_spec(architecture: str, kwargs: dict[str, Any], by_hand: int) -> None:
    assert TfSegmenter.build(architecture, **kwargs).parameter_count() == by_hand


def test_base_64_unet_reaches_512_feature_maps() -> None:
    model = UNet3D(base_filters=64).build()
    assert max(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv3D)) == 512
    assert unet3d_count(base=64) == 8_347_396


# --- losses against a numpy oracle ---------------------------------------------------------------------


@pytest.fixture
def logits_labels() -> tuple[np.ndarray, np.ndarray]:
    """Channels-first logits [B, K, X, Y, Z] and labels [B, X, Y, Z]."""
    rng = np.random.default_rng(42)
    logits = rng.normal(0, 3, size=(2, 4, 6, 5, 4))
    labels = rng.integers(0, 4, size=(2, 6, 5, 4))
    labels[1][labels[1] == 3] = 2  # class 3 absent from sample 1: exercises the smooth term
    return logits, labels


def tf_loss(spec: LossSpec, logits: np.ndarray, labels: np.ndarray) -> float:
    """The adapter's loss on channels-first numpy, moved to channels-last as the adapter's boundary does."""
    logits_last = tf.constant(to_channels_last(logits.astype(np.float32)))
    return float(make_loss(spec)(logits_last, tf.constant(labels)))


@pytest.mark.parametrize("spec", [LossSpec(name="dice"), LossSpec(name="dice", smooth=1.0), LossSpec(name="ce"),
                                  LossSpec(name="dice_ce", dice_weight=0.7, ce_weight=1.3)])
def test_losses_match_numpy_reference(spec: LossSpec, logits_labels: tuple[np.ndarray, np.ndarray]) -> None:
    logits, labels = logits_labels
    expected = {
        "dice": np_dice_loss(logits, labels, spec.smooth),
        "ce": np_ce_loss(logits, labels),
        "dice_ce": spec.dice_weight * np_dice_loss(logits, labels, spec.smooth)
        + spec.ce_weight * np_ce_loss(logits, labels),
    }[spec.name]
    assert tf_loss(spec, logits, labels) == pytest.approx(expected, abs=1e-5)


def test_perfect_prediction_gives_zero_loss(logits_labels: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = logits_labels
    perfect = 30.0 * np.moveaxis(np.eye(4)[labels], -1, 1)  # channels-first one-hot logits
    assert tf_loss(LossSpec(name="dice"), perfect, labels) == pytest.approx(0.0, abs=1e-5)
    assert tf_loss(LossSpec(name="ce"), perfect, labels) == pytest.approx(0.0, abs=1e-5)
    assert tf_loss(LossSpec(name="dice"), -perfect, labels) > 0.5


# --- optimizers -----------------------------------------------------------------------------------------


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
def test_optimizer_hyperparameters_reach_keras(spec: OptimizerSpec, cls: str, expected: dict[str, Any]) -> None:
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


def test_sgd_weight_decay_is_coupled_l2_as_in_torch() -> None:
    """One SGD step must give w - lr * (dL/dw + weight_decay * w) for every variable, biases included."""
    inputs = keras.Input((None, None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv3D(4, 1)(inputs))
    model.layers[-1].bias.assign(np.array([0.1, -0.2, 0.3, 0.4], np.float32))
    image = tf.constant(np.random.default_rng(0).normal(size=(1, 2, 2, 2, 1)).astype(np.float32))
    label = tf.constant(np.array([[[[0, 1], [2, 3]], [[3, 2], [1, 0]]]], np.int64))
    loss_fn = make_loss(LossSpec(name="ce"))
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = loss_fn(model(image), label)
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    lr, decay = 0.1, 0.05
    step = make_train_step(model, make_optimizer(OptimizerSpec(name="sgd", lr=lr)), loss_fn, decay)
    step(image, label)
    for w0, g, w1 in zip(before, grads, model.trainable_variables, strict=True):
        np.testing.assert_allclose(w1.numpy(), w0 - lr * (g + decay * w0), rtol=1e-5, atol=1e-7)


# --- scheduler and early stopping rules ------------------------------------------------------------------


def test_plateau_follows_torch_rules() -> None:
    plateau = Plateau(SchedulerSpec(factor=0.5, patience=1, min_lr=0.2, threshold=0.1))
    lrs, lr = [], 1.0
    for value in [10.0, 9.5, 9.4, 8.0, 7.9, 7.8, 7.7, 7.6]:  # 9.5 is not < 10 * 0.9: not an improvement
        lr = plateau.step(value, lr)
        lrs.append(lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2]
    disabled = Plateau(SchedulerSpec(factor=1.0, patience=1))
    assert [disabled.step(v, 1.0) for v in (1.0, 2.0, 3.0, 4.0)] == [1.0] * 4


def test_early_stopper_counts_epochs_without_min_delta_improvement() -> None:
    stopper = EarlyStopper(EarlyStoppingSpec(patience=2, min_delta=0.1))
    # 0.95 and 0.8 do not beat the best by more than 0.1; the second such epoch in a row stops
    assert [stopper.step(v) for v in (1.0, 0.95, 0.85, 0.8, 0.79)] == [False, False, False, False, True]
    never = EarlyStopper(EarlyStoppingSpec(patience=0))
    assert not any(never.step(v) for v in (1.0, 2.0, 3.0, 4.0))


# --- save / load ----------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    seg = TfSegmenter.build("unet3d", base_filters=4, depth=2, norm="batch")
    image, label = spheres(size=16)
    seg.fit(CropSource(image, label, 8, 2, 2), None, quick_spec(epochs=1), NullLogger())
    moving_means = [v for v in seg.model.non_trainable_weights if "moving_mean" in v.path]
    assert moving_means and all(np.any(v.numpy() != 0) for v in moving_means)  # BN statistics moved
    seg.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "segmenter.json").read_text())
    assert meta["framework"] == "tf" and meta["architecture"] == "unet3d"
    assert meta["params"]["norm"] == "batch" and meta["versions"]["tensorflow"] == tf.__version__
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["segmenter.json", WEIGHTS_FILE]

    batch = image[None, None, :16, :8, :16].copy()
    loaded = adapters.load(tmp_path / "model")  # reads the framework, then calls TfSegmenter.load
    assert isinstance(loaded, Segmenter) and isinstance(loaded, TfSegmenter)
    np.testing.assert_array_equal(loaded.predict_patches(batch), seg.predict_patches(batch))
    assert loaded.describe() == seg.describe()
    described = seg.describe()
    assert described["trainable_parameters"] == seg.parameter_count() == unet3d_count(base=4, depth=2, norm="batch")
    assert described["framework"] == "tf" and described["device"] == "/CPU:0"


def test_corrupt_missing_or_foreign_weights_raise_data_error(tmp_path: Path) -> None:
    TfSegmenter.build("unet3d", base_filters=2, depth=2).save(tmp_path / "unet")
    TfSegmenter.build("unet3d", base_filters=2, depth=3).save(tmp_path / "deeper")
    TfSegmenter.build("unet3d", base_filters=4, depth=2).save(tmp_path / "wider")
    weights = tmp_path / "unet" / WEIGHTS_FILE
    good = weights.read_bytes()

    for foreign in ("deeper", "wider"):  # more variables / same variables with other shapes
        weights.write_bytes((tmp_path / foreign / WEIGHTS_FILE).read_bytes())
        with pytest.raises(DataError, match="do not fit") as info:
            TfSegmenter.load(tmp_path / "unet")
        assert str(weights) in str(info.value)

    weights.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(DataError, match="corrupt") as info:
        TfSegmenter.load(tmp_path / "unet")
    assert str(weights) in str(info.value)
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=WEIGHTS_FILE):
        TfSegmenter.load(tmp_path / "unet")
    weights.unlink()
    with pytest.raises(DataError, match="missing"):
        TfSegmenter.load(tmp_path / "unet")

    meta = tmp_path / "wider" / "segmenter.json"
    meta.write_text("{not json")
    with pytest.raises(DataError, match=r"segmenter\.json"):
        TfSegmenter.load(tmp_path / "wider")
    meta.write_text(json.dumps({"framework": "torch", "architecture": "unet3d", "params": {}}))
    with pytest.raises(DataError, match="'torch'"):
        TfSegmenter.load(tmp_path / "wider")
    meta.write_text(json.dumps({"framework": "tf", "architecture": "vnet", "params": {"widths": []}}))
    with pytest.raises(DataError, match=r"segmenter\.json"):
        TfSegmenter.load(tmp_path / "wider")
    with pytest.raises(DataError, match="missing"):
        TfSegmenter.load(tmp_path / "nowhere")


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path: Path) -> None:
    seg = TfSegmenter.build("unet3d", base_filters=2, depth=2)
    seg.save(tmp_path)
    seg.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmenter.json", WEIGHTS_FILE]


# --- training -------------------------------------------------------------------------------------------

LEARNING: dict[str, tuple[dict[str, Any], LossName, float, int]] = {  # params, loss, Adam lr, epochs of 10 steps
    "unet3d": ({"base_filters": 8, "depth": 3}, "dice_ce", 1e-2, 8),
    "vnet": ({"widths": (8, 16, 32, 64), "convs": (1, 1, 1, 1), "kernel_size": 3}, "dice_ce", 5e-3, 8),
    "neuronet": ({"filters": (8, 16, 32), "strides": (1, 2, 2), "units_per_scale": 1}, "dice", 5e-3, 8),
}


@pytest.mark.parametrize("architecture", list(LEARNING))
def test_learns_nested_spheres(architecture: str) -> None:
    params, loss, lr, epochs = LEARNING[architecture]
    image, label = spheres()
    seg = TfSegmenter.build(architecture, **params)
    spec = quick_spec(epochs=epochs, loss=LossSpec(name=loss), optimizer=OptimizerSpec(name="adam", lr=lr))
    history = seg.fit(CropSource(image, label, 16, 4, 10), None, spec, NullLogger())
    pred = seg.predict_patches(image[None, None]).argmax(axis=1)[0]
    assert foreground_dice(pred, label) > 0.9, [round(r.train_loss, 3) for r in history.epochs]
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss


def test_same_seed_gives_bit_identical_fits_different_seed_does_not() -> None:
    image, label = spheres(size=16)

    def fitted(construction_seed: int) -> TfSegmenter:
        keras.utils.set_random_seed(construction_seed)  # the first fit re-initialises from spec.seed regardless
        seg = TfSegmenter.build("unet3d", base_filters=4, depth=2, dropout=0.2)
        seg.fit(CropSource(image, label, 8, 2, 3, seed=0), None, quick_spec(seed=0), NullLogger())
        return seg

    a, b = fitted(1), fitted(2)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    batch = image[None, None, :8, :8, :16].copy()
    np.testing.assert_array_equal(a.predict_patches(batch), b.predict_patches(batch))
    # what the first fit does to initialise: seed, then build; another seed gives other weights
    initial = []
    for seed in (0, 1):
        training.configure_runtime(quick_spec(seed=seed))
        initial.append(a.net.build().get_weights()[0])
    assert not np.array_equal(initial[0], initial[1])


def test_early_stopping_restores_best_weights(capsys: pytest.CaptureFixture[str]) -> None:
    image, label = spheres(size=16)
    wrong = (label + 1) % 4  # validation labels that get worse as training gets better
    val = CropSource(image, wrong, 8, 2, 2, seed=5, fixed=True)
    seg = TfSegmenter.build("unet3d", base_filters=4, depth=2)
    logger = RecordingLogger()
    spec = quick_spec(epochs=10, early_stopping=EarlyStoppingSpec(patience=2), progress=True)
    history = seg.fit(CropSource(image, label, 8, 2, 4), val, spec, logger)

    val_losses = [r.val_loss for r in history.epochs if r.val_loss is not None]
    assert len(val_losses) == len(history.epochs)
    assert logger.records == history.epochs
    assert history.best_epoch == int(np.argmin(val_losses))
    assert history.stopped_early and len(history.epochs) == history.best_epoch + 3 < 10
    restored, dice = evaluate(make_eval_step(seg.model, make_loss(spec.loss)), val.batches(0))
    assert restored == pytest.approx(val_losses[history.best_epoch], abs=1e-6)
    assert restored != pytest.approx(val_losses[-1], abs=1e-4)
    assert set(dice) == {"CSF", "GM", "WM"} and history.epochs[0].val_dice is not None
    assert all(r.patches_per_s > 0 and r.seconds > 0 for r in history.epochs)
    assert [r.epoch for r in history.epochs] == list(range(len(history.epochs)))
    assert capsys.readouterr().err == ""  # progress stays quiet when stderr is not a terminal


def test_validation_dice_is_accumulated_over_all_voxels() -> None:
    class Fixed:
        def __init__(self, batches: list[PatchBatch]) -> None:
            self.batches_ = batches

        def batches(self, epoch: int) -> Iterator[PatchBatch]:
            return iter(self.batches_)

    first = PatchBatch(np.array([[1, 2, 0, 4], [1, 3, 0, 4], [1, 3, 0, 5]], np.float32)[None, None, :, :, None],
                       np.zeros((1, 3, 4, 1), np.int64))
    second = PatchBatch(np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]], np.float32)[None, None, :, :, None],
                        np.zeros((1, 3, 4, 1), np.int64))

    def fake(image: Any, label: Any) -> tuple[Any, ...]:  # rows of the image: intersection, predicted, true
        counts = image.numpy()[0, :, :, 0, 0].astype(np.int64)
        return tf.constant(1.0), tf.constant(counts[0]), tf.constant(counts[1]), tf.constant(counts[2])

    loss, dice = evaluate(fake, Fixed([first, second]).batches(0))
    # CSF: 2*(2+1)/((3+1)+(3+1)) ; GM: no voxels anywhere -> 1.0 ; WM: 2*4/(4+5)
    assert loss == 1.0
    assert dice == pytest.approx({"CSF": 6 / 8, "GM": 1.0, "WM": 8 / 9})


def test_reduce_lr_on_plateau_lowers_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    def spy(spec: OptimizerSpec) -> Any:
        made.append(make_optimizer(spec))
        return made[-1]

    monkeypatch.setattr(training, "make_optimizer", spy)
    image, label = spheres(size=16)
    val = CropSource(image, label, 8, 1, 1, fixed=True)
    seg = TfSegmenter.build("unet3d", base_filters=2, depth=2)
    spec = quick_spec(
        epochs=7, optimizer=OptimizerSpec(name="sgd", lr=0.01),
        # an improvement must cut the val loss by 99 %: no epoch after the first improves
        scheduler=SchedulerSpec(factor=0.5, patience=1, min_lr=0.003, threshold=0.99),
    )
    history = seg.fit(CropSource(image, label, 8, 1, 1), val, spec, NullLogger())
    # epoch 0 sets the best value; every later epoch is a bad epoch; the lr drops once >patience bad epochs
    assert [r.lr for r in history.epochs] == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.003, 0.003])
    assert not history.stopped_early and len(history.epochs) == 7
    assert float(made[0].learning_rate) == pytest.approx(0.003)  # the optimizer really got the lower lr


def test_non_finite_loss_names_epoch_and_step() -> None:
    image, label = spheres(size=8)
    batches = list(CropSource(image, label, 8, 1, 3).batches(0))
    losses = iter([0.5, 0.4, math.nan])

    def step(image: Any, label: Any) -> Any:  # a stand-in train step whose third loss is NaN
        assert image.shape == (1, 8, 8, 8, 1) and label.dtype == tf.int64  # channels-last at the boundary
        return tf.constant(next(losses))

    with pytest.raises(BenchError, match=r"became nan at epoch 3, step 2.*lower optimizer.lr"):
        train_epoch(step, batches, epoch=3)
    seen: list[tuple[int, float]] = []
    assert train_epoch(lambda image, label: tf.constant(1.0), batches, 0, lambda n, v: seen.append((n, v))) == (1.0, 3)
    assert seen == [(1, 1.0), (2, 1.0), (3, 1.0)]
    with pytest.raises(BenchError, match="no batches in epoch 4"):
        train_epoch(step, [], epoch=4)


def test_non_finite_input_is_refused_before_training() -> None:
    image, label = spheres(size=8)
    image[2, 3, 4] = np.nan  # TF's fused ReLU would turn it into 0 and train on silently
    seg = TfSegmenter.build("unet3d", base_filters=2, depth=2)
    with pytest.raises(BenchError, match=r"epoch 0, step 0 holds non-finite intensities"):
        seg.fit(CropSource(image, label, 8, 1, 1), None, quick_spec(), NullLogger())


def test_configure_threads_before_build_sets_both_tf_pools() -> None:
    """A fresh process: adapters.configure_threads fixes intra- and inter-op pools before TF starts."""
    import subprocess
    import sys

    code = ("import adapters, tensorflow as tf; adapters.configure_threads('tf', 1); "
            "adapters.build('unet3d', 'tf', base_filters=2, depth=2); t = tf.config.threading; "
            "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split()[-2:] == ["1", "1"]
