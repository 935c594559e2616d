"""Tests of ``bench.networks.configs`` and ``bench.networks.registry`` (no framework imported): argument validation,
patch-size rules, ``tiny()``, builders. The networks they build are tested in ``test_adapters.py``."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from adapter_helpers import ARCHITECTURES, CONFIGS, FRAMEWORKS, TINY

from bench.errors import ConfigError
from bench.networks import registry
from bench.networks.configs import NetConfig, NeuroNetConfig, UNet3DConfig, VNetConfig
from bench.training import frameworks


@pytest.mark.parametrize(
    ("config", "bad", "divisor"),
    [(UNet3DConfig(base_filters=2), (32, 36, 32), 8),
     (VNetConfig(widths=(2, 2, 2, 2, 2), convs=(1,) * 5), (24, 32, 32), 16),
     (NeuroNetConfig(filters=(2, 2, 2, 2)), (16, 16, 12), 8),
     (NeuroNetConfig(filters=(2, 2), strides=(1, 3)), (6, 6, 4), 3)],
)
def test_check_patch_size_names_the_bad_size(config: NetConfig, bad: tuple[int, int, int], divisor: int) -> None:
    assert config.divisor == divisor
    good = tuple(divisor * k for k in (1, 2, 3))
    assert config.check_patch_size(good) == good
    assert config.check_patch_size(list(good)) == good  # a YAML list is accepted
    with pytest.raises(ConfigError, match=f"multiples of {divisor}") as info:
        config.check_patch_size(bad)
    assert str(bad) in str(info.value)
    assert f"divisible by {divisor}" in str(info.value)


@pytest.mark.parametrize("size", [(16, 16), (16, 16, 0), (16, 16.0, 16), (True, 16, 16)])
def test_check_patch_size_wants_three_positive_integers(size: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError, match="three positive integers") as info:
        UNet3DConfig().check_patch_size(size)
    assert str(size) in str(info.value)


@pytest.mark.parametrize(
    ("cls", "kwargs", "shown"),
    [
        (UNet3DConfig, {"base_filters": 0}, "base_filters=0"),
        (UNet3DConfig, {"depth": 2.5}, "depth=2.5"),
        (UNet3DConfig, {"convs_per_level": True}, "convs_per_level=True"),
        (UNet3DConfig, {"skip": "sum"}, "skip='sum'"),
        (UNet3DConfig, {"norm": "group"}, "norm='group'"),
        (UNet3DConfig, {"dropout": 1.0}, "dropout=1.0"),
        (UNet3DConfig, {"num_classes": 1}, "num_classes=1"),
        (VNetConfig, {"widths": ()}, "widths=()"),
        (VNetConfig, {"widths": (8, 16), "convs": (1, 1, 1)}, "convs=(1, 1, 1)"),
        (VNetConfig, {"kernel_size": 0}, "kernel_size=0"),
        (VNetConfig, {"convs": (1, 0, 1, 1, 1)}, "convs=(1, 0, 1, 1, 1)"),
        (NeuroNetConfig, {"strides": (2, 2, 2, 2)}, "strides=(2, 2, 2, 2)"),
        (NeuroNetConfig, {"filters": (8, "a", 8, 8)}, "filters=(8, 'a', 8, 8)"),
        (NeuroNetConfig, {"norm": "layer"}, "norm='layer'"),
        (NeuroNetConfig, {"units_per_scale": 0}, "units_per_scale=0"),
        (NeuroNetConfig, {"in_channels": -1}, "in_channels=-1"),
    ],
)
def test_bad_constructor_arguments_name_the_value(cls: type[NetConfig], kwargs: dict[str, Any], shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert f"{cls.architecture}.{shown}" in str(info.value)  # e.g. unet3d.base_filters=0


def test_yaml_lists_are_validated_and_kept_as_tuples() -> None:
    config = VNetConfig.from_params({"widths": [8, 16], "convs": [1, 2], "kernel_size": 3})
    assert config == VNetConfig(widths=(8, 16), convs=(1, 2), kernel_size=3)
    assert config.widths == (8, 16) and isinstance(config.convs, tuple)
    with pytest.raises(ConfigError, match=re.escape("vnet.convs=(1, 0, 1, 1, 1)")):
        VNetConfig.from_params({"convs": [1, 0, 1, 1, 1]})
    with pytest.raises(ConfigError, match=re.escape("neuronet.filters='abc'")):
        NeuroNetConfig.from_params({"filters": "abc"})


def test_unknown_parameter_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unet3d has no parameter 'widths'") as info:
        UNet3DConfig.from_params({"widths": (8, 16), "depth": 3})
    assert "base_filters" in str(info.value)  # the fix lists the known parameters
    with pytest.raises(ConfigError, match="'kernel', 'width'"):
        VNetConfig.from_params({"width": 8, "kernel": 3})


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_configs_round_trip_and_are_frozen(architecture: str) -> None:
    cls = CONFIGS[architecture]
    config = cls.tiny()
    assert config == cls(**TINY[architecture])
    assert cls.from_params(json.loads(json.dumps(config.to_params()))) == config  # as saved in segmenter.json
    assert config.divisor == (4 if architecture == "unet3d" else 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.in_channels = 2  # type: ignore[attr-defined]


def test_unet3d_filters_double_per_level() -> None:
    assert UNet3DConfig(base_filters=64).filters == (64, 128, 256, 512)
    assert UNet3DConfig(base_filters=64).divisor == 8


def test_registry_names_both_builders_of_every_architecture() -> None:
    assert frameworks.ARCHITECTURES == registry.names()[:3] == tuple(ARCHITECTURES)
    for name in ARCHITECTURES:
        entry = registry.lookup(name)
        assert entry.config is CONFIGS[name] and entry.config.architecture == name
        assert set(entry.builders) == set(FRAMEWORKS) == set(frameworks.FRAMEWORKS)
    with pytest.raises(ConfigError, match="'unet2d'"):
        registry.lookup("unet2d")
    with pytest.raises(ConfigError, match="'jax'"):
        frameworks.build("unet3d", "jax")
    with pytest.raises(ConfigError, match="'jax'"):
        frameworks.configure_threads("jax", 1)


def test_configs_and_registry_import_no_framework() -> None:
    """Config errors come before a framework is imported (a fresh process: this one has both)."""
    code = ("import sys\nfrom bench.training import frameworks\nfrom bench.networks import registry\n"
            "try:\n    frameworks.build('unet3d', 'tf', depth=0)\nexcept Exception as e:\n    print(e)\n"
            "registry.lookup('vnet').make_config({'widths': [8, 16], 'convs': [1, 1]})\n"
            "print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "unet3d.depth=0 must be an integer >= 1" in out.stdout
    assert out.stdout.splitlines()[-1] == "[]"
