"""``python -m bench.run``: the thin Hydra entry point (with ``bench.sweeps``, the only modules that import Hydra).

Examples:
    python -m bench.run +experiment=table1/row5 data.root=runs/data/synthetic
    python -m bench.run --multirun +sweep=table1 profile=quick seed=1,2,3
    python -m bench.run --multirun +sweep=table1 hydra/launcher=joblib hydra.launcher.n_jobs=2

Bad input ends the job with one ``error: ...`` line and exit code 2 (a traceback with ``--debug``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bench.config import run_spec_from_config
from bench.errors import BenchError, ConfigError
from bench.processes import interruption, stop_signals_raise
from bench.spec import NetworkSpec, RunSpec
from bench.sweeps import CONF_DIR, hydra_error_line, mark_stopped_jobs, to_container

if TYPE_CHECKING:
    from bench.experiment import RunResult

log = logging.getLogger("bench.run")


def run_config(cfg: DictConfig) -> RunResult:
    """Compose → plain dataclasses → run."""
    spec = run_spec_from_config(to_container(cfg))  # config errors first, before mlflow/torch are imported
    _pin_joblib_gpu(spec)
    from bench.experiment import run

    result = run(spec)
    log.info("%s %s (%s)", result.status, result.name, result.config_hash)
    if result.summary:
        means = result.summary.get("mean", {})
        dice = ", ".join(f"{k} {v.get('dice', float('nan')):.3f}" for k, v in means.items())
        print(f"{result.name}: Dice {dice}{_how_it_trained(spec, result.summary.get('run', {}))}", flush=True)
    return result


def _how_it_trained(spec: RunSpec, run: dict[str, Any]) -> str:
    """`` (fp32, 80 epochs, fit 12.3 min)`` for a run that trained a network, else ``""``: the precision
    ``auto`` resolved to says why the same profile takes twice as long on a CPU without native bf16."""
    if not isinstance(spec.segmenter, NetworkSpec):  # the atlas trains nothing
        return ""
    minutes = float(run.get("fit_seconds") or 0.0) / 60.0
    return f" ({spec.segmenter.train.precision}, {run.get('epochs_run', 0)} epochs, fit {minutes:.1f} min)"


def _pin_joblib_gpu(spec: RunSpec) -> None:
    """A joblib sweep's worker keeps one GPU of this machine for its life (``bench.placement``); Ray and SLURM
    give each run its GPU themselves (conf/hydra/launcher/), and a single run uses the first visible GPU."""
    if not isinstance(spec.segmenter, NetworkSpec) or not _multirun():
        return
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return
    from bench import hardware, placement

    try:
        n_jobs = int(launcher.get("n_jobs", -1))
    except (TypeError, ValueError):
        n_jobs = -1
    devices = [gpu.index for gpu in hardware.nvidia_gpus()]
    gpu = placement.pin_joblib_worker(devices, spec.segmenter.train.device, n_jobs,
                                      Path(str(hydra_cfg.sweep.dir)) / ".gpu-slots")
    if gpu is not None:
        log.info("%s: this joblib worker trains on GPU %s (CUDA_VISIBLE_DEVICES)", spec.name, gpu)


class JobFailed(Exception):
    """A sweep job stopped on bad input; its ``error:`` line is already printed (the sweep goes on)."""


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one configuration; errors in user input exit with code 2.

    In a sweep (``--multirun``) a job with bad input prints its ``error:`` line and fails, the other jobs
    still run, and the sweep exits with code 2 at the end.
    """
    try:
        with stop_signals_raise():  # a worker process (joblib, Ray, SLURM) has no cli() around it
            run_config(cfg)
    except BenchError as exc:
        if os.environ.get("BENCH_DEBUG") or cfg.get("debug"):
            raise
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        if _multirun():
            raise JobFailed(exc.message) from None
        sys.exit(2)


RAY_TOKEN_FIX = ("a Ray head started by `bench stack up --auth` requires its token: run `eval \"$(bench stack env)\"` "
                 "on the stack's machine, elsewhere export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<a copy of the "
                 "stack's secrets/ray-token>")


def ray_connection_error(exc: BaseException) -> ConfigError | None:
    """The ``error:`` line for a sweep whose driver could not join the Ray cluster (``hydra/launcher=ray``),
    or None for any other exception. Ray 2.60 refuses a client without the head's token in two ways: with
    ``RAY_AUTH_MODE=token`` but no token, at once (``ray.exceptions.AuthenticationError``); with no
    ``RAY_AUTH_MODE`` or a wrong token, after about 20 s of ``Unauthenticated`` retries that it logs, as a
    plain ``ConnectionError: Failed to connect to Ray cluster at ADDRESS``."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "AuthenticationError" and type(exc).__module__.startswith("ray."):
        return ConfigError(f"Ray refused this sweep: {first.split('. ')[0][:300]}", fix=RAY_TOKEN_FIX)
    if isinstance(exc, ConnectionError) and first.startswith("Failed to connect to Ray cluster"):
        return ConfigError(f"{first[:300]}: its head refused this client (Ray's lines above say 'Unauthenticated' "
                           "when the token is missing or wrong)", fix=f"{RAY_TOKEN_FIX}; else check "
                           "hydra.launcher.ray.init.address and that the head is up (bench stack status)")
    return None


def _debug_requested(argv: list[str]) -> bool:
    flags = {f"{plus}debug={value}" for plus in ("", "+", "++") for value in ("true", "True", "1", "yes")}
    return bool(os.environ.get("BENCH_DEBUG")) or any(arg in flags for arg in argv)


def cli() -> None:
    """``python -m bench.run``: Hydra errors (unknown group option, bad override) also end in one line, exit 2.

    Hydra prints its own multi-line report and exits 1 unless ``HYDRA_FULL_ERROR`` is set, in which case it
    re-raises; this sets it and turns the error into ``error: ...`` (a traceback with ``--debug``, as for
    ``bench``, or ``+debug=true`` or ``BENCH_DEBUG=1``; ``--debug`` is taken off the command line before Hydra
    reads it and set as ``BENCH_DEBUG``, so that a sweep's workers see it too).
    """
    if "--debug" in sys.argv[1:]:
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
        os.environ["BENCH_DEBUG"] = "1"
    debug = _debug_requested(sys.argv[1:])
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with stop_signals_raise():
            main()
    except JobFailed:
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP as Terminated: the open run ended KILLED
        mark_stopped_jobs()  # the callback's list of stores lives in bench.sweeps, whatever ran as __main__
        if debug:
            raise
        why, code = interruption(exc)
        print(f"error: {why}; run the same command again to redo the configurations that did not finish "
              "(finished ones are skipped; an interrupted run is marked KILLED and leaves no outputs)",
              file=sys.stderr, flush=True)
        sys.exit(code)
    except BenchError as exc:  # raised in the driver (SweepTracking), before any job ran
        if debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as exc:
        if debug:
            raise
        print(f"error: {hydra_error_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as exc:
        refused = None if debug else ray_connection_error(exc)
        if refused is not None:
            print(f"error: {refused.message}", file=sys.stderr, flush=True)
            sys.exit(2)
        if debug or not type(exc).__module__.startswith("ray."):
            raise
        # A Ray worker died (SIGKILL, lost node): its run is left RUNNING, marked KILLED and redone next time.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: a sweep job's Ray worker died ({type(exc).__name__}: {first[:300]}); run the sweep "
              "again to redo the configurations that did not finish", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    cli()
