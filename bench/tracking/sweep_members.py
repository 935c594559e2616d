"""The runs a sweep trained, found again from its command line: each job's config hash looked up in its
experiment (``bench ensemble --sweep``). Works against any store the sweep logged to (sqlite or a server),
since the hash is computed from the composed configuration, not read from the sweep's output folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError


@dataclass(frozen=True)
class SweepMembers:
    """The FINISHED run of every job of a sweep, in job order."""

    uri: str
    runs_dir: Path
    run_ids: list[str]
    described: list[str]  # "<run name> (<run id>)" per member, for messages
    outputs_dirs: list[Path]  # the jobs' paths.outputs (where their own summary.json files are)


def sweep_member_runs(overrides: Sequence[str], tracking_uri: str | None = None) -> SweepMembers:
    """Find the FINISHED run of each job of ``python -m bench.run --multirun OVERRIDES``.

    Raises:
        ConfigError: The sweep does not expand, its jobs log to different stores, or a job has no FINISHED
            run (named with its overrides and config hash: run the sweep first).
    """
    from bench.sweeps import sweep_specs
    from bench.tracking.runs import existing_store, lookup_finished_run

    jobs = sweep_specs(overrides)
    stores = {(tracking_uri or spec.tracking.uri, spec.runs_dir) for _, spec in jobs}
    if len(stores) != 1:
        raise ConfigError(f"the sweep's jobs log to {len(stores)} different stores ({sorted(map(str, stores))})",
                          fix="give --tracking-uri, or one tracking.uri / paths.runs for the whole sweep")
    uri_given, runs_dir = stores.pop()
    uri = existing_store(uri_given, Path(runs_dir))
    run_ids, described = [], []
    for job, spec in jobs:
        found = lookup_finished_run(uri, spec.tracking.experiment, spec.config_hash)
        if found is None:
            raise ConfigError(
                f"sweep job {' '.join(job)!r} (config hash {spec.config_hash}) has no FINISHED run in experiment "
                f"{spec.tracking.experiment!r} of {uri}",
                fix=f"run it first: python -m bench.run --multirun {' '.join(overrides)}",
            )
        run_ids.append(found.run_id)
        described.append(f"{found.name} ({found.run_id})")
    outputs = [Path(spec.outputs_dir) for _, spec in jobs]
    return SweepMembers(uri=uri, runs_dir=Path(runs_dir), run_ids=run_ids, described=described,
                        outputs_dirs=list(dict.fromkeys(outputs)))
