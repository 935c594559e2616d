"""``python -m bench.run``: the thin Hydra entry point (the only module besides the CLI that imports Hydra).

Examples:
    python -m bench.run +experiment=table1/row5 data.root=runs/data/synthetic
    python -m bench.run --multirun +sweep=table1 profile=quick seed=1,2,3
    python -m bench.run --multirun +sweep=table1 hydra/launcher=joblib hydra.launcher.n_jobs=2

Bad input ends the job with one ``error: ...`` line and exit code 2 (traceback with ``debug=true``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.errors import BenchError, ConfigError
from bench.spec import run_spec_from_config

if TYPE_CHECKING:
    from bench.experiment import RunResult

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("bench.run")


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


def run_config(cfg: DictConfig) -> RunResult:
    """Compose → plain dataclasses → run."""
    from bench.experiment import run

    spec = run_spec_from_config(to_container(cfg))
    result = run(spec)
    log.info("%s %s (%s)", result.status, result.name, result.config_hash)
    if result.summary:
        means = result.summary.get("mean", {})
        dice = ", ".join(f"{k} {v.get('dice', float('nan')):.3f}" for k, v in means.items())
        print(f"{result.name}: Dice {dice}", flush=True)
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one configuration; errors in user input exit with code 2."""
    try:
        run_config(cfg)
    except BenchError as exc:
        if os.environ.get("BENCH_DEBUG") or cfg.get("debug"):
            raise
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
