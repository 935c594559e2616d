"""The Hydra side of a sweep, apart from the entry point: the config folder, composing and resolving a config,
expanding ``--multirun`` overrides into jobs and their specs, and the driver's tracking callback
(``hydra.callbacks.tracking`` in conf/config.yaml). With ``bench.run`` the only modules that import Hydra.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench import hardware, placement
from bench.config import run_spec_from_config, tracking_names
from bench.errors import ConfigError
from bench.redact import hide_password
from bench.spec import RunSpec
from bench.validation import section

if TYPE_CHECKING:
    from bench.tracking.runs import Tracker

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("bench.sweeps")


def _joblib_jobs(device: str) -> int:
    return placement.joblib_jobs([gpu.index for gpu in hardware.nvidia_gpus()], device)


def register_resolvers() -> None:
    """The resolvers conf/hydra/launcher/*.yaml use to follow ``profile.device``: ``bench.gpus_per_run`` (Ray's
    ``num_gpus``, SLURM's ``gpus_per_task``) and ``bench.joblib_jobs`` (joblib's ``n_jobs``); see
    ``bench.placement``."""
    for name, resolver in (("bench.gpus_per_run", placement.gpus_per_run), ("bench.joblib_jobs", _joblib_jobs)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations and return plain Python containers (config errors become ConfigError)."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the configuration: {exc}".splitlines()[0]) from exc
    assert isinstance(container, dict)
    container.pop("hydra", None)
    container.pop("debug", None)
    return {str(k): v for k, v in container.items()}


def compose_config(overrides: Sequence[str], *, return_hydra_config: bool = False) -> DictConfig:
    """``conf/config.yaml`` with ``overrides``: inside a running Hydra app (a sweep's driver) its own config
    search path is used, elsewhere ``conf/`` is initialised for the call."""
    running = GlobalHydra.instance().is_initialized()
    with nullcontext() if running else initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs ``python -m bench.run --multirun OVERRIDES`` launches, each as its list of overrides.

    Like Hydra's basic sweeper: the config's ``hydra.sweeper.params`` (e.g. from ``+sweep=brainbench``) and the
    command line's comma lists / ranges expand to their cartesian product; a command-line value for a key
    replaces the sweep file's. Hydra's own overrides (``hydra/launcher=joblib``) are dropped: they do not
    change a job's configuration.
    """
    parser = OverridesParser.create()
    try:
        given = [o for o in parser.parse_overrides(list(overrides)) if not o.is_hydra_override()]
        fixed = [str(o.input_line) for o in given if not o.is_sweep_override()]
        base = compose_config(fixed, return_hydra_config=True)
        params = OmegaConf.select(base, "hydra.sweeper.params") or {}
        from_file = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot expand the sweep {' '.join(overrides)!r}: {hydra_error_line(exc)}") from None
    by_key: dict[str, list[str]] = {}
    for override in [*from_file, *given]:  # the command line after the sweep file: its value wins
        key = override.get_key_element()
        if override.is_sweep_override():
            by_key[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            by_key[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*by_key.values())]


def sweep_specs(overrides: Sequence[str]) -> list[tuple[list[str], RunSpec]]:
    """Each job of a sweep (:func:`sweep_jobs`) with the run spec it translates to (its config hash, tracking)."""
    specs = []
    for job in sweep_jobs(overrides):
        specs.append((job, run_spec_from_config(to_container(_compose_job(job)))))
    return specs


def _compose_job(job: list[str]) -> DictConfig:
    try:
        return compose_config(job)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"sweep job {' '.join(job)!r}: {hydra_error_line(exc)}") from None


class SweepStore(NamedTuple):
    """Where some of a sweep's jobs log (``tracking.uri``, ``experiment``, ``sweep``) and write (``paths``)."""

    uri: str | None
    experiment: str
    sweep: str
    runs: str
    outputs: str


def sweep_tracking(overrides: Sequence[str]) -> list[SweepStore]:
    """Each distinct :class:`SweepStore` of a sweep's jobs, in job order (an experiment file or the sweep's own
    axes may change them from job to job)."""
    found: dict[SweepStore, None] = {}
    for job in sweep_jobs(overrides):
        cfg = _compose_job(job)
        try:
            container = to_container(cfg)
        except ConfigError as exc:
            raise ConfigError(f"sweep job {' '.join(job)!r}: {exc.message}") from exc
        tracking = section(container, "tracking")
        paths = section(container, "paths")
        runs = str(paths.get("runs", "runs"))
        experiment, sweep = tracking_names(container)
        uri = tracking.get("uri")
        found[SweepStore(None if uri is None else str(uri), experiment, sweep, runs,
                         str(paths.get("outputs", f"{runs}/outputs")))] = None
    return list(found)


SWEEP_STORES: list[tuple[Tracker, SweepStore]] = []
"""What :class:`SweepTracking` opened for the sweep's jobs, so that a stopped driver can tidy up after them."""


def mark_stopped_jobs() -> None:
    """After the driver was stopped: the runs its joblib workers (SIGKILLed with it) left RUNNING end KILLED,
    and their unfinished output folders are removed."""
    from bench.experiment import run_outputs

    for tracker, store in SWEEP_STORES:
        try:
            for name, config_hash in tracker.reap_stopped_workers():
                _, partial = run_outputs(Path(store.outputs), store.experiment, name, config_hash)
                shutil.rmtree(partial, ignore_errors=True)
        except Exception as exc:  # the stop is being reported already; the next start reaps these runs
            log.warning("could not mark the stopped sweep's runs KILLED in %s: %s", hide_password(tracker.uri),
                        hide_password(str(exc)))


class SweepTracking(Callback):
    """Hydra callback (``hydra.callbacks.tracking`` in conf/config.yaml): before a sweep fans out, the driver
    checks the tracking store (an unreachable server is one ``error:`` line) and creates the sweep's experiment
    and parent run once, so that workers, possibly on other machines, only find them. Each job then hides any
    URI password in the configs Hydra saved for it (see :func:`hide_passwords_in`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        from bench.tracking.runs import Tracker

        for store in sweep_tracking(overrides):  # the jobs' experiments, not the driver's
            tracker = Tracker(store.experiment, store.uri, Path(store.runs))
            parent = tracker.parent_run(store.sweep)
            SWEEP_STORES.append((tracker, store))
            log.info("tracking %s: experiment %s, parent run %s", hide_password(tracker.uri), tracker.experiment,
                     parent)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has just saved the job's configs (``.hydra/``): hide any URI password in them (and in the
        sweep's ``multirun.yaml`` when it is on this machine)."""
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        output = OmegaConf.select(config, "hydra.runtime.output_dir")
        if subdir is not None and output:
            for path in (Path(str(output)) / str(subdir)).glob("*.yaml"):
                hide_passwords_in(path)
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            hide_passwords_in(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / "multirun.yaml")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        hide_passwords_in(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / "multirun.yaml")


def hide_passwords_in(path: Path) -> None:
    """Rewrite a saved config with every ``://user:password@`` shown as ``://user:***@`` (missing: nothing)."""
    if not path.is_file():
        return
    text = path.read_text()
    hidden = hide_password(text)
    if hidden != text:
        path.write_text(hidden)


def hydra_error_line(exc: BaseException) -> str:
    """Hydra's multi-line report of a composition/override error, as one line (options kept, search path dropped)."""
    head: list[str] = []
    options: list[str] = []
    title = ""
    for raw in str(exc).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(
            ("Config search path", "provider=", "full_key:", "object_type=", "Set the environment")
        ):
            break
        if line.startswith("Available options"):
            title = line.rstrip(":").replace("Available", "available")
        elif title:
            options.append(line)
        else:
            head.append(line)
    text = " ".join(head) or type(exc).__name__
    override = getattr(exc, "override", None)  # OverrideParseException names the bad override
    if override:
        text = f"override {override!r}: {text}"
    if options:
        text += f" ({title}: {', '.join(options)})"
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text + _closest_keys(cause)


def _closest_keys(cause: BaseException | None) -> str:
    """``" (closest: epochs)"`` when Hydra could not override a key its config lacks (``model.params.featurs``):
    OmegaConf's error holds the mapping the key was looked up in."""
    key, parent = getattr(cause, "key", None), getattr(cause, "parent_node", None)
    if not isinstance(key, str) or not isinstance(parent, DictConfig):
        return ""
    near = difflib.get_close_matches(key, [str(k) for k in parent], n=3, cutoff=0.5)
    return f" (closest: {', '.join(near)})" if near else ""
