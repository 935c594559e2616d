"""Framework-neutral network configs: each architecture's constructor arguments, typed and validated once.

A config is a frozen dataclass; the torch module and the Keras model of an architecture are both built
from the same config object, so the two frameworks cannot disagree about what a value means or which
values are allowed. Every config knows the patch sizes its network accepts (``divisor``) and has a
``tiny()`` instance for tests.

Example:
    >>> config = UNet3DConfig.from_params({"base_filters": 8, "depth": 3})
    >>> config.divisor, config.check_patch_size((32, 32, 16))
    (4, (32, 32, 16))
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar, Self

from bench.errors import ConfigError
from bench.validation import check_choice, check_int, check_int_tuple, check_rate

NORMS: tuple[str, ...] = ("none", "batch", "instance", "instance_layer")
SKIPS: tuple[str, ...] = ("add", "concat")
BLOCKS: tuple[str, ...] = ("plain", "residual")
ILN_RHO_INIT = 0.5
"""Instance-layer norm's initial IN share ``rho`` in both frameworks: equal parts instance and layer norm."""


# ------------------------------------------------------------------------------------- base class
@dataclass(frozen=True)
class NetConfig:
    """Base of every network config: checks, patch-size rule, parameter dicts.

    Subclasses are frozen dataclasses whose fields are the constructor arguments (with defaults) and whose
    ``validate`` returns the normalised values (e.g. lists as tuples), raising ConfigError for bad ones.
    """

    architecture: ClassVar[str] = "network"

    def __post_init__(self) -> None:
        for name, value in self.validate().items():
            object.__setattr__(self, name, value)

    def validate(self) -> dict[str, Any]:
        """Normalised field values; ConfigError naming ``<architecture>.<field>=<value>`` otherwise."""
        return {}

    def setting(self, name: str) -> str:
        """How a field is named in messages: ``unet3d.base_filters``."""
        return f"{self.architecture}.{name}"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """The config from a parameter dict (YAML/JSON); ConfigError naming an unknown parameter."""
        fields = dataclasses.fields(cls)
        known = [f.name for f in fields]
        unknown = sorted(set(params) - set(known))
        if unknown:
            near = difflib.get_close_matches(unknown[0], known, n=3, cutoff=0.5)
            raise ConfigError(
                f"{cls.architecture} has no parameter {', '.join(map(repr, unknown))}"
                + (f" (closest: {', '.join(near)})" if near else ""),
                fix=f"use some of {', '.join(known)}",
            )
        required = dataclasses.MISSING
        missing = [f.name for f in fields if f.default is required and f.default_factory is required
                   and f.name not in params]
        if missing:
            raise ConfigError(f"{cls.architecture} needs a value for {', '.join(map(repr, missing))}",
                              fix=f"set model.params.{missing[0]}")
        return cls(**params)

    @classmethod
    def tiny(cls) -> Self:
        """A small instance for fast tests (defaults unless a subclass says otherwise)."""
        return cls()

    def to_params(self) -> dict[str, Any]:
        """Every constructor argument as JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def divisor(self) -> int:
        """Every patch axis must be a multiple of this (the network's total down-sampling)."""
        return 1

    def divisor_reason(self) -> str:
        """Which setting makes the divisor, for messages."""
        return "the network's down-sampling"

    def check_patch_size(self, patch_size: Sequence[int]) -> tuple[int, int, int]:
        """``patch_size`` as three ints if the network accepts it, else ConfigError naming size and divisor."""
        size = tuple(patch_size)
        if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in size):
            raise ConfigError(f"{self.architecture}: patch size {size!r} must be three positive integers (x, y, z)")
        size = tuple(int(s) for s in size)
        for axis, s in enumerate(size):
            if s % self.divisor:
                raise ConfigError(
                    f"{self.architecture}: patch size {size} is not divisible by {self.divisor} along axis "
                    f"{axis} (size {s}; {self.divisor_reason()})",
                    fix=f"use patch sizes that are multiples of {self.divisor}",
                )
        return size[0], size[1], size[2]

    def common(self) -> dict[str, Any]:
        """``in_channels`` and ``num_classes`` checked (every built-in network has both)."""
        fields: dict[str, Any] = vars(self)
        return {
            "in_channels": check_int(self.setting("in_channels"), fields["in_channels"]),
            "num_classes": check_int(self.setting("num_classes"), fields["num_classes"], minimum=2),
        }


# ------------------------------------------------------------------------------------- architectures
@dataclass(frozen=True)
class UNet3DConfig(NetConfig):
    """The paper's 3D U-Net (Section 4.2): ``depth`` levels of ``base_filters * 2**i`` feature maps.

    Level block (``block="plain"``, the paper's): ``convs_per_level`` x [Conv 3³, norm, ReLU].
    ``block="residual"`` (post-activation, He et al. 2016): the same convolutions without the last ReLU,
    ``y = ReLU(main(x) + shortcut(x))`` with ``shortcut`` the identity when the block keeps the channel count,
    else a Conv 1³ projection (``c_in -> filters``, with bias). Encoder levels after the first start with a
    2³ max-pool; decoder levels with a 2³ stride-2 transposed conv, then merge the encoder features by sum
    (``skip="add"``, the paper's) or concatenation. Optional dropout after the bottleneck and after every
    decoder block. Head: Conv 1³ to ``num_classes`` logits.

    Deep supervision (``deep_supervision=k``, nnU-Net's): auxiliary Conv 1³ heads on decoder levels ``1..k``
    (level i is at ``1/2**i`` of the patch size; the full-resolution head is level 0). Training then
    minimises ``sum_i w_i * loss(head_i, labels at 1/2**i)`` with ``w_i ∝ 2**-i`` normalised to sum 1
    (``bench.training.deep_supervision``); validation and prediction use the full-resolution head only.

    Args:
        in_channels: Input channels: the data's (IBSR18: 1, the T1).
        num_classes: Output classes: the data's label set (IBSR18: 4, background, CSF, GM, WM).
        base_filters: Feature maps at level 0 (paper: 32, or 64 to reach 512 at depth 4).
        depth: Number of levels; patch sizes must be multiples of ``2**(depth-1)``.
        convs_per_level: 3³ convolutions per block (paper: 1; the original U-Net: 2).
        skip: ``add`` or ``concat``.
        norm: ``none``, ``batch``, ``instance`` or ``instance_layer`` (ILN; after every 3³ conv).
        dropout: Dropout rate in [0, 1) (0 = none).
        block: ``plain`` or ``residual``.
        deep_supervision: Auxiliary heads (0 = none, at most ``depth - 2``).
    """

    architecture: ClassVar[str] = "unet3d"
    in_channels: int = 1
    num_classes: int = 4
    base_filters: int = 32
    depth: int = 4
    convs_per_level: int = 1
    skip: str = "add"
    norm: str = "none"
    dropout: float = 0.0
    block: str = "plain"
    deep_supervision: int = 0

    def validate(self) -> dict[str, Any]:
        depth = check_int(self.setting("depth"), self.depth)
        heads = check_int(self.setting("deep_supervision"), self.deep_supervision, minimum=0)
        if heads > max(depth - 2, 0):
            raise ConfigError(
                f"{self.setting('deep_supervision')}={heads} needs more decoder levels than depth={depth} has",
                fix=f"use deep_supervision <= {max(depth - 2, 0)} (depth - 2), or a deeper network",
            )
        return {
            **self.common(),
            "base_filters": check_int(self.setting("base_filters"), self.base_filters),
            "depth": depth,
            "convs_per_level": check_int(self.setting("convs_per_level"), self.convs_per_level),
            "skip": check_choice(self.setting("skip"), self.skip, SKIPS),
            "norm": check_choice(self.setting("norm"), self.norm, NORMS),
            "dropout": check_rate(self.setting("dropout"), self.dropout),
            "block": check_choice(self.setting("block"), self.block, BLOCKS),
            "deep_supervision": heads,
        }

    @classmethod
    def tiny(cls) -> Self:
        return cls(base_filters=4, depth=3)

    @property
    def divisor(self) -> int:
        return int(2 ** (self.depth - 1))

    def divisor_reason(self) -> str:
        return f"depth={self.depth} halves it {self.depth - 1} times"

    @property
    def filters(self) -> tuple[int, ...]:
        """Feature maps per level."""
        return tuple(self.base_filters * 2**i for i in range(self.depth))


@dataclass(frozen=True)
class VNetConfig(NetConfig):
    """V-Net (Milletari et al. 2016; the paper's Section 4.4) with ``S = len(widths)`` stages.

    Stage 0: ``y = Conv 1³ (in -> w_0)``; ``convs[0]`` x PReLU(Conv k³); ``out_0 = z + y``.
    Down stage i: ``y = PReLU(Conv 2³ stride 2 (w_{i-1} -> w_i))``; ``convs[i]`` x PReLU(Conv k³);
    ``out_i = z + y``. Up stage i (from the bottom): ``u = PReLU(ConvTranspose 2³ stride 2 -> w_i)``;
    ``z = concat([u, out_i])``; ``convs[i]`` x PReLU(Conv k³) (the first ``2 w_i -> w_i``); ``x = z + u``.
    Head: Conv 1³ to ``num_classes`` logits. PReLU has one slope per channel.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        widths: Feature maps per stage.
        convs: Convolutions per stage (same length as ``widths``).
        kernel_size: Kernel edge of the stage convolutions (V-Net: 5).
    """

    architecture: ClassVar[str] = "vnet"
    in_channels: int = 1
    num_classes: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    convs: tuple[int, ...] = (1, 2, 3, 3, 3)
    kernel_size: int = 5

    def validate(self) -> dict[str, Any]:
        widths = check_int_tuple(self.setting("widths"), self.widths)
        convs = check_int_tuple(self.setting("convs"), self.convs)
        if len(widths) != len(convs):
            raise ConfigError(
                f"{self.setting('widths')}={widths} and {self.setting('convs')}={convs} must have the same "
                "length (one entry per stage)"
            )
        return {**self.common(), "widths": widths, "convs": convs,
                "kernel_size": check_int(self.setting("kernel_size"), self.kernel_size)}

    @classmethod
    def tiny(cls) -> Self:
        return cls(widths=(4, 8, 16, 32), convs=(1, 1, 1, 1), kernel_size=3)

    @property
    def divisor(self) -> int:
        return int(2 ** (len(self.widths) - 1))

    def divisor_reason(self) -> str:
        return f"{len(self.widths)} stages halve it {len(self.widths) - 1} times"


@dataclass(frozen=True)
class NeuroNetConfig(NetConfig):
    """Single-output NeuroNet (Rajchl et al. 2018; the paper's Section 4.3): residual-encoder U-Net.

    Residual unit (c_in -> f, stride s), pre-activation as DLTK's:
    ``h = Conv 3³(ReLU(norm(Conv 3³ stride s(ReLU(norm(x))))))``; shortcut ``x`` when ``s == 1`` and
    ``c_in == f``, else Conv 1³ stride s. Stem: Conv 3³ to ``filters[0]``. Scale j: one unit with stride
    ``strides[j]`` then ``units_per_scale - 1`` units with stride 1. Decoder j (from the second-deepest up):
    up-sample (ConvTranspose with kernel = stride = ``strides[j+1]``, or Conv 1³ when that stride is 1),
    add the encoder output of scale j, one unit. Head: norm, ReLU, Conv 1³ to ``num_classes`` logits.

    Args:
        in_channels: Image channels.
        num_classes: Output classes.
        filters: Feature maps per scale (NeuroNet: 16, 32, 64, 128).
        strides: Down-sampling entering each scale; the first must be 1 (the decoder never undoes it).
        units_per_scale: Residual units per encoder scale (NeuroNet: 2).
        norm: ``batch`` (NeuroNet's), ``none``, ``instance`` or ``instance_layer``.
    """

    architecture: ClassVar[str] = "neuronet"
    in_channels: int = 1
    num_classes: int = 4
    filters: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (1, 2, 2, 2)
    units_per_scale: int = 2
    norm: str = "batch"

    def validate(self) -> dict[str, Any]:
        filters = check_int_tuple(self.setting("filters"), self.filters)
        strides = check_int_tuple(self.setting("strides"), self.strides)
        if len(filters) != len(strides):
            raise ConfigError(
                f"{self.setting('filters')}={filters} and {self.setting('strides')}={strides} must have the "
                "same length (one per scale)"
            )
        if strides[0] != 1:
            raise ConfigError(
                f"{self.setting('strides')}={strides}: the first stride must be 1 (the decoder never undoes it)"
            )
        return {
            **self.common(), "filters": filters, "strides": strides,
            "units_per_scale": check_int(self.setting("units_per_scale"), self.units_per_scale),
            "norm": check_choice(self.setting("norm"), self.norm, NORMS),
        }

    @classmethod
    def tiny(cls) -> Self:
        return cls(filters=(4, 8, 16, 32), units_per_scale=1)

    @property
    def divisor(self) -> int:
        return math.prod(self.strides)

    def divisor_reason(self) -> str:
        return f"strides={self.strides} down-sample by {self.divisor} in total"
