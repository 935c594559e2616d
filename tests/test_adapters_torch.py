"""Tests of the PyTorch adapter: network shapes and parameter counts (against the shared spec), losses
against a numpy oracle, optimizer/scheduler/early-stopping semantics, save/load, learning, determinism."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
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
from adapters.torch.losses import ce_loss, dice_loss, make_loss
from adapters.torch.nets.neuronet import NeuroNet
from adapters.torch.nets.unet3d import UNet3D
from adapters.torch.nets.vnet import VNet
from adapters.torch.segmenter import NETWORKS, TorchSegmenter
from adapters.torch.training import dice_per_class, evaluate, make_optimizer
from bench.contract import (
    EarlyStoppingSpec,
    LossSpec,
    NullLogger,
    OptimizerSpec,
    SchedulerSpec,
    Segmenter,
    TrainSpec,
)
from bench.errors import BenchError, ConfigError, DataError

# Small networks for tests where the architecture's size does not matter.
SMALL: dict[str, dict[str, Any]] = {
    "unet3d": {"base_filters": 4, "depth": 3},
    "vnet": {"widths": (4, 8, 16, 32), "convs": (1, 1, 1, 1), "kernel_size": 3},
    "neuronet": {"filters": (4, 8, 16, 32), "units_per_scale": 1},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: much faster than two on a shared, loaded 2-core machine (fits set it too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- synthetic data: three nested spheres (1 outermost .. 3 innermost) on a 32³ grid -----------------


def quick_spec(**changes: Any) -> TrainSpec:
    base: dict[str, Any] = {
        "epochs": 2, "optimizer": OptimizerSpec(name="adam", lr=1e-2), "loss": LossSpec(name="dice_ce"),
        "scheduler": SchedulerSpec(factor=1.0), "early_stopping": EarlyStoppingSpec(patience=0),
        "num_threads": 1, "progress": False, "seed": 0,
    }
    return TrainSpec(**(base | changes))


# --- shapes and patch-size rules ------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", list(NETWORKS))
@pytest.mark.parametrize("patch", [(32, 32, 32), (48, 48, 48), (64, 64, 64), (32, 16, 32)])
def test_output_shape_small_networks(architecture: str, patch: tuple[int, int, int]) -> None:
    net = NETWORKS[architecture](**SMALL[architecture])
    with torch.no_grad():
        out = net(torch.randn(1, 1, *patch))
    assert out.shape == (1, 4, *patch)


@pytest.mark.parametrize("architecture", list(NETWORKS))
def test_default_networks_give_softmax_of_input_size(architecture: str) -> None:
    seg = TorchSegmenter.build(architecture)
    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    probs = seg.predict_patches(batch)
    assert probs.shape == (2, 4, 16, 16, 16) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unet3d_variants_and_two_input_channels() -> None:
    net = UNet3D(in_channels=2, num_classes=3, base_filters=4, depth=2, convs_per_level=2, skip="concat",
                 norm="instance", dropout=0.2)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 2, 8, 12, 16)).shape == (2, 3, 8, 12, 16)


@pytest.mark.parametrize(
    ("net", "bad", "divisor"),
    [(UNet3D(base_filters=2), (32, 36, 32), 8), (VNet(widths=(2, 2, 2, 2, 2), convs=(1,) * 5), (24, 32, 32), 16),
     (NeuroNet(filters=(2, 2, 2, 2)), (16, 16, 12), 8), (NeuroNet(filters=(2, 2), strides=(1, 3)), (6, 6, 4), 3)],
)
def test_check_patch_size_names_the_bad_size(net: Any, bad: tuple[int, int, int], divisor: int) -> None:
    assert net.divisor == divisor
    good = tuple(divisor * k for k in (1, 2, 3))
    assert net.check_patch_size(good) == good
    with pytest.raises(ConfigError, match=str(divisor)) as info:
        net.check_patch_size(bad)
    assert str(bad) in str(info.value)


def test_segmenter_rejects_bad_patch_sizes_in_predict_and_fit() -> None:
    seg = TorchSegmenter.build("unet3d", base_filters=2, depth=3)
    with pytest.raises(ConfigError, match=r"\(16, 10, 16\)"):
        seg.predict_patches(np.zeros((1, 1, 16, 10, 16), np.float32))
    with pytest.raises(ConfigError, match="not"):
        seg.predict_patches(np.zeros((1, 2, 16, 16, 16), np.float32))
    image, label = spheres(size=12)
    with pytest.raises(ConfigError, match="6"):
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
        (VNet, {"widths": (8, 16), "convs": (1, 1, 1)}, "convs=(1, 1, 1)"),
        (VNet, {"kernel_size": 0}, "kernel_size=0"),
        (VNet, {"convs": (1, 0, 1, 1, 1)}, "convs=(1, 0, 1, 1, 1)"),
        (NeuroNet, {"strides": (2, 2, 2, 2)}, "strides=(2, 2, 2, 2)"),
        (NeuroNet, {"filters": (8, "a", 8, 8)}, "filters=(8, 'a', 8, 8)"),
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
        TorchSegmenter.build("unet2d")
    with pytest.raises(ConfigError, match="'widths'"):
        TorchSegmenter.build("unet3d", widths=(8, 16))
    with pytest.raises(ConfigError, match="'resnet'"):
        adapters.build("resnet", "torch")


# --- parameter counts, computed by hand from the shared spec ---------------------------------------------


# Default-argument counts, recorded here for the TensorFlow adapter to match.
DEFAULT_COUNTS = {"unet3d": 2_087_812, "vnet": 43_934_020, "neuronet": 2_451_060}


@pytest.mark.parametrize("architecture", list(NETWORKS))
def test_default_parameter_counts_match_the_spec(architecture: str) -> None:
    counters: dict[str, Callable[[], int]] = {"unet3d": unet3d_count, "vnet": vnet_count,
                                              "neuronet": neuronet_count}
    by_hand = counters[architecture]()
    assert by_hand == DEFAULT_COUNTS[architecture]
    assert TorchSegmenter.build(architecture).parameter_count() == by_hand


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
    assert TorchSegmenter.build(architecture, **kwargs).parameter_count() == by_hand


def test_base_64_unet_reaches_512_feature_maps() -> None:
    net = UNet3D(base_filters=64)
    assert max(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv3d)) == 512
    assert unet3d_count(base=64) == 8_347_396


# --- losses against a numpy oracle ---------------------------------------------------------------------


@pytest.fixture
def logits_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    logits = rng.normal(0, 3, size=(2, 4, 6, 5, 4))
    labels = rng.integers(0, 4, size=(2, 6, 5, 4))
    labels[1][labels[1] == 3] = 2  # class 3 absent from sample 1: exercises the smooth term
    return logits, labels


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
    value = make_loss(spec)(torch.tensor(logits, dtype=torch.float32), torch.from_numpy(labels)).item()
    assert value == pytest.approx(expected, abs=1e-5)


def test_perfect_prediction_gives_zero_loss(logits_labels: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = logits_labels
    labels_t = torch.from_numpy(labels)
    logits = 30.0 * torch.nn.functional.one_hot(labels_t, 4).permute(0, 4, 1, 2, 3).float()
    assert dice_loss(logits, labels_t).item() == pytest.approx(0.0, abs=1e-5)
    assert ce_loss(logits, labels_t).item() == pytest.approx(0.0, abs=1e-5)
    assert dice_loss(-logits, labels_t).item() > 0.5


def test_dice_per_class_from_confusion_matrix() -> None:
    confusion = np.array([[5, 0, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 2, 0, 4]])  # rows: truth
    dice = dice_per_class(confusion)
    assert dice == pytest.approx({"CSF": 6 / 9, "GM": 1.0, "WM": 8 / 10})


# --- optimizer hyperparameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected", "cls"),
    [
        (OptimizerSpec(name="adadelta", lr=1.0, rho=0.9, eps=1e-6),
         {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}, torch.optim.Adadelta),
        (OptimizerSpec(name="adam", lr=3e-4, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-5),
         {"lr": 3e-4, "betas": (0.8, 0.99), "eps": 1e-7, "weight_decay": 1e-5, "amsgrad": False}, torch.optim.Adam),
        (OptimizerSpec(name="sgd", lr=0.05, momentum=0.95, weight_decay=1e-4),
         {"lr": 0.05, "momentum": 0.95, "weight_decay": 1e-4, "nesterov": False, "dampening": 0.0}, torch.optim.SGD),
    ],
)
def test_optimizer_hyperparameters_reach_torch(spec: OptimizerSpec, expected: dict[str, Any], cls: type) -> None:
    optimizer = make_optimizer(UNet3D(base_filters=2, depth=2).parameters(), spec)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key


# --- save / load ----------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    seg = TorchSegmenter.build("neuronet", filters=(4, 8), strides=(1, 2), units_per_scale=1)
    image, label = spheres(size=16)
    seg.fit(CropSource(image, label, 8, 2, 2), None, quick_spec(epochs=1), NullLogger())  # moves BN stats
    seg.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "segmenter.json").read_text())
    assert meta["framework"] == "torch" and meta["architecture"] == "neuronet"
    assert meta["params"]["filters"] == [4, 8] and meta["versions"]["torch"] == torch.__version__
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["segmenter.json", "weights.pt"]

    batch = image[None, None, :16, :8, :16].copy()
    loaded = TorchSegmenter.load(tmp_path / "model")
    via_registry = adapters.load(tmp_path / "model")
    assert isinstance(via_registry, Segmenter) and isinstance(via_registry, TorchSegmenter)
    np.testing.assert_array_equal(loaded.predict_patches(batch), seg.predict_patches(batch))
    np.testing.assert_array_equal(via_registry.predict_patches(batch), seg.predict_patches(batch))
    assert loaded.describe() == seg.describe()
    described = seg.describe()
    assert described["trainable_parameters"] == seg.parameter_count() == neuronet_count(
        filters=(4, 8), strides=(1, 2), units=1)
    assert described["framework"] == "torch" and described["device"] == "cpu"


def test_corrupt_missing_or_foreign_weights_raise_data_error(tmp_path: Path) -> None:
    TorchSegmenter.build("unet3d", **SMALL["unet3d"]).save(tmp_path / "unet")
    TorchSegmenter.build("vnet", **SMALL["vnet"]).save(tmp_path / "vnet")
    TorchSegmenter.build("unet3d", base_filters=8, depth=3).save(tmp_path / "wider")
    weights = tmp_path / "unet" / "weights.pt"
    good = weights.read_bytes()

    for foreign in ("vnet", "wider"):
        shutil.copy(tmp_path / foreign / "weights.pt", weights)
        with pytest.raises(DataError, match="do not match") as info:
            TorchSegmenter.load(tmp_path / "unet")
        assert str(weights) in str(info.value)

    weights.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(DataError, match="corrupt") as info:
        TorchSegmenter.load(tmp_path / "unet")
    assert str(weights) in str(info.value)
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=r"weights\.pt"):
        TorchSegmenter.load(tmp_path / "unet")
    weights.unlink()
    with pytest.raises(DataError, match="missing"):
        TorchSegmenter.load(tmp_path / "unet")

    meta = tmp_path / "vnet" / "segmenter.json"
    meta.write_text("{not json")
    with pytest.raises(DataError, match=r"segmenter\.json"):
        TorchSegmenter.load(tmp_path / "vnet")
    meta.write_text(json.dumps({"framework": "tf", "architecture": "vnet", "params": {}}))
    with pytest.raises(DataError, match="'tf'"):
        TorchSegmenter.load(tmp_path / "vnet")
    meta.write_text(json.dumps({"framework": "torch", "architecture": "vnet", "params": {"widths": []}}))
    with pytest.raises(DataError, match=r"segmenter\.json"):
        TorchSegmenter.load(tmp_path / "vnet")
    with pytest.raises(DataError, match="missing"):
        TorchSegmenter.load(tmp_path / "nowhere")


# --- training -------------------------------------------------------------------------------------------

# (network params, Adam lr, batch size, epochs of 10 steps on 16³ crops): robust over seeds 0-3 (Dice
# 0.94-0.99). NeuroNet's batch norm needs the larger batch: with 2 crops the batch statistics swing with
# how much background a crop holds, and these spheres are told apart by absolute intensity alone.
LEARNING: dict[str, tuple[dict[str, Any], float, int, int]] = {
    "unet3d": ({"base_filters": 8, "depth": 3}, 1e-2, 2, 10),
    "vnet": ({"widths": (8, 16, 32, 64), "convs": (1, 1, 1, 1), "kernel_size": 3}, 3e-3, 2, 10),
    "neuronet": ({"filters": (8, 16, 32), "strides": (1, 2, 2), "units_per_scale": 1}, 1e-2, 8, 6),
}


@pytest.mark.parametrize("architecture", list(LEARNING))
def test_learns_nested_spheres(architecture: str) -> None:
    params, lr, batch_size, epochs = LEARNING[architecture]
    image, label = spheres()
    seg = TorchSegmenter.build(architecture, **params)
    spec = quick_spec(epochs=epochs, optimizer=OptimizerSpec(name="adam", lr=lr))
    history = seg.fit(CropSource(image, label, 16, batch_size, 10), None, spec, NullLogger())
    pred = seg.predict_patches(image[None, None]).argmax(axis=1)[0]
    assert foreground_dice(pred, label) > 0.9, [round(r.train_loss, 3) for r in history.epochs]
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss / 2


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    image, label = spheres(size=16)

    def fitted(seed: int, construction_seed: int) -> TorchSegmenter:
        torch.manual_seed(construction_seed)  # the first fit re-initialises from spec.seed regardless
        seg = TorchSegmenter.build("unet3d", base_filters=4, depth=2, dropout=0.2)
        seg.fit(CropSource(image, label, 8, 2, 3, seed=seed), None, quick_spec(seed=seed), NullLogger())
        return seg

    a, b, c = fitted(0, 1), fitted(0, 2), fitted(1, 1)
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key]), key
    batch = image[None, None, :8, :8, :16].copy()
    np.testing.assert_array_equal(a.predict_patches(batch), b.predict_patches(batch))
    assert not torch.equal(a.net.state_dict()["head.weight"], c.net.state_dict()["head.weight"])


def test_early_stopping_restores_best_weights(capsys: pytest.CaptureFixture[str]) -> None:
    image, label = spheres(size=16)
    wrong = (label + 1) % 4  # validation labels that get worse as training gets better
    val = CropSource(image, wrong, 8, 2, 2, seed=5, fixed=True)
    seg = TorchSegmenter.build("unet3d", base_filters=4, depth=2)
    logger = RecordingLogger()
    spec = quick_spec(epochs=10, early_stopping=EarlyStoppingSpec(patience=2), progress=True)
    history = seg.fit(CropSource(image, label, 8, 2, 4), val, spec, logger)

    assert all(r.val_loss is not None for r in history.epochs)
    val_losses = [float(r.val_loss or 0.0) for r in history.epochs]
    assert logger.records == history.epochs
    assert history.best_epoch == int(np.argmin(val_losses))
    assert history.stopped_early and len(history.epochs) == history.best_epoch + 3 < 10
    restored, dice = evaluate(seg.net, val, make_loss(spec.loss), torch.device("cpu"), epoch=0)
    assert restored == pytest.approx(val_losses[history.best_epoch], abs=1e-6)
    assert restored != pytest.approx(val_losses[-1], abs=1e-4)
    assert set(dice) == {"CSF", "GM", "WM"} and history.epochs[0].val_dice is not None
    assert all(r.patches_per_s > 0 and r.seconds > 0 for r in history.epochs)
    assert capsys.readouterr().err == ""  # progress stays quiet when stderr is not a terminal


def test_reduce_lr_on_plateau_lowers_lr() -> None:
    image, label = spheres(size=16)
    val = CropSource(image, label, 8, 1, 1, fixed=True)
    seg = TorchSegmenter.build("unet3d", base_filters=2, depth=2)
    spec = quick_spec(
        epochs=7, optimizer=OptimizerSpec(name="sgd", lr=0.01),
        # an improvement must cut the val loss by 99 %: no epoch after the first improves
        scheduler=SchedulerSpec(factor=0.5, patience=1, min_lr=0.003, threshold=0.99),
    )
    history = seg.fit(CropSource(image, label, 8, 1, 1), val, spec, NullLogger())
    # epoch 0 sets the best value; every later epoch is a bad epoch; the lr drops once >patience bad epochs
    assert [r.lr for r in history.epochs] == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.003, 0.003])
    assert not history.stopped_early and len(history.epochs) == 7


def test_non_finite_loss_names_epoch_and_step() -> None:
    image, label = spheres(size=8)
    image[...] = np.nan
    seg = TorchSegmenter.build("unet3d", base_filters=2, depth=2)
    with pytest.raises(BenchError, match=r"epoch 0, step 0.*lower optimizer.lr"):
        seg.fit(CropSource(image, label, 8, 1, 1), None, quick_spec(), NullLogger())
