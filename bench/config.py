"""The one translation of the configuration: a resolved config dict (composed by Hydra in ``bench.run``)
becomes a ``bench.spec.RunSpec`` of effective settings.

``run_spec_from_config(cfg)`` validates every value at the edge (``ConfigError`` naming the setting, the bad
value and the fix), refuses a key that no section defines (naming the closest known ones), applies the
profile's overrides and defaults, resolves ``precision: auto`` for this machine, and builds each network's
config once: a built-in or registered architecture (``bench.networks.registry``) or a callable named by its
import path (``bench.networks.target``). The run's spec holds that config; nothing looks it up again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from bench.contract import (
    INTERVALS,
    KEEP_WEIGHTS,
    MONITORS,
    SCHEDULER_KINDS,
    EarlyStoppingSpec,
    LossSpec,
    OptimizerSpec,
    SchedulerSpec,
    TrainSpec,
)
from bench.data.folds import FoldSplit
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.data.splits import SPLITS, SplitSpec
from bench.errors import ConfigError
from bench.hardware import DEVICES, check_device, check_precision_name, resolve_for_run, worker_cpus
from bench.networks import registry
from bench.networks.configs import NetConfig
from bench.networks.target import BUILDER, TargetConfig
from bench.patching.augment import AugmentSpec
from bench.spec import (
    ATLAS,
    FRAMEWORKS,
    PATCH_REGIONS,
    SAMPLING_MODES,
    AtlasSpec,
    DataSpec,
    InferenceSpec,
    NetworkSpec,
    PreprocessSpec,
    RunSpec,
    SamplingSpec,
    SegmenterSpec,
    TrackingSpec,
    architectures,
)
from bench.validation import (
    check_choice,
    check_flag,
    check_fraction,
    check_int,
    check_keys,
    check_positive,
    section,
)

TOP_LEVEL_KEYS = ("data", "preprocess", "model", "framework", "optimizer", "loss", "sampling", "augmentation",
                  "profile", "seed", "row", "label", "force", "inference", "tracking", "paths")
PROFILE_KEYS = ("name", "patch_size", "patch_step", "batch_size", "epochs", "epochs_by_model", "epochs_by_row",
                "steps_per_epoch", "patches_per_epoch", "val_batches", "overlap", "early_stopping_patience",
                "monitor", "keep_weights", "scheduler", "precision", "device", "num_threads", "model_overrides",
                "deterministic", "prefetch_batches")
MODEL_KEYS = ("architecture", "params", "implementation", "channels", *FRAMEWORKS)
DATA_KEYS = ("name", "root", "split", "fold", "folds", "fold_seed", "train_on_val")
SAMPLING_KEYS = ("name", "mode", "oversample_class", "oversample_factor", "region", "class_fraction", "class_centres")
INFERENCE_KEYS = tuple(f.name for f in fields(InferenceSpec))
TRACKING_KEYS = ("uri", "experiment", "sweep", "log_images", "log_paths", "hash_subject_ids")
PATHS_KEYS = ("runs", "cache", "outputs")
CONF_MODELS = Path(__file__).resolve().parent.parent / "conf" / "model"


def _check_sections(cfg: Mapping[str, Any]) -> None:
    """ConfigError for the first key that no section defines (``+profile.epoch=5``, ``+optimzer.lr=1``)."""
    check_keys("", cfg, TOP_LEVEL_KEYS)
    for name, known in (("profile", PROFILE_KEYS), ("model", MODEL_KEYS), ("data", DATA_KEYS),
                        ("sampling", SAMPLING_KEYS), ("inference", INFERENCE_KEYS), ("tracking", TRACKING_KEYS),
                        ("paths", PATHS_KEYS), ("framework", ("name",)), ("preprocess", ("name", "steps"))):
        check_keys(name, section(cfg, name), known)


def _triple(value: Any, setting: str) -> tuple[int, int, int]:
    items = [value] * 3 if isinstance(value, int) else list(value)
    if len(items) != 3 or not all(isinstance(v, int) and v > 0 for v in items):
        raise ConfigError(f"{setting}={value!r} must be one positive integer or three", fix="e.g. [32, 32, 32]")
    return items[0], items[1], items[2]


SCHEDULER_NUMBERS = ("factor", "min_lr", "threshold", "power", "pct_start", "div_factor", "final_div_factor")


def _scheduler(cfg: Mapping[str, Any]) -> SchedulerSpec:
    """``profile.scheduler``: kind (default plateau) and its numbers; ConfigError naming an unknown key."""
    known = {f.name for f in fields(SchedulerSpec)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"profile.scheduler has unknown key {', '.join(map(repr, unknown))}",
                          fix=f"use some of {', '.join(sorted(known))}")
    values: dict[str, Any] = {"kind": check_choice("profile.scheduler.kind", cfg.get("kind", "plateau"), SCHEDULER_KINDS),
                              "interval": check_choice("profile.scheduler.interval", cfg.get("interval", "epoch"), INTERVALS)}
    for name in SCHEDULER_NUMBERS:
        if name in cfg:
            value = cfg[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"profile.scheduler.{name}={value!r} must be a number")
            values[name] = float(value)
    for name in ("patience", "warmup_epochs"):
        if name in cfg:
            value = cfg[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"profile.scheduler.{name}={value!r} must be an integer")
            values[name] = value
    try:
        return SchedulerSpec(**values)
    except ConfigError as exc:
        raise ConfigError(f"profile.{exc.problem}", fix=exc.fix) from None


def _class_index(value: Any, setting: str, labels: LabelSet) -> int:
    """A scored class named by its label name (``CSF``) or stored value, as its class index; ConfigError naming
    the dataset's classes for anything else (the background included: it is never a class to favour)."""
    index = labels.index(value, setting=setting)
    if index == 0:
        raise ConfigError(f"{setting}={value!r} is the background", fix=f"use one of {', '.join(labels.describe_classes())}")
    return index


def _classes(value: Any, setting: str, labels: LabelSet) -> tuple[int, ...]:
    """``sampling.class_centres``: label names (or stored values) as class indices; null means every scored class."""
    if value is None:
        return labels.scored_indices
    items = list(value) if isinstance(value, (list, tuple)) else None
    if not items:
        raise ConfigError(f"{setting}={value!r} must be a non-empty list of label names",
                          fix=f"e.g. [{', '.join(labels.scored)}]")
    return tuple(_class_index(c, setting, labels) for c in items)


NNUNET = "nnunet"
"""``data.name`` of ``conf/data/nnunet.yaml``: name the data after its folder (``Dataset001_Mine``)."""


def data_name(data: Mapping[str, Any]) -> str:
    """The data's name in records and experiment names: ``data.name``, or for ``data=nnunet`` (whose name is
    ``nnunet``) the dataset folder's name, so that two datasets never share an experiment."""
    name = str(data.get("name"))
    if name == NNUNET and data.get("root"):
        return Path(str(data["root"])).resolve().name or NNUNET
    return name


def _dataset_labels(data: Mapping[str, Any]) -> tuple[LabelSet, tuple[str, ...]]:
    """The label set and input channels the data bring: ``dataset.json`` of an nnU-Net or Decathlon root,
    else the paper's (IBSR18 and the synthetic cohort)."""
    root = Path(str(data["root"]))
    if (root / "dataset.json").is_file():
        from bench.data.nnunet import read_dataset_json

        info = read_dataset_json(root)
        return info.labels, info.channel_names
    if data.get("name") == NNUNET:
        raise ConfigError(f"data.root={str(root)!r} holds no dataset.json",
                          fix="point data.root at the nnU-Net dataset folder (the one with dataset.json, imagesTr/, "
                          "labelsTr/)")
    return IBSR_LABELS, ("T1",)


def _margin(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"inference.background_margin_voxels={value!r} must be an integer >= 0 or null",
                          fix="null keeps every voxel the network labels; 3 covers IBSR's labels")
    return value


@functools.cache
def _conf_model_names() -> tuple[str, ...]:
    """The architectures of ``conf/model/*.yaml``, read once per process (every spec of a sweep asks)."""
    names = []
    for path in sorted(CONF_MODELS.glob("*.yaml")):
        try:
            value = (yaml.safe_load(path.read_text()) or {}).get("architecture")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if isinstance(value, str):
            names.append(value)
    return tuple(names)


def known_models(current: str) -> tuple[str, ...]:
    """Every model a profile may key a setting by: the registered networks, the atlas, the run's own model and
    the architectures of ``conf/model/*.yaml`` (the ``_target_`` models there register nothing)."""
    return tuple(dict.fromkeys([*architectures(), current, *_conf_model_names()]))


def _by_model(profile: Mapping[str, Any], setting: str, current: str) -> Mapping[str, Any]:
    """``profile.<setting>`` (a mapping keyed by architecture); ConfigError naming an unknown model."""
    by_model = profile.get(setting) or {}
    if not isinstance(by_model, Mapping):
        raise ConfigError(f"profile.{setting}={by_model!r} must map model names to values")
    known = known_models(current)
    unknown = sorted(set(by_model) - set(known))
    if unknown:
        raise ConfigError(f"profile.{setting} has unknown model {', '.join(map(repr, unknown))}",
                          fix=f"use some of {', '.join(known)}")
    return by_model


def _epochs(profile: Mapping[str, Any], architecture: str, row: int | None) -> int:
    """``profile.epochs_by_row[row]``, else ``profile.epochs_by_model[architecture]``, else ``profile.epochs``."""
    by_row = profile.get("epochs_by_row") or {}
    for key, value in by_row.items():
        if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= 99:
            raise ConfigError(f"profile.epochs_by_row has key {key!r}", fix="use Table 1 row numbers, e.g. {9: 200}")
        if key == row:
            return check_positive(f"profile.epochs_by_row.{key}", value, integer=True)
    by_model = _by_model(profile, "epochs_by_model", architecture)
    if architecture in by_model:
        return check_positive(f"profile.epochs_by_model.{architecture}", by_model[architecture], integer=True)
    return check_positive("profile.epochs", profile.get("epochs"), integer=True)


def _precision(profile: Mapping[str, Any], framework: str, device: str) -> str:
    """``profile.precision`` resolved to what the network will train in (``auto`` -> fp32, bf16 or fp16).

    Resolved here, before the run's hash and params are made, so that the record says what ran: see
    ``bench.hardware`` for the rule (CPU flags, or the GPU ``nvidia-smi`` lists when ``device`` allows CUDA).
    A profile without the key trains in fp32, as every run did before the setting existed.
    """
    value = check_precision_name(profile.get("precision", "fp32"), "profile.precision")
    try:
        return resolve_for_run(value, framework=framework, device=device)
    except ConfigError as exc:
        raise ConfigError(f"profile.{exc.problem}", fix=exc.fix) from None


def _device(profile: Mapping[str, Any], trains: bool) -> str:
    """``profile.device`` (``auto`` when absent, as before the setting): ConfigError for an unknown value, and
    for ``cuda`` where no GPU is visible when the run trains a network (an atlas runs on the CPU)."""
    value = profile.get("device", "auto")
    if not trains:
        return check_choice("profile.device", value, DEVICES)
    return check_device(value, "profile.device")


NetworkModel = tuple[registry.Architecture, NetConfig]


def _model(model_cfg: Mapping[str, Any], profile: Mapping[str, Any], seed: int,
           framework: str, num_classes: int = 4, in_channels: int = 1) -> NetworkModel | AtlasSpec:
    """The effective model (YAML, then the profile's overrides, then defaults): a network's registry entry and
    config, or the atlas.

    Every override is checked against the network's config (a profile cannot set a width the network does not
    have); a model YAML with an ``implementation`` block registers its architecture here; a model with a
    ``torch:`` / ``tf:`` block is a ``_target_`` network. An atlas's registration is seeded by the run's
    ``seed`` unless its params name one. A network's input channels and classes are the data's
    (``in_channels``, ``num_classes``); a model that sets them otherwise is refused.
    """
    name = model_cfg.get("architecture")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model.architecture={name!r} must be a non-empty name", fix="e.g. architecture: mynet")
    overrides = dict(_by_model(profile, "model_overrides", name).get(name) or {})
    blocks = [fw for fw in FRAMEWORKS if model_cfg.get(fw) is not None]
    if blocks:
        return _target_network(name, model_cfg, blocks, overrides, framework, num_classes, in_channels)
    if model_cfg.get("channels") is not None:
        raise ConfigError(f"model.channels is given but model {name!r} has no torch: or tf: block with a _target_",
                          fix="add model.torch: {_target_: package.module.Network, ...}")
    if model_cfg.get("implementation"):
        registry.register_from_model_config(model_cfg)
    elif name not in architectures():
        raise ConfigError(f"model.architecture={name!r} is unknown",
                          fix=f"use one of {', '.join(architectures())}, or name your network by its import path "
                          "in a model YAML (`torch: {_target_: package.module.Network}`; README: Adding a model)")
    params = dict(model_cfg.get("params") or {})
    params.update(overrides)
    if name == ATLAS:
        from bench.baselines.atlas import build_atlas

        if num_classes != 4 or in_channels != 1:
            raise ConfigError(f"the atlas baselines segment one T1 into background, CSF, GM and WM; this dataset has "
                              f"{in_channels} channel(s) and {num_classes} classes", fix="compare networks on it")

        atlas = build_atlas(**{"seed": seed, **params})
        return AtlasSpec({"kind": atlas.kind, **atlas.params()})
    entry = registry.lookup(name)
    fields_of_config = {f.name for f in fields(entry.config)}
    for key, value, paper in (("in_channels", in_channels, 1), ("num_classes", num_classes, 4)):
        if key not in fields_of_config:
            if value == paper:  # a network written for one T1 and the paper's 4 classes, as before label sets
                continue
            raise ConfigError(f"network {name!r}: its config has no parameter {key!r}, which the harness sets from "
                              f"the data ({value} here)", fix=f"add {key}: int to the model's params (and use it in "
                              "the builder)")
        if params.setdefault(key, value) != value:
            raise ConfigError(f"model.params.{key}={params[key]!r} but the data give {value}",
                              fix=f"drop model.params.{key}: it is taken from the data")
    try:
        return entry, entry.make_config(params)
    except ConfigError as exc:
        source = "model.params or profile.model_overrides" if overrides else "model.params"
        raise ConfigError(f"{source}: {exc.problem}", fix=exc.fix) from None


def _target_network(name: str, model_cfg: Mapping[str, Any], blocks: list[str], overrides: Mapping[str, Any],
                    framework: str, num_classes: int, in_channels: int) -> NetworkModel:
    """A network named by its import path: the run's framework's block as a ``TargetConfig``."""
    for key in ("params", "implementation"):
        if model_cfg.get(key):
            raise ConfigError(f"model {name!r} has a {', '.join(blocks)} block and model.{key}: a _target_ network "
                              "takes its keyword arguments beside its _target_",
                              fix=f"move model.{key} into model.{blocks[0]}")
    if name in architectures():
        raise ConfigError(f"model.architecture={name!r} is a built-in name", fix="give your model another name")
    if framework not in blocks:
        raise ConfigError(f"model {name!r} has no {framework} network (its YAML names one for {', '.join(blocks)})",
                          fix=f"use framework={blocks[0]}, or add model.{framework}: {{_target_: ...}}")
    config = TargetConfig.from_block(name, framework, model_cfg[framework], model_cfg.get("channels"), overrides,
                                     in_channels=in_channels, num_classes=num_classes)
    return registry.Architecture(name, TargetConfig, {fw: BUILDER for fw in blocks}), config


def _split(data: Mapping[str, Any]) -> str | SplitSpec | FoldSplit:
    """``data.fold`` (k-fold cross-validation), else a named split or explicit id lists
    (``{train: [...], val: [...], test: [...], predict: [...]}``)."""
    if data.get("fold") is not None:
        return FoldSplit(folds=data.get("folds", 5), fold=data["fold"], seed=data.get("fold_seed", 0))
    split = data.get("split", "paper")
    if isinstance(split, str):
        return split
    if not isinstance(split, Mapping):
        raise ConfigError(f"data.split={split!r} must be a split name or a mapping of id lists",
                          fix="e.g. data.split=holdout")
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise ConfigError(f"data.split has unknown keys {sorted(unknown)}", fix=f"use {', '.join(SPLITS)}")
    return SplitSpec(**{k: tuple(v or ()) for k, v in split.items()})


def tracking_names(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """The MLflow experiment and sweep (parent run) a config logs to: ``tracking.experiment`` and
    ``tracking.sweep`` when set; otherwise ``table1-<data>-<profile>`` for a Table 1 row and
    ``<model>-<data>-<profile>`` for any other run (so a user's own model never lands among the Table 1 rows),
    and the sweep named as its experiment."""
    tracking = section(cfg, "tracking")
    experiment = tracking.get("experiment")
    if experiment is None:
        data, profile = data_name(section(cfg, "data")), section(cfg, "profile").get("name")
        model = section(cfg, "model").get("architecture")
        experiment = f"{'table1' if cfg.get('row') is not None else model}-{data}-{profile}"
    sweep = tracking.get("sweep")
    return str(experiment), str(experiment if sweep is None else sweep)


def run_spec_from_config(cfg: Mapping[str, Any]) -> RunSpec:
    """Validate a resolved config dict (as composed from conf/) and build the RunSpec."""
    _check_sections(cfg)
    profile = section(cfg, "profile")
    framework = check_choice("framework", section(cfg, "framework").get("name"), FRAMEWORKS)
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} must be an integer")
    data = section(cfg, "data")
    if not data.get("root") or data.get("root") == "???":  # ???: Hydra's mandatory value, left unset
        raise ConfigError("data.root is not set", fix="set data.root=/path/to/dataset (for data=nnunet: the folder "
                          "holding dataset.json)")
    labels, channels = _dataset_labels(data)
    method = _model(section(cfg, "model"), profile, seed, framework, labels.num_classes, len(channels))
    architecture = ATLAS if isinstance(method, AtlasSpec) else method[0].name

    batch_size = check_positive("profile.batch_size", profile.get("batch_size"), integer=True)
    sampling_cfg = section(cfg, "sampling")
    mode = check_choice("sampling.mode", sampling_cfg.get("mode"), SAMPLING_MODES)
    oversample_class = sampling_cfg.get("oversample_class")
    if oversample_class is not None:
        oversample_class = _class_index(oversample_class, "sampling.oversample_class", labels)
    sampling = SamplingSpec(
        mode=mode,
        patch_size=_triple(profile.get("patch_size"), "profile.patch_size"),
        step=_triple(profile.get("patch_step"), "profile.patch_step"),
        batch_size=batch_size,
        patches_per_epoch=check_positive("profile.patches_per_epoch", profile.get("patches_per_epoch"), integer=True),
        oversample_class=oversample_class,
        oversample_factor=check_positive("sampling.oversample_factor", sampling_cfg.get("oversample_factor", 1),
                                         integer=True),
        val_batches=profile.get("val_batches"),
        region=check_choice("sampling.region", sampling_cfg.get("region", "centre_in_brain"), PATCH_REGIONS),
        class_fraction=check_fraction("sampling.class_fraction", sampling_cfg.get("class_fraction", 0.0)),
        class_centres=_classes(sampling_cfg.get("class_centres"), "sampling.class_centres", labels),
        augmentation=AugmentSpec.from_config(cfg.get("augmentation")),
    )
    trains = not isinstance(method, AtlasSpec)
    device = _device(profile, trains)
    steps = profile.get("steps_per_epoch")
    if steps is not None:
        check_positive("profile.steps_per_epoch", steps, integer=True)
    train = TrainSpec(
        epochs=_epochs(profile, architecture, cfg.get("row")),
        steps_per_epoch=steps,
        optimizer=OptimizerSpec.from_section(section(cfg, "optimizer")),
        scheduler=_scheduler(profile.get("scheduler") or {}),
        loss=LossSpec.from_section(section(cfg, "loss")),
        early_stopping=EarlyStoppingSpec(patience=int(profile.get("early_stopping_patience", 0))),
        seed=seed,
        num_threads=int(profile.get("num_threads", 0)) or worker_cpus(),  # 0: what this worker was given
        device=device,  # type: ignore[arg-type]
        precision=_precision(profile, framework, device) if trains else "fp32",  # type: ignore[arg-type]
        monitor=check_choice("profile.monitor", profile.get("monitor", "val_loss"), MONITORS),  # type: ignore[arg-type]
        keep_weights=check_choice("profile.keep_weights", profile.get("keep_weights", "best"),  # type: ignore[arg-type]
                                  KEEP_WEIGHTS),
        deterministic=check_flag("profile.deterministic", profile.get("deterministic", True)),
        prefetch_batches=check_int("profile.prefetch_batches", profile.get("prefetch_batches", 2), minimum=0),
    )
    inf = cfg.get("inference") or {}
    overlap = float(inf.get("overlap", 0.5))
    if not 0 <= overlap < 1:
        raise ConfigError(f"inference.overlap={overlap} must be in [0, 1)")
    inference = InferenceSpec(
        overlap=overlap,
        blending=check_choice("inference.blending", inf.get("blending", "gaussian"), ("gaussian", "mean")),
        batch_size=check_positive("inference.batch_size", inf.get("batch_size", 8), integer=True),
        skip_background=bool(inf.get("skip_background", True)),
        background_margin_voxels=_margin(inf.get("background_margin_voxels", 3)),
    )
    steps_cfg = section(cfg, "preprocess").get("steps") or []
    from bench.preprocess.pipeline import Pipeline

    preprocess_steps = tuple({"name": step.name, **step.params()} for step in Pipeline.from_spec(steps_cfg).steps)
    tracking = section(cfg, "tracking")
    experiment, sweep = tracking_names(cfg)
    paths = cfg.get("paths") or {}
    segmenter: SegmenterSpec = method if isinstance(method, AtlasSpec) else NetworkSpec(
        method[0], framework, method[1], train, sampling, inference
    )
    if isinstance(segmenter, NetworkSpec):
        segmenter.config.check_patch_size(sampling.patch_size)
    return RunSpec(
        data=DataSpec(name=data_name(data), root=str(data["root"]), split=_split(data),
                      train_on_val=check_flag("data.train_on_val", data.get("train_on_val", False)),
                      labels=labels, channels=channels),
        preprocess=PreprocessSpec(name=str(section(cfg, "preprocess").get("name")), steps=preprocess_steps),
        tracking=TrackingSpec(uri=tracking.get("uri"), experiment=experiment, sweep=sweep,
                              log_images=check_flag("tracking.log_images", tracking.get("log_images", True)),
                              log_paths=check_flag("tracking.log_paths", tracking.get("log_paths", True)),
                              hash_subject_ids=check_flag("tracking.hash_subject_ids",
                                                          tracking.get("hash_subject_ids", False))),
        seed=seed,
        row=cfg.get("row"),
        label=str(cfg.get("label") or ""),
        force=bool(cfg.get("force", False)),
        profile=str(profile.get("name")),
        cache_dir=str(paths.get("cache", "runs/cache")),
        outputs_dir=str(paths.get("outputs", "runs/outputs")),
        runs_dir=str(paths.get("runs", "runs")),
        segmenter=segmenter,
        config=dict(cfg),
    )
