"""The one translation of the configuration: a resolved config dict (composed by Hydra in ``bench.run``)
becomes a ``bench.spec.RunSpec`` of effective settings.

``run_spec_from_config(cfg)`` validates every value at the edge (``ConfigError`` naming the setting, the bad
value and the fix), applies the profile's overrides and defaults, resolves ``precision: auto`` for this
machine, registers a model YAML's own architecture, and checks network parameters against the one
architecture registry (``bench.networks.registry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from bench.contract import (
    DICE_REDUCTIONS,
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
from bench.data.splits import SPLITS, SplitSpec
from bench.errors import ConfigError
from bench.hardware import check_precision_name, resolve_for_run, worker_cpus
from bench.networks import registry
from bench.networks.configs import NetConfig
from bench.patching.augment import AugmentSpec
from bench.spec import (
    ATLAS,
    DEVICE,
    FRAMEWORKS,
    PATCH_REGIONS,
    SAMPLING_MODES,
    AtlasSpec,
    DataSpec,
    InferenceSpec,
    ModelSpec,
    NetworkSpec,
    PreprocessSpec,
    RunSpec,
    SamplingSpec,
    SegmenterSpec,
    TrackingSpec,
    architectures,
)


def _triple(value: Any, setting: str) -> tuple[int, int, int]:
    items = [value] * 3 if isinstance(value, int) else list(value)
    if len(items) != 3 or not all(isinstance(v, int) and v > 0 for v in items):
        raise ConfigError(f"{setting}={value!r} must be one positive integer or three", fix="e.g. [32, 32, 32]")
    return items[0], items[1], items[2]


def _positive(value: Any, setting: str, *, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{setting}={value!r} must be {kind}")
    return value


def _choice(value: Any, options: tuple[str, ...], setting: str) -> str:
    if value not in options:
        raise ConfigError(f"{setting}={value!r} is unknown", fix=f"use one of {', '.join(options)}")
    return str(value)


def _flag(value: Any, setting: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}={value!r} must be true or false")
    return value


def _optimizer(cfg: Mapping[str, Any]) -> OptimizerSpec:
    name = _choice(cfg.get("name"), ("adam", "adadelta", "sgd"), "optimizer.name")
    lr = _positive(cfg.get("lr"), "optimizer.lr")
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    return OptimizerSpec(
        name=name,  # type: ignore[arg-type]
        lr=float(lr),
        eps=float(_positive(cfg.get("eps", 1e-8), "optimizer.eps")),
        betas=(float(betas[0]), float(betas[1])),
        rho=float(cfg.get("rho", 0.9)),
        momentum=float(cfg.get("momentum", 0.0)),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
    )


def _loss(cfg: Mapping[str, Any]) -> LossSpec:
    name = _choice(cfg.get("name"), ("dice", "ce", "dice_ce"), "loss.name")
    return LossSpec(
        name=name,  # type: ignore[arg-type]
        smooth=float(cfg.get("smooth", 1e-5)),
        dice_weight=float(cfg.get("dice_weight", 1.0)),
        ce_weight=float(cfg.get("ce_weight", 1.0)),
        dice_reduction=_choice(cfg.get("dice_reduction", "sample"), DICE_REDUCTIONS,  # type: ignore[arg-type]
                               "loss.dice_reduction"),
    )


SCHEDULER_NUMBERS = ("factor", "min_lr", "threshold", "power", "pct_start", "div_factor", "final_div_factor")


def _scheduler(cfg: Mapping[str, Any]) -> SchedulerSpec:
    """``profile.scheduler``: kind (default plateau) and its numbers; ConfigError naming an unknown key."""
    known = {f.name for f in fields(SchedulerSpec)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"profile.scheduler has unknown key {', '.join(map(repr, unknown))}",
                          fix=f"use some of {', '.join(sorted(known))}")
    values: dict[str, Any] = {"kind": _choice(cfg.get("kind", "plateau"), SCHEDULER_KINDS, "profile.scheduler.kind"),
                              "interval": _choice(cfg.get("interval", "epoch"), INTERVALS,
                                                  "profile.scheduler.interval")}
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


def _fraction(value: Any, setting: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{setting}={value!r} must be a number in [0, 1]", fix="0 switches it off")
    return float(value)


def _classes(value: Any, setting: str) -> tuple[int, ...]:
    items = list(value) if isinstance(value, (list, tuple)) else None
    if not items or any(isinstance(c, bool) or c not in (1, 2, 3) for c in items):
        raise ConfigError(f"{setting}={value!r} must be a non-empty list of classes 1 (CSF), 2 (GM), 3 (WM)")
    return tuple(int(c) for c in items)


def _margin(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"inference.background_margin_voxels={value!r} must be an integer >= 0 or null",
                          fix="null keeps every voxel the network labels; 3 covers IBSR's labels")
    return value


def _by_model(profile: Mapping[str, Any], setting: str) -> Mapping[str, Any]:
    """``profile.<setting>`` (a mapping keyed by architecture); ConfigError naming an unknown model."""
    by_model = profile.get(setting) or {}
    unknown = sorted(set(by_model) - set(architectures()))
    if unknown:
        raise ConfigError(f"profile.{setting} has unknown model {', '.join(map(repr, unknown))}",
                          fix=f"use some of {', '.join(architectures())}")
    return by_model


def _epochs(profile: Mapping[str, Any], architecture: str, row: int | None) -> int:
    """``profile.epochs_by_row[row]``, else ``profile.epochs_by_model[architecture]``, else ``profile.epochs``."""
    by_row = profile.get("epochs_by_row") or {}
    for key, value in by_row.items():
        if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= 99:
            raise ConfigError(f"profile.epochs_by_row has key {key!r}", fix="use Table 1 row numbers, e.g. {9: 200}")
        if key == row:
            return _positive(value, f"profile.epochs_by_row.{key}", integer=True)
    by_model = _by_model(profile, "epochs_by_model")
    if architecture in by_model:
        return _positive(by_model[architecture], f"profile.epochs_by_model.{architecture}", integer=True)
    return _positive(profile.get("epochs"), "profile.epochs", integer=True)


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


def _model(
    model_cfg: Mapping[str, Any], profile: Mapping[str, Any], seed: int
) -> tuple[ModelSpec, NetConfig | None]:
    """The effective model (YAML params, then the profile's overrides, then defaults) and a network's config.

    Every override is checked against the architecture's config, so a profile cannot set a width the
    network does not have. A model YAML with an ``implementation`` block registers its architecture here.
    An atlas's registration is seeded by the run's ``seed`` unless its params name one.
    """
    name = model_cfg.get("architecture")
    if model_cfg.get("implementation"):
        registry.register_from_model_config(model_cfg)
    elif name not in architectures():
        raise ConfigError(f"model.architecture={name!r} is unknown",
                          fix=f"use one of {', '.join(architectures())}, or name your network's builders in the "
                          "model YAML's implementation block (README: Adding a model)")
    architecture = str(name)
    params = dict(model_cfg.get("params") or {})
    overrides = _by_model(profile, "model_overrides").get(architecture) or {}
    params.update(overrides)
    if architecture == ATLAS:
        from bench.baselines.atlas import build_atlas

        atlas = build_atlas(**{"seed": seed, **params})
        return ModelSpec(architecture, {"kind": atlas.kind, **atlas.params()}), None
    try:
        config = registry.lookup(architecture).make_config(params)
    except ConfigError as exc:
        source = "model.params or profile.model_overrides" if overrides else "model.params"
        raise ConfigError(f"{source}: {exc.problem}", fix=exc.fix) from None
    return ModelSpec(architecture, config.to_params()), config


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


def run_spec_from_config(cfg: Mapping[str, Any]) -> RunSpec:
    """Validate a resolved config dict (as composed from conf/) and build the RunSpec."""
    profile = cfg["profile"]
    framework = _choice(cfg["framework"]["name"], FRAMEWORKS, "framework")
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} must be an integer")
    model, net_config = _model(cfg["model"], profile, seed)
    architecture = model.architecture

    batch_size = _positive(profile.get("batch_size"), "profile.batch_size", integer=True)
    sampling_cfg = cfg["sampling"]
    mode = _choice(sampling_cfg.get("mode"), SAMPLING_MODES, "sampling.mode")
    oversample_class = sampling_cfg.get("oversample_class")
    if oversample_class is not None and oversample_class not in (1, 2, 3):
        raise ConfigError(f"sampling.oversample_class={oversample_class!r} must be 1 (CSF), 2 (GM), 3 (WM) or null")
    sampling = SamplingSpec(
        mode=mode,
        patch_size=_triple(profile.get("patch_size"), "profile.patch_size"),
        step=_triple(profile.get("patch_step"), "profile.patch_step"),
        batch_size=batch_size,
        patches_per_epoch=_positive(profile.get("patches_per_epoch"), "profile.patches_per_epoch", integer=True),
        oversample_class=oversample_class,
        oversample_factor=_positive(sampling_cfg.get("oversample_factor", 1), "sampling.oversample_factor",
                                    integer=True),
        val_batches=profile.get("val_batches"),
        region=_choice(sampling_cfg.get("region", "centre_in_brain"), PATCH_REGIONS, "sampling.region"),
        class_fraction=_fraction(sampling_cfg.get("class_fraction", 0.0), "sampling.class_fraction"),
        class_centres=_classes(sampling_cfg.get("class_centres", [1, 2, 3]), "sampling.class_centres"),
        augmentation=AugmentSpec.from_config(cfg.get("augmentation")),
    )
    steps = profile.get("steps_per_epoch")
    if steps is not None:
        _positive(steps, "profile.steps_per_epoch", integer=True)
    train = TrainSpec(
        epochs=_epochs(profile, architecture, cfg.get("row")),
        steps_per_epoch=steps,
        optimizer=_optimizer(cfg["optimizer"]),
        scheduler=_scheduler(profile.get("scheduler") or {}),
        loss=_loss(cfg["loss"]),
        early_stopping=EarlyStoppingSpec(patience=int(profile.get("early_stopping_patience", 0))),
        seed=seed,
        num_threads=int(profile.get("num_threads", 0)) or worker_cpus(),  # 0: what this worker was given
        device=DEVICE,
        precision=_precision(profile, framework, DEVICE) if net_config is not None else "fp32",  # type: ignore[arg-type]
        monitor=_choice(profile.get("monitor", "val_loss"), MONITORS, "profile.monitor"),  # type: ignore[arg-type]
        keep_weights=_choice(profile.get("keep_weights", "best"), KEEP_WEIGHTS,  # type: ignore[arg-type]
                             "profile.keep_weights"),
    )
    inf = cfg.get("inference") or {}
    overlap = float(inf.get("overlap", 0.5))
    if not 0 <= overlap < 1:
        raise ConfigError(f"inference.overlap={overlap} must be in [0, 1)")
    inference = InferenceSpec(
        overlap=overlap,
        blending=_choice(inf.get("blending", "gaussian"), ("gaussian", "mean"), "inference.blending"),
        batch_size=_positive(inf.get("batch_size", 8), "inference.batch_size", integer=True),
        skip_background=bool(inf.get("skip_background", True)),
        background_margin_voxels=_margin(inf.get("background_margin_voxels", 3)),
    )
    data = cfg["data"]
    if not data.get("root"):
        raise ConfigError("data.root is empty", fix="set data.root=/path/to/dataset")
    steps_cfg = cfg["preprocess"].get("steps") or []
    from bench.preprocess.pipeline import Pipeline

    preprocess_steps = tuple({"name": step.name, **step.params()} for step in Pipeline.from_spec(steps_cfg).steps)
    tracking = cfg.get("tracking") or {}
    paths = cfg.get("paths") or {}
    segmenter: SegmenterSpec = AtlasSpec(model.params) if net_config is None else NetworkSpec(
        architecture, framework, net_config, train, sampling, inference
    )
    if isinstance(segmenter, NetworkSpec):
        segmenter.config.check_patch_size(sampling.patch_size)
    return RunSpec(
        data=DataSpec(name=str(data.get("name")), root=str(data["root"]), split=_split(data),
                      train_on_val=_flag(data.get("train_on_val", False), "data.train_on_val")),
        preprocess=PreprocessSpec(name=str(cfg["preprocess"].get("name")), steps=preprocess_steps),
        model=model,
        framework=framework,
        train=train,
        sampling=sampling,
        inference=inference,
        tracking=TrackingSpec(uri=tracking.get("uri"), experiment=str(tracking.get("experiment", "brainbench")),
                              sweep=str(tracking.get("sweep", "brainbench"))),
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
