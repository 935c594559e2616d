"""Mixed precision (``profile.precision`` -> ``TrainSpec.precision``): validation, ``auto`` resolved from the CPU's
flags (faked here) or the GPU, records that say what ran, adapters that refuse what the hardware cannot run
natively, and tiny networks that learn the same task in bf16 as in fp32 (both frameworks).

The bf16 training tests skip on a CPU without ``avx512_bf16``/``amx_bf16``; everything else fakes the flags.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adapter_helpers import FRAMEWORKS, CropSource, foreground_dice, quick_spec, spheres
from hydra import compose, initialize_config_dir

from bench import hardware
from bench.config import run_spec_from_config
from bench.contract import LossSpec, NullLogger, OptimizerSpec, SchedulerSpec, TrainSpec
from bench.errors import ConfigError
from bench.spec import RunSpec, effective_settings
from bench.sweeps import CONF_DIR, to_container
from bench.training import frameworks

BF16_CPU = hardware.cpu_has_native_bf16()
needs_bf16 = pytest.mark.skipif(not BF16_CPU, reason="this CPU has no avx512_bf16/amx_bf16: bf16 is not native")
WITH_BF16 = "fpu vme avx512f avx512_bf16 amx_tile amx_bf16"
WITHOUT_BF16 = "fpu vme avx2 avx512f avx512bw"


def spec_of(*overrides: str) -> RunSpec:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return run_spec_from_config(to_container(compose(config_name="config", overrides=list(overrides))))


@pytest.fixture
def fake_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``fake_cpu(flags)``: /proc/cpuinfo with these flags, and no NVIDIA GPU."""
    monkeypatch.setattr(hardware, "nvidia_gpu", lambda: None)

    def fake(flags: str) -> None:
        path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
        path.write_text(f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(hardware, "CPUINFO", path)

    yield fake


# --- validation and resolution --------------------------------------------------------------------------


def test_unknown_precision_names_the_value_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision='fp8' is unknown.*auto, fp32, bf16, fp16"):
        TrainSpec(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"profile\.precision='half' is unknown.*auto, fp32, bf16, fp16"):
        spec_of("profile.precision=half")


def test_cpu_flags_come_from_cpuinfo(fake_cpu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(WITH_BF16)
    assert {"avx512_bf16", "amx_bf16"} <= hardware.cpu_flags()
    assert hardware.cpu_has_native_bf16() and hardware.cpu_native_precisions() == ("fp32", "bf16")
    fake_cpu(WITHOUT_BF16)
    assert not hardware.cpu_has_native_bf16() and hardware.cpu_native_precisions() == ("fp32",)
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "absent")  # not Linux: flags unknown, fp32
    assert hardware.cpu_flags() == frozenset() and hardware.cpu_native_precisions() == ("fp32",)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_auto_is_resolved_from_the_cpu_flags_before_the_run_is_recorded(fake_cpu: Any, framework: str) -> None:
    fake_cpu(WITH_BF16)
    assert spec_of("profile=quick", f"framework={framework}").network.train.precision == "bf16"
    fake_cpu(WITHOUT_BF16)
    assert spec_of("profile=quick", f"framework={framework}").network.train.precision == "fp32"
    assert spec_of("profile=smoke").network.train.precision == "fp32"  # the tests' profile: fp32 on every CPU


def test_auto_on_a_gpu_follows_its_compute_capability(fake_cpu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(WITHOUT_BF16)
    for capability, expected in (((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((6, 1), "fp32")):
        monkeypatch.setattr(hardware, "nvidia_gpu", lambda c=capability: hardware.Gpu("GPU", c))
        assert hardware.resolve_for_run("auto", framework="torch", device="auto") == expected, capability
        assert hardware.resolve_for_run("auto", framework="torch", device="cpu") == "fp32"  # the GPU is not used
    assert hardware.resolve_precision("auto", framework="mxnet", device="cpu", native=("fp32", "bf16")) == "fp32"


def test_a_precision_the_hardware_cannot_run_natively_is_refused(fake_cpu: Any) -> None:
    fake_cpu(WITHOUT_BF16)
    with pytest.raises(ConfigError, match=r"profile\.precision='bf16' is not native here: .*avx512_bf16"):
        spec_of("profile=quick", "profile.precision=bf16")
    with pytest.raises(ConfigError, match=r"profile\.precision='fp16' is not native here: fp16 runs on CUDA"):
        spec_of("profile=quick", "profile.precision=fp16")
    atlas = spec_of("profile=quick", "model=atlas", "profile.precision=bf16")  # nothing trains: not checked
    assert "train" not in effective_settings(atlas)


def test_bf16_and_fp32_runs_never_share_a_hash(fake_cpu: Any) -> None:
    fake_cpu(WITH_BF16)
    auto, bf16 = spec_of("profile=quick"), spec_of("profile=quick", "profile.precision=bf16")
    fp32 = spec_of("profile=quick", "profile.precision=fp32")
    assert effective_settings(auto)["train"]["precision"] == "bf16"  # resolved: the record says what ran
    assert auto.config_hash == bf16.config_hash != fp32.config_hash
    fake_cpu(WITHOUT_BF16)
    assert spec_of("profile=quick").config_hash == fp32.config_hash  # auto on a CPU without bf16 is fp32


# --- adapters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_adapters_refuse_what_the_device_cannot_run(fake_cpu: Any, framework: str) -> None:
    fake_cpu(WITHOUT_BF16)
    image, label = spheres(size=8)
    seg: Any = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    for precision, why in (("bf16", "avx512_bf16"), ("fp16", "CUDA")):
        with pytest.raises(ConfigError, match=f"precision='{precision}' is not native here: .*{why}"):
            seg.fit(CropSource(image, label, 8, 1, 1), None, quick_spec(framework, epochs=1, precision=precision),
                    NullLogger())
    seg.fit(CropSource(image, label, 8, 1, 1), None, quick_spec(framework, epochs=1, precision="auto"), NullLogger())
    assert seg.describe()["precision"] == "fp32"  # auto, resolved for this (fake) CPU


def fitted(framework: str, precision: str, seed: int = 0) -> tuple[Any, float]:
    """A small U-Net trained on the nested spheres in ``precision``; its foreground Dice on the whole volume."""
    image, label = spheres()
    seg: Any = frameworks.build("unet3d", framework, base_filters=8, depth=3)
    spec = quick_spec(framework, epochs=8, loss=LossSpec(name="dice_ce"), seed=seed, precision=precision,
                      optimizer=OptimizerSpec(name="adam", lr=1e-2))
    seg.fit(CropSource(image, label, 16, 4, 10, seed=seed), None, spec, NullLogger())
    probabilities = seg.predict_patches(image[None, None])
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # softmax in float32
    return seg, foreground_dice(probabilities.argmax(axis=1)[0], label)


DICE_TOLERANCE = 0.05
"""|Dice(bf16) - Dice(fp32)| allowed for the same task, seed and recipe. Measured over seeds 0-3, torch and TF:
Dice 0.954-0.992 in both precisions, largest difference 0.022 (bf16 keeps 8 bits of mantissa, so the weights
drift apart, but they learn the same segmentation)."""


@needs_bf16
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_tiny_net_learns_the_same_task_in_bf16_as_in_fp32(framework: str, tmp_path: Path) -> None:
    fp32, dice_fp32 = fitted(framework, "fp32")
    bf16, dice_bf16 = fitted(framework, "bf16")
    assert fp32.describe()["precision"] == "fp32" and bf16.describe()["precision"] == "bf16"
    assert min(dice_fp32, dice_bf16) > 0.9, (dice_fp32, dice_bf16)
    assert abs(dice_bf16 - dice_fp32) <= DICE_TOLERANCE, (dice_fp32, dice_bf16)
    # The checkpoint records the precision; a loaded model predicts in it, as the fitted one did.
    batch = spheres(size=16)[0][None, None]
    bf16.save(tmp_path)
    assert json.loads((tmp_path / "segmenter.json").read_text())["precision"] == "bf16"
    loaded: Any = frameworks.load(tmp_path)
    assert loaded.describe()["precision"] == "bf16"
    np.testing.assert_allclose(loaded.predict_patches(batch), bf16.predict_patches(batch), atol=1e-6)
    # bf16 predictions differ from the same weights run in fp32 by bf16 rounding only.
    in_fp32: Any = frameworks.load(tmp_path)
    assert in_fp32.use_precision("fp32") == "fp32"
    difference = np.abs(in_fp32.predict_patches(batch) - bf16.predict_patches(batch)).max()
    assert 0 < difference < 0.1


@needs_bf16
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_instance_layer_norm_predicts_in_bf16_like_in_fp32(framework: str) -> None:
    """ILN keeps its statistics in float32 under bf16 autocast / mixed_bfloat16: only bf16 rounding differs."""
    seg: Any = frameworks.build("unet3d", framework, base_filters=4, depth=3, norm="instance_layer")
    batch = spheres(size=16)[0][None, None]
    fp32 = seg.predict_patches(batch)
    assert seg.use_precision("bf16") == "bf16"
    bf16 = seg.predict_patches(batch)
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert 0 < np.abs(bf16 - fp32).max() < 0.05


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_bf16_checkpoint_predicts_in_fp32_where_bf16_is_not_native(fake_cpu: Any, framework: str,
                                                                     tmp_path: Path) -> None:
    seg: Any = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    seg.save(tmp_path)
    meta = json.loads((tmp_path / "segmenter.json").read_text())
    assert meta["precision"] == "fp32"
    (tmp_path / "segmenter.json").write_text(json.dumps({**meta, "precision": "bf16"}))
    fake_cpu(WITHOUT_BF16)
    with pytest.warns(RuntimeWarning, match="trained in bf16, predicting in fp32"):
        loaded: Any = frameworks.load(tmp_path)
    assert loaded.describe()["precision"] == "fp32"


def test_torch_fp16_steps_scale_the_loss() -> None:
    """fp16 is CUDA-only in a fit; its steps (autocast + GradScaler) run on a CPU too, so they are tested here."""
    import torch

    from adapters.torch.steps import TorchSteps

    image, label = spheres(size=16)
    batch = next(iter(CropSource(image, label, 8, 2, 1).batches(0)))
    seg: Any = frameworks.build("unet3d", "torch", base_filters=2, depth=2)
    steps = TorchSteps(seg.net, quick_spec("torch"), torch.device("cpu"), "fp16")
    before = [p.detach().clone() for p in seg.net.parameters()]
    losses = [steps.train_step(batch) for _ in range(3)]
    assert steps.scaler is not None and steps.scaler.get_scale() == 2.0**16
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, seg.net.parameters(), strict=True))


def test_tf_loss_scaling_keeps_the_update_and_its_weight_decay() -> None:
    """The fp16 path's LossScaleOptimizer (TF has no fp16 CPU kernels, so on a float32 model): the same weights
    as without scaling, the coupled L2 term included."""
    import keras

    from adapters.tf.losses import make_loss
    from adapters.tf.steps import make_optimizer, make_train_step, to_tensors

    image, label = spheres(size=16)
    batch = to_tensors(next(iter(CropSource(image, label, 8, 2, 1).batches(0))))
    spec = OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    weights = []
    for scaled in (False, True):
        keras.utils.set_random_seed(0)
        model = frameworks.build("unet3d", "tf", base_filters=2, depth=2).model  # type: ignore[attr-defined]
        optimizer = make_optimizer(spec)
        if scaled:
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        step = make_train_step(model, optimizer, make_loss(LossSpec(name="dice_ce")), spec.weight_decay)
        for _ in range(3):
            step(*batch)
        weights.append(model.get_weights())
    for plain, scaled_weights in zip(*weights, strict=True):
        np.testing.assert_allclose(scaled_weights, plain, rtol=1e-4, atol=1e-6)


def test_train_spec_default_is_fp32() -> None:
    """Direct users of the adapters (benchmarks, tests) train in fp32 unless they ask: results do not change
    with the CPU they happen to run on."""
    assert TrainSpec().precision == "fp32"
    assert TrainSpec(scheduler=SchedulerSpec(factor=1.0), precision="auto").precision == "auto"
