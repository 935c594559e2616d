"""Table 1 end to end on a GPU in minutes: what this machine has, every row at ``profile=smoke`` per framework,
full-profile rows 5 and 9 for a few epochs, the GPU's busy share, patches/s and the full table's projected time.

One process, run by ``benchmarks/gpu_e2e.sh``. It uses what it finds: the frameworks that see a GPU (TensorFlow
is optional and imported only to ask), ``nvidia-smi`` for the busy share (sampled while each fit runs), and
reports what it lacks. It makes its own tiny synthetic cohort (``bench.data.synth.write_cohort``) and writes no
MLflow record (``bench.experiment.execute`` without a tracking run). Jobs run in order while they fit the budget
(``--budget-min``); a job that would not fit is skipped and says so. After the rows: row 5 at ``full`` again
without prefetch and without deterministic kernels (torch), the GPU figures of issue 38; then a few timed steps
of the other full rows' networks, for the projection. ``--dry-run`` (any machine, seconds) detects, plans, trains
one step of a tiny network on the CPU and prints the table of what it would run.

Example:
    benchmarks/gpu_e2e.sh --budget-min 12          # prints the summary table, then one JSON line
    benchmarks/gpu_e2e.sh --dry-run
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.contract import PatchBatch

ROWS = tuple(range(1, 10))
FULL_ROWS = (5, 9)
COHORT_SHAPE = (96, 64, 96)
"""The GPU cohort's grid: room for the full profile's 32³ patches (IBSR's is 256×128×256)."""
DRY_SHAPE = (48, 32, 48)
COHORT_SUBJECTS = 7
"""The first 7 synthetic subjects hold every subject of the paper split (train, val, test, predict)."""
SPLIT = "data.split={train:[IBSR_01,IBSR_03],val:[IBSR_07],test:[IBSR_11]}"
MODULES = ("numpy", "scipy", "hydra", "omegaconf", "nibabel", "SimpleITK", "mlflow", "torch", "tensorflow")
TISSUES = ("CSF", "GM", "WM")


@dataclass
class Job:
    """One fit: a Table 1 row at a profile in a framework, with extra overrides; its outcome once run."""

    name: str
    row: int
    profile: str
    framework: str | None
    overrides: tuple[str, ...] = ()
    estimate_s: float = 60.0
    variant: bool = False
    """A comparison run (row 5 without prefetch or deterministic kernels): not used for the projection."""
    status: str = "planned"
    seconds: float | None = None
    device: str | None = None
    patches_per_s: float | None = None
    gpu_busy: float | None = None
    dice: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ detection
def detect() -> dict[str, Any]:
    """Modules present (TF is looked up, imported only to count its GPUs), CUDA as torch sees it, nvidia-smi."""
    found: dict[str, Any] = {"python": sys.version.split()[0], "modules": {}, "missing": []}
    for name in MODULES:
        present = importlib.util.find_spec(name) is not None
        found["modules"][name] = present
        if not present:
            found["missing"].append(name)
    found["nvidia_smi"] = shutil.which("nvidia-smi")
    found["cuda"] = {}
    if found["modules"]["torch"]:
        import torch

        found["torch"] = torch.__version__
        if torch.cuda.is_available():
            found["cuda"]["torch"] = torch.cuda.get_device_name(0)
    if found["modules"]["tensorflow"]:
        try:
            importlib.import_module("adapters.tf")  # sets TF's environment before TF loads
            tf = importlib.import_module("tensorflow")

            found["tensorflow"] = tf.__version__
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                found["cuda"]["tf"] = gpus[0].name
        except Exception as exc:  # a broken TF install is reported, not fatal
            found["tensorflow"] = f"unusable: {type(exc).__name__}: {exc}"
    found["gpu_frameworks"] = [fw for fw in ("torch", "tf") if fw in found["cuda"]]
    return found


def lacks(found: dict[str, Any]) -> list[str]:
    """What this machine lacks for the full check, one line each."""
    lines = [f"python module {name} is not installed" for name in found["missing"]]
    if found["modules"]["torch"] and "torch" not in found["cuda"]:
        lines.append("torch sees no CUDA device (a CPU build, or no GPU)")
    if found["modules"]["tensorflow"] and "tf" not in found["cuda"]:
        lines.append(f"tensorflow ({found.get('tensorflow')}) sees no GPU: its rows are not run")
    if not found["nvidia_smi"]:
        lines.append("nvidia-smi not found: the GPU busy share is not measured")
    for needed in ("hydra", "omegaconf", "numpy", "scipy", "nibabel"):
        if needed in found["missing"]:
            lines.append(f"{needed} is required to compose and run the rows: nothing can be run without it")
    return lines


# ------------------------------------------------------------------------------------------ plan
def plan(frameworks: list[str], full_epochs: int, sitk: bool) -> list[Job]:
    """Every row at smoke per framework (the atlas, row 1, once: it has no framework), full rows 5 and 9, row 5
    at full without prefetch and without deterministic kernels, and speed probes of the other full rows."""
    jobs: list[Job] = []
    if sitk:
        jobs.append(Job("smoke row 1 (atlas)", 1, "smoke", None, estimate_s=60.0))
    for framework in frameworks:
        jobs += [Job(f"smoke row {row} {framework}", row, "smoke", framework, estimate_s=30.0) for row in ROWS[1:]]
    if not frameworks:
        return jobs
    main = "torch" if "torch" in frameworks else frameworks[0]
    epochs = (f"profile.epochs={full_epochs}", "++profile.epochs_by_row={}", "++profile.epochs_by_model={}")
    for row in FULL_ROWS:
        jobs.append(Job(f"full row {row} {main}", row, "full", main, epochs, estimate_s=60.0 + 30.0 * full_epochs))
    jobs.append(Job(f"full row 5 {main}, no prefetch", 5, "full", main, (*epochs, "profile.prefetch_batches=0"),
                    estimate_s=60.0 + 30.0 * full_epochs, variant=True))
    if main == "torch":  # TF's op determinism cannot be switched off in a process that switched it on
        jobs.append(Job("full row 5 torch, deterministic=false", 5, "full", "torch",
                        (*epochs, "profile.deterministic=false"), estimate_s=60.0 + 30.0 * full_epochs,
                        variant=True))
    for row in (2, 3, 4):
        framework = "tf" if row in (3, 4) else "torch"
        if framework in frameworks:
            jobs.append(Job(f"full row {row} {framework}, speed probe", row, "full", framework, ("probe",),
                            estimate_s=45.0))
    return jobs


# ------------------------------------------------------------------------------------------ GPU busy share
class GpuBusy:
    """Samples ``nvidia-smi``'s utilization of one GPU every ``interval_ms`` while the block runs; ``share`` is
    the mean busy fraction (None without nvidia-smi or samples)."""

    def __init__(self, smi: str | None, interval_ms: int = 200, index: str | None = None) -> None:
        self.command = None if smi is None else [
            smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-lms={interval_ms}",
            f"--id={index if index is not None else gpu_index()}"]
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()) / 100.0)
            except ValueError:
                continue

    def __enter__(self) -> GpuBusy:
        if self.command is not None:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)

    @property
    def share(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def gpu_index() -> str:
    """The nvidia-smi id of the GPU the frameworks call device 0: the first of ``CUDA_VISIBLE_DEVICES``, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


# ------------------------------------------------------------------------------------------ running
def make_cohort(root: Path, shape: tuple[int, int, int]) -> Path:
    """The synthetic cohort (paper-split subjects) at ``shape``, spacing scaled as IBSR's grid would be."""
    from bench.data.synth import FULL_SHAPE, write_cohort

    write_cohort(root, COHORT_SUBJECTS, seed=0, shape=shape, spacing_scale=FULL_SHAPE[0] / shape[0])
    return root


def compose(job: Job, data: Path, cache: Path) -> Any:
    from bench.config import run_spec_from_config
    from bench.sweeps import compose_config, to_container

    overrides = [f"+experiment=table1/row{job.row}", f"profile={job.profile}", f"data.root={data}", SPLIT,
                 f"paths.cache={cache}", *[o for o in job.overrides if "=" in o]]
    if job.framework is not None and job.row != 1:
        overrides.append(f"framework={job.framework}")
    return run_spec_from_config(to_container(compose_config(overrides)))


def run_job(job: Job, data: Path, work: Path, smi: str | None) -> None:
    """Train, predict and score ``job`` in this process (or time a few steps: a probe); fills in its outcome."""
    spec = compose(job, data, work / "cache")
    started = time.perf_counter()
    with GpuBusy(smi) as busy:
        if "probe" in job.overrides:
            job.patches_per_s, job.device = probe(spec)
        else:
            from bench.experiment import execute, load_data

            out = work / job.name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
            summary = execute(spec, load_data(spec), out, None)
            job.device = summary["run"]["segmenter"].get("device", "cpu")
            history = _read_history(out / "history.csv")
            rates = history.get("patches_per_s", [])[1:] or history.get("patches_per_s", [])
            job.patches_per_s = statistics.median(rates) if rates else None
            job.dice = statistics.fmean(summary["mean"][t]["dice"] for t in TISSUES if t in summary["mean"])
            job.extra = {"epochs_run": summary["run"]["epochs_run"], "config_hash": spec.config_hash}
    job.seconds = time.perf_counter() - started
    job.gpu_busy = busy.share
    job.status = "ok"


def _read_history(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    import csv

    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows if r.get(key)] for key in (rows[0] if rows else {})}


def probe(spec: Any, warmup: int = 3, steps: int = 20) -> tuple[float, str]:
    """Training patches/s of the spec's network on random patches at its patch and batch size (a warm-up epoch,
    then ``steps`` timed steps), on the device a run would use."""
    from dataclasses import replace

    from bench.commands.train_speed import RandomPatches
    from bench.contract import EarlyStoppingSpec, NullLogger, PatchBatch, SchedulerSpec
    from bench.training import frameworks

    network = spec.network
    train = replace(network.train, epochs=2, steps_per_epoch=None, early_stopping=EarlyStoppingSpec(patience=0),
                    scheduler=SchedulerSpec(factor=1.0, patience=0), progress=False)
    segmenter: Any = frameworks.build_network(network.entry, network.config, network.framework)

    class TwoPhase(RandomPatches):
        """A warm-up epoch of ``warmup`` batches, then the timed epoch."""

        def batches(self, epoch: int) -> Iterator[PatchBatch]:
            for _ in range(warmup if epoch == 0 else steps):
                yield PatchBatch(self.image, self.label)

    source = TwoPhase(network.sampling.patch_size, network.sampling.batch_size, steps)
    history = segmenter.fit(source, None, train, NullLogger())
    return history.epochs[-1].patches_per_s, str(segmenter.describe().get("device"))


def cpu_step() -> str:
    """One training step of a tiny U-Net on the CPU (torch, else TF): the stack trains here."""
    from bench.commands.train_speed import RandomPatches
    from bench.contract import NullLogger, TrainSpec
    from bench.training import frameworks

    framework = "torch" if importlib.util.find_spec("torch") else "tf"
    segmenter: Any = frameworks.build("unet3d", framework, base_filters=2, depth=2)
    history = segmenter.fit(RandomPatches((8, 8, 8), 2, 1), None,
                            TrainSpec(epochs=1, device="cpu", progress=False, num_threads=1), NullLogger())
    return f"one {framework} step on the CPU: loss {history.epochs[0].train_loss:.3f}"


def projection(jobs: list[Job]) -> dict[str, Any]:
    """Hours of the whole full-profile table (rows 2-9, one at a time, all epochs: an upper bound) from the
    measured rates: rows 6-8 train row 5's network (same widths), rows 2-4 from their speed probes."""
    from benchmarks.gpu_check import row_settings

    rate = {j.row: j.patches_per_s for j in jobs
            if j.profile == "full" and j.status == "ok" and j.patches_per_s and not j.variant}
    rate.update({r: rate[5] for r in (6, 7, 8) if 5 in rate})
    rows, missing = {}, []
    for row in range(2, 10):
        settings = row_settings(row, None)
        if settings is None or row not in rate:
            missing.append(row)
            continue
        rows[row] = round(settings["epochs"] * settings["patches_per_epoch"] / rate[row] / 3600, 2)  # type: ignore[operator]
    return {"hours_by_row": rows, "hours_total": round(sum(rows.values()), 2), "rows_not_projected": missing}


# ------------------------------------------------------------------------------------------ output
def table(jobs: list[Job]) -> str:
    def f(value: float | None, spec: str) -> str:
        return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)

    lines = [f"{'job':40s} {'device':8s} {'status':28s} {'s':>7s} {'patches/s':>10s} {'GPU busy':>8s} {'DSC':>6s}"]
    for j in jobs:
        lines.append(f"{j.name:40s} {j.device or '-'!s:8.8s} {j.status:28.28s} {f(j.seconds, '7.1f')} "
                     f"{f(j.patches_per_s, '10.1f')} {f(None if j.gpu_busy is None else 100 * j.gpu_busy, '7.0f')}"
                     f"{'%' if j.gpu_busy is not None else ' '} {f(j.dice, '6.3f')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_e2e.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=15.0, help="minutes for everything (default 15)")
    parser.add_argument("--dry-run", action="store_true", help="detect, plan, one CPU step; run nothing else")
    parser.add_argument("--full-epochs", type=int, default=3, help="epochs of the full-profile rows (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs' outputs (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.budget_min <= 0 or args.full_epochs < 1:
        print("error: --budget-min must be > 0 and --full-epochs >= 1 (e.g. --budget-min 12 --full-epochs 3)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    deadline = started + 60.0 * args.budget_min
    found = detect()
    print(f"python {found['python']}; torch {found.get('torch', 'missing')}; tensorflow "
          f"{found.get('tensorflow', 'missing')}; GPU: {found['cuda'] or 'none'}; nvidia-smi: "
          f"{found['nvidia_smi'] or 'missing'}", flush=True)
    for line in lacks(found):
        print(f"lacks: {line}", flush=True)
    frameworks = found["gpu_frameworks"]
    if args.dry_run and not frameworks:  # plan as a GPU machine with what is installed here would run
        frameworks = [fw for fw, mod in (("torch", "torch"), ("tf", "tensorflow")) if found["modules"][mod]]
    jobs = plan(frameworks, args.full_epochs, bool(found["modules"]["SimpleITK"]))
    result: dict[str, Any] = {"found": found, "dry_run": args.dry_run, "budget_min": args.budget_min}
    if args.dry_run:
        result["cpu_step"] = cpu_step()
        print(result["cpu_step"], flush=True)
        planned = time.monotonic()
        for j in jobs:
            planned += j.estimate_s
            j.status = f"would run (~{j.estimate_s:.0f} s)" if planned <= deadline else "would skip: budget"
    elif not found["gpu_frameworks"]:
        print("error: no framework here sees a GPU (see `lacks:` above); nothing was run "
              "(fix: install a CUDA build of torch, or run with --dry-run)", file=sys.stderr)
        return 2
    else:
        work = args.out or Path(tempfile.mkdtemp(prefix="gpu_e2e-"))
        data = make_cohort(work / "data", COHORT_SHAPE)
        for j in jobs:
            if time.monotonic() + j.estimate_s > deadline:
                j.status = f"skipped: budget ({j.estimate_s:.0f} s)"
                continue
            try:
                run_job(j, data, work, found["nvidia_smi"])
            except Exception as exc:  # one failing row must not hide the others
                j.status = f"failed: {type(exc).__name__}: {exc}"[:200]
        result["projection"] = projection(jobs)
        result["work"] = str(work)
    print(table(jobs))
    if "projection" in result:
        p = result["projection"]
        print(f"projected full Table 1 (rows {', '.join(map(str, p['hours_by_row'])) or 'none'}; one at a time, all "
              f"epochs): {p['hours_total']:.1f} h; not projected: rows {p['rows_not_projected'] or 'none'}")
    result["jobs"] = [asdict(j) for j in jobs]
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, default=str))
    failed = [j for j in jobs if j.status.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
