"""What a run is: plain, frozen specifications of its effective settings, and the record made of them.

``bench.config.run_spec_from_config`` builds a ``RunSpec`` from the composed config (the one translation);
the experiment receives finished specs: the split, the patch sampling, and the segmentation method
(``RunSpec.segmenter``: a ``NetworkSpec`` or an ``AtlasSpec``; ``bench.segmenters.build_method`` turns it
into the method it runs). Each setting lives in one place: the network's training, sampling and inference
settings in its ``NetworkSpec``, nowhere else. ``effective_settings`` is the run's record: its hash is the
run's identity and its flattened form the MLflow params. Pure data: this module imports no stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bench.contract import TrainSpec
from bench.data.folds import FoldSplit
from bench.data.labels import IBSR_LABELS, LabelSet, same_labels
from bench.data.splits import SPLITS, SplitSpec
from bench.errors import ConfigError
from bench.networks import registry
from bench.networks.configs import NetConfig
from bench.networks.target import TargetConfig
from bench.patching.augment import AugmentSpec
from bench.redact import hide_password

ATLAS = "atlas"
FRAMEWORKS = registry.FRAMEWORKS
SAMPLING_MODES = ("grid", "random_subset", "random")
PATCH_REGIONS = ("centre_in_brain", "overlaps_brain")
RECORD_VERSION = 4
"""Version of what ``effective_settings`` records (1: the raw config, before profile overrides; 2: before
``train.precision``, when every network trained in float32; 3: before the training options of the recipe:
scheduler kinds, augmentation, residual blocks, deep supervision, class-centred patches)."""


def architectures() -> tuple[str, ...]:
    """Every ``model.architecture`` a run can name now: the registered networks and the atlas."""
    return (*registry.names(), ATLAS)


@dataclass(frozen=True)
class DataSpec:
    """Dataset name, root folder and split (a named split such as ``paper``, explicit ids or a fold), and what the
    data brings: its label set and input channels (IBSR18 and the synthetic cohort: the paper's 4 classes, T1)."""

    name: str
    root: str
    split: str | SplitSpec | FoldSplit
    train_on_val: bool = False
    """The split's validation subjects are trained on too and nothing is validated (use it with
    ``TrainSpec.keep_weights='last'``: without validation the best epoch is judged by the training loss)."""
    labels: LabelSet = IBSR_LABELS
    channels: tuple[str, ...] = ("T1",)
    """One name per input channel (nnU-Net's ``channel_names``)."""

    @property
    def paper_labels(self) -> bool:
        """Whether the data have the paper's label set and one T1 channel (IBSR18's, the synthetic cohort's)."""
        return same_labels(self.labels, IBSR_LABELS) and self.channels == ("T1",)


@dataclass(frozen=True)
class PreprocessSpec:
    """The preprocessing pipeline: its name and every step with all its parameters (defaults filled in)."""

    name: str
    steps: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ModelSpec:
    """The architecture and its effective parameters (profile overrides and defaults applied): for a ``_target_``
    network the callable (``_target_``) and every keyword it is called with, channels included."""

    architecture: str
    params: dict[str, Any]


@dataclass(frozen=True)
class SamplingSpec:
    """Training patch sampling (see bench.patching.sampler.PatchSampler); sizes in voxels."""

    mode: str
    patch_size: tuple[int, int, int]
    step: tuple[int, int, int]
    batch_size: int
    patches_per_epoch: int
    oversample_class: int | None
    oversample_factor: int
    val_batches: int | None
    region: str = "centre_in_brain"
    """Where training patches are taken: centres in the brain mask, or every patch that overlaps it (as
    inference predicts them; see ``bench.patching.sampler.patch_centre_region``)."""
    class_fraction: float = 0.0
    """Share of each epoch's patches centred on a voxel of ``class_centres`` (``bench.patching.centres``; 0: off)."""
    class_centres: tuple[int, ...] = (1, 2, 3)
    augmentation: AugmentSpec = field(default_factory=AugmentSpec)
    """Data augmentation of training batches (``bench.patching.augment``); validation is never augmented."""


@dataclass(frozen=True)
class InferenceSpec:
    overlap: float = 0.5
    blending: str = "gaussian"
    batch_size: int = 8
    skip_background: bool = True
    background_margin_voxels: int | None = 3
    """Voxels farther than this from the brain mask are set to background; None keeps the network's output."""


@dataclass(frozen=True)
class TrackingSpec:
    """Where a run is tracked, and what it may send there (``bench.privacy``): not part of its identity."""

    uri: str | None
    experiment: str
    sweep: str
    log_images: bool = True
    """Predictions, overlays and plots go to the store (false: they stay in the local outputs folder only)."""
    log_paths: bool = True
    """Absolute paths go to the store as they are (false: placeholders such as ``<data.root>/...``)."""
    hash_subject_ids: bool = False
    """Subject ids go to the store as salted hashes (``sub-<12 hex>``)."""

    def record(self) -> dict[str, bool]:
        """The privacy switches as the run's params record them (``tracking.log_images``, ...)."""
        return {"log_images": self.log_images, "log_paths": self.log_paths, "hash_subject_ids": self.hash_subject_ids}


@dataclass(frozen=True)
class NetworkSpec:
    """A patch-based network: what to build (the registry entry, its config, the framework) and how to train and
    apply it. ``entry`` and ``config`` are what the network is built from: nothing is looked up again."""

    entry: registry.Architecture
    framework: str
    config: NetConfig
    train: TrainSpec
    sampling: SamplingSpec
    inference: InferenceSpec

    @property
    def architecture(self) -> str:
        return self.entry.name

    @property
    def tag(self) -> str:
        """What the run name says of the method: ``unet3d-torch``."""
        return f"{self.architecture}-{self.framework}"

    def model_record(self) -> dict[str, Any]:
        """The network as a run records it: architecture and parameters; the builder's import path too for a
        network that is not built in (two builders never share a record), the callable for a ``_target_`` one."""
        if isinstance(self.config, TargetConfig):
            return {"architecture": self.architecture, "params": self.config.record()}
        record: dict[str, Any] = {"architecture": self.architecture, "params": self.config.to_params()}
        if self.entry.implementation:
            record["builder"] = self.entry.builders[self.framework]
        return record


@dataclass(frozen=True)
class AtlasSpec:
    """An atlas baseline: ``bench.baselines.atlas.build_atlas(**params)`` (``kind`` and registration settings)."""

    params: dict[str, Any]
    framework: str = "sitk"
    tag: str = ATLAS

    def model_record(self) -> dict[str, Any]:
        return {"architecture": ATLAS, "params": dict(self.params)}


SegmenterSpec = NetworkSpec | AtlasSpec


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; ``config`` is the resolved config it came from (kept for summary.json)."""

    data: DataSpec
    preprocess: PreprocessSpec
    segmenter: SegmenterSpec
    tracking: TrackingSpec
    seed: int
    row: int | None
    label: str
    force: bool
    profile: str
    cache_dir: str
    outputs_dir: str
    runs_dir: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> ModelSpec:
        """The method's architecture and effective parameters (derived from ``segmenter``, not a copy)."""
        record = self.segmenter.model_record()
        return ModelSpec(record["architecture"], record["params"])

    @property
    def framework(self) -> str:
        return self.segmenter.framework

    @property
    def network(self) -> NetworkSpec:
        """The network of a network run; ConfigError for an atlas run (it trains nothing)."""
        if not isinstance(self.segmenter, NetworkSpec):
            raise ConfigError(f"run {self.name} is an atlas baseline: it has no network, training or patches")
        return self.segmenter

    @property
    def config_hash(self) -> str:
        """The run's identity: a hash of ``effective_settings`` (what ran, not how it was written)."""
        return config_hash(effective_settings(self))

    @property
    def name(self) -> str:
        row = f"row{self.row}-" if self.row is not None else ""
        return f"{row}{self.segmenter.tag}-{self.preprocess.name}-seed{self.seed}"


def config_hash(settings: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the canonical JSON of ``settings``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_record(split: str | SplitSpec | FoldSplit) -> Any:
    """A split as plain values: its name, the explicit id lists, or the fold settings."""
    if isinstance(split, str):
        return split
    if isinstance(split, FoldSplit):
        return {"folds": split.folds, "fold": split.fold, "fold_seed": split.seed}
    return {name: list(getattr(split, name)) for name in SPLITS}


def data_record(data: DataSpec) -> dict[str, Any]:
    """The data a run used; ``train_on_val`` only when on, the label set and channels only when they are not the
    paper's (runs recorded before these settings keep their hash)."""
    record: dict[str, Any] = {"name": data.name, "root": data.root, "split": split_record(data.split)}
    if data.train_on_val:
        record["train_on_val"] = True
    if not data.paper_labels:
        record["labels"] = data.labels.record()
        record["channels"] = list(data.channels)
    return record


def effective_settings(spec: RunSpec) -> dict[str, Any]:
    """Everything that decides a run's result, as it ran: profile overrides and defaults applied, and only
    what applies to the method (an atlas has no framework, optimizer, patches or inference settings).

    Its hash is the run's identity and its flattened form the run's MLflow params. Paths other than the
    data root, tracking, ``force``, the row number, label and profile name do not change a result and are
    left out.
    """
    settings: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "data": data_record(spec.data),
        "preprocess": {"name": spec.preprocess.name, "steps": [dict(step) for step in spec.preprocess.steps]},
        "model": spec.segmenter.model_record(),
        "seed": spec.seed,
    }
    method = spec.segmenter
    if isinstance(method, NetworkSpec):
        # progress: display only; prefetch_batches: the same batches in the same order with or without it
        train = {k: v for k, v in asdict(method.train).items() if k not in ("progress", "prefetch_batches")}
        train["scheduler"] = method.train.scheduler.record()  # only what applies to its kind
        if train["monitor"] == "val_loss":  # the default, and what every run before the setting monitored
            train.pop("monitor")
        if train["keep_weights"] == "best":  # likewise
            train.pop("keep_weights")
        if train["loss"]["dice_reduction"] == "sample" or train["loss"]["name"] == "ce":  # likewise; CE has no Dice
            train["loss"].pop("dice_reduction")
        sampling = asdict(method.sampling)
        sampling["augmentation"] = method.sampling.augmentation.record()  # only the transforms that are on
        if not method.sampling.class_fraction:
            sampling.pop("class_centres")
        settings.update(
            framework=method.framework,
            train=train,
            sampling=sampling,
            inference=asdict(method.inference),
        )
    return settings


def spec_summary(spec: RunSpec) -> dict[str, Any]:
    """A JSON-able view of the spec (for summary.json; a tracking URI's password shown as ``***``)."""
    out: dict[str, Any] = {f.name: asdict(getattr(spec, f.name)) if f.name in ("data", "preprocess", "tracking")
                           else getattr(spec, f.name) for f in fields(spec) if f.name not in ("config", "segmenter")}
    out.update(model=spec.segmenter.model_record(), framework=spec.framework)
    if out["tracking"].get("uri"):
        out["tracking"]["uri"] = hide_password(out["tracking"]["uri"])
    if isinstance(spec.segmenter, NetworkSpec):
        out.update(train=asdict(spec.segmenter.train), sampling=asdict(spec.segmenter.sampling),
                   inference=asdict(spec.segmenter.inference))
    return out
