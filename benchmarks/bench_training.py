"""Training speed: the adapters' loop vs bare steps, achieved GFLOP/s, the settings that move it.

- Overhead: the adapter's ``fit`` (epochs of ``steps`` batches from a ``PatchSampler``, the real
  training path) vs a bare loop of zero_grad/forward/loss/backward/optimizer step over the same batches,
  already in memory as tensors, on a twin network. The bare loop runs just before each fit epoch (from
  inside the patch source), so every pair sees the same machine load; ``overhead = 1 - bare / fit`` per
  pair, median over pairs (time outside the network's step). The sampler's own time inside ``fit`` is
  measured too (a direct, steadier figure).
- FLOPs per training patch of the 3D U-Net, counted from its convolution shapes: ``2·k³·c_in·c_out`` per
  output voxel of a convolution (per input voxel of a transposed one), ×3 for forward + backward.
  Achieved GFLOP/s = FLOPs per patch × patches/s, against the CPU's float32 matmul peak (4096²: torch on
  all cores and on one, numpy; the best of the three).
- Settings (bare torch steps, interleaved): threads 1 vs all, channels_last_3d, batch size, oneDNN
  (mkldnn) off; torch.compile in a subprocess with a timeout; TF with and without XLA (``jit_compile``).
- ``bench train-speed`` for every architecture × framework at default settings (subprocesses).

Run: ``.venv/bin/python -m benchmarks.bench_training [--quick]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.contract import (
    EarlyStoppingSpec,
    LossSpec,
    NullLogger,
    OptimizerSpec,
    PatchBatch,
    SchedulerSpec,
    TrainSpec,
)
from bench.patches import PatchSampler, PatchSubject
from benchmarks import BenchSubject, load_subjects, rounded, time_interleaved

REPO = Path(__file__).resolve().parents[1]
OPTIMIZER = OptimizerSpec("adam", lr=1e-3)
LOSS = LossSpec("dice")


def train_spec(steps: int, epochs: int, threads: int) -> TrainSpec:
    """What the benchmark fits with: Adam, Dice, no scheduler or early stopping, no progress bar."""
    return TrainSpec(epochs=epochs, steps_per_epoch=steps, optimizer=OPTIMIZER,
                     scheduler=SchedulerSpec(factor=1.0, patience=0), loss=LOSS,
                     early_stopping=EarlyStoppingSpec(patience=0), num_threads=threads, progress=False)


# ------------------------------------------------------------------------------------------- FLOPs, peak


def conv_flops_per_patch(net: nn.Module, patch: Sequence[int], in_channels: int = 1) -> float:
    """Forward multiply-add FLOPs (×2) of every Conv3d / ConvTranspose3d for one patch."""
    total = [0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv3d | nn.ConvTranspose3d)
        k = float(np.prod(module.kernel_size))
        per_group = module.in_channels * module.out_channels / module.groups
        voxels = output.shape[2:].numel() if isinstance(module, nn.Conv3d) else inputs[0].shape[2:].numel()
        total[0] += 2.0 * k * per_group * voxels

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, in_channels, *patch))
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def cpu_peak_gflops(size: int = 4096, repeats: int = 3) -> dict[str, Any]:
    """float32 matmul GFLOP/s of ``size``² matrices: torch (all threads, and 1 thread) and numpy.

    The peak is the best of the three: on a shared machine the all-core figure can come out lower.
    """
    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), dtype=np.float32), rng.standard_normal((size, size), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    from adapters.torch.training import available_cores

    threads = available_cores()
    with _torch_threads(1):
        one = time_interleaved({"torch_1": lambda: ta @ tb}, repeats=repeats, warmup=1).wall
    with _torch_threads(threads):
        medians = time_interleaved({"torch": lambda: ta @ tb, "numpy": lambda: a @ b}, repeats=repeats,
                                   warmup=1).wall
    gflops = {k: flops / v / 1e9 for k, v in {**medians, **one}.items()}
    return {
        "cpu_peak_gflops": rounded(max(gflops.values())),
        "matmul_gflops_torch": rounded(gflops["torch"]),
        "matmul_gflops_numpy": rounded(gflops["numpy"]),
        "matmul_gflops_torch_1_thread": rounded(gflops["torch_1"]),
        "matmul_size": size,
        "torch_threads": threads,
    }


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- overhead


Clock = tuple[float, float]
"""(wall seconds, CPU seconds)."""


def _now() -> Clock:
    return time.perf_counter(), time.process_time()


class TimedSource:
    """A PatchSource giving the same ``steps`` batches of ``sampler`` every epoch, with timestamps.

    Each call of ``batches`` (i.e. each epoch of a fit) first runs ``between`` (for its first
    ``between_count`` calls): bare training steps interleaved with the adapter's epochs, so both see the
    same machine load. It records the (wall, CPU) time before and after ``between`` and the wall seconds
    spent extracting batches (updated as they are taken: a consumer may stop early).
    """

    def __init__(self, sampler: PatchSampler, steps: int, between: Callable[[], Clock] | None = None,
                 between_count: int = 0) -> None:
        self.sampler = sampler
        self.patch_size = sampler.patch_size
        self.batch_size = sampler.batch_size
        self.steps = steps
        self.between = between
        self.between_count = between_count
        self.calls: list[Clock] = []
        self.starts: list[Clock] = []
        self.between_s: list[Clock] = []
        self.seconds: list[float] = []

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        self.calls.append(_now())
        if self.between is not None and len(self.between_s) < self.between_count:
            self.between_s.append(self.between())
        self.starts.append(_now())
        self.seconds.append(0.0)
        iterator = self.sampler.batches(0)
        for _ in range(self.steps):
            start = time.perf_counter()
            batch = next(iterator)
            self.seconds[-1] += time.perf_counter() - start
            yield batch

    def epoch_seconds(self) -> list[Clock]:
        """(wall, CPU) from each epoch's first batch to the next epoch's call (all epochs but the last).

        This is the epoch's training steps plus the fit's end-of-epoch bookkeeping.
        """
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.starts, self.calls[1:], strict=False)]


def grid_sampler(subjects: Sequence[BenchSubject], patch: int, batch_size: int) -> PatchSampler:
    """The quick profile's training sampler: grid patches centred in the brain, step patch/2, shuffled."""
    patch_subjects = [PatchSubject(image=s.image, label=s.label, mask=s.mask, id=s.id) for s in subjects]
    return PatchSampler(patch_subjects, patch, step=max(patch // 2, 1), batch_size=batch_size, seed=0, mode="grid")


def _clocked(fn: Callable[[], Any]) -> Clock:
    start = _now()
    fn()
    end = _now()
    return end[0] - start[0], end[1] - start[1]


def torch_bare_loop(net: nn.Module, batches: Sequence[PatchBatch]) -> Callable[[], Clock]:
    """(wall, CPU) seconds of zero_grad/forward/loss/backward/step over ``batches`` (tensors made beforehand)."""
    from adapters.torch.losses import make_loss
    from adapters.torch.training import make_optimizer, to_tensors

    optimizer = make_optimizer(net.parameters(), OPTIMIZER)
    loss_fn = make_loss(LOSS)
    tensors = [to_tensors(b, torch.device("cpu")) for b in batches]  # the adapter's layout (channels-last)

    def steps() -> None:
        net.train()
        for image, label in tensors:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(image), label)
            loss.item()
            loss.backward()
            optimizer.step()

    return lambda: _clocked(steps)


def torch_overhead(subjects: Sequence[BenchSubject], *, base_filters: int, depth: int, patch: int,
                   batch_size: int, steps: int, repeats: int, threads: int) -> dict[str, Any]:
    """The torch adapter's fit (2 + ``repeats`` epochs) vs bare steps (a twin network) before each epoch."""
    import adapters

    sampler = grid_sampler(subjects, patch, batch_size)
    batches = list(itertools.islice(sampler.batches(0), steps))
    twin = adapters.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
    source = TimedSource(sampler, steps, torch_bare_loop(twin, batches), between_count=repeats + 1)
    segmenter: Any = adapters.build("unet3d", "torch", base_filters=base_filters, depth=depth)
    segmenter.fit(source, None, train_spec(steps, repeats + 2, threads), NullLogger())
    return _overhead_result("torch", source, repeats, threads)


def tf_overhead(subjects: Sequence[BenchSubject], *, base_filters: int, depth: int, patch: int,
                batch_size: int, steps: int, repeats: int, threads: int) -> dict[str, Any]:
    """The TF adapter's fit (2 + ``repeats`` epochs; epoch 0 traces) vs bare compiled steps before each epoch."""
    import adapters
    from adapters.tf.losses import make_loss
    from adapters.tf.training import configure_threads, make_optimizer, make_train_step, to_tensors

    configure_threads(threads)  # before TF starts (building a model starts it)
    sampler = grid_sampler(subjects, patch, batch_size)
    batches = list(itertools.islice(sampler.batches(0), steps))
    twin = adapters.build("unet3d", "tf", base_filters=base_filters, depth=depth).model  # type: ignore[attr-defined]
    step = make_train_step(twin, make_optimizer(OPTIMIZER), make_loss(LOSS), 0.0)
    tensors = [to_tensors(b) for b in batches]

    def bare_steps() -> None:
        for image, label in tensors:
            float(step(image, label))

    _clocked(bare_steps)  # traces the bare step
    source = TimedSource(sampler, steps, lambda: _clocked(bare_steps), between_count=repeats + 1)
    segmenter: Any = adapters.build("unet3d", "tf", base_filters=base_filters, depth=depth)
    segmenter.fit(source, None, train_spec(steps, repeats + 2, threads), NullLogger())
    return _overhead_result("tf", source, repeats, threads)


def _overhead_result(framework: str, source: TimedSource, repeats: int, threads: int) -> dict[str, Any]:
    """Overhead of fit epochs 1..repeats (epoch 0 is the warm-up) against the bare pass run just before each.

    Per pair ``1 - bare / fit`` in wall and CPU seconds; the medians are reported. With one thread the
    CPU figure is the headline: on a shared machine it leaves out the time spent waiting for a core.
    """
    patches = source.steps * source.batch_size
    fit = source.epoch_seconds()[1: repeats + 1]
    bare = source.between_s[1: repeats + 1]
    wall = [1.0 - b[0] / f[0] for f, b in zip(fit, bare, strict=True)]
    cpu = [1.0 - b[1] / f[1] for f, b in zip(fit, bare, strict=True)]
    fit_w, fit_c = statistics.median(f[0] for f in fit), statistics.median(f[1] for f in fit)
    bare_w, bare_c = statistics.median(b[0] for b in bare), statistics.median(b[1] for b in bare)
    sampler = statistics.median(source.seconds[1: repeats + 1])
    cpu_clock = threads == 1
    return {
        "framework": framework,
        "overhead_fraction": rounded(statistics.median(cpu if cpu_clock else wall)),
        "overhead_clock": "cpu" if cpu_clock else "wall",
        "overhead_fraction_wall": rounded(statistics.median(wall)),
        "overhead_fraction_cpu": rounded(statistics.median(cpu)),
        "sampler_fraction_of_fit": rounded(sampler / fit_w),
        "fit_train_patches_per_s": rounded(patches / fit_w),
        "bare_patches_per_s": rounded(patches / bare_w),
        "fit_epoch_wall_s": rounded(fit_w),
        "fit_epoch_cpu_s": rounded(fit_c),
        "bare_epoch_wall_s": rounded(bare_w),
        "bare_epoch_cpu_s": rounded(bare_c),
        "sampler_s_per_epoch": rounded(sampler),
        "pairs": {"fit_wall_s": [round(f[0], 3) for f in fit], "bare_wall_s": [round(b[0], 3) for b in bare],
                  "fit_cpu_s": [round(f[1], 3) for f in fit], "bare_cpu_s": [round(b[1], 3) for b in bare],
                  "overhead_wall": [round(v, 4) for v in wall], "overhead_cpu": [round(v, 4) for v in cpu]},
        "steps": source.steps,
        "batch_size": source.batch_size,
    }


# ------------------------------------------------------------------------------------------- settings


def torch_settings(*, base_filters: int, depth: int, patch: int, batch_size: int,
                   repeats: int) -> list[dict[str, Any]]:
    """Bare torch training steps under each setting, interleaved; patches/s and step seconds per setting."""
    import adapters
    from adapters.torch.training import available_cores

    all_threads = available_cores()
    variants: dict[str, dict[str, Any]] = {
        f"baseline: torch defaults (threads={all_threads} = all cores, NCDHW, batch {batch_size})": {},
        "threads=1": {"threads": 1},
        "channels_last_3d": {"channels_last": True},
        "channels_last_3d, threads=1 (the adapter's setting)": {"channels_last": True, "threads": 1},
        f"batch {batch_size // 2}": {"batch": max(batch_size // 2, 1)},
        f"batch {batch_size * 2}": {"batch": batch_size * 2},
        "oneDNN (mkldnn) off": {"mkldnn": False},
    }
    functions: dict[str, Callable[[], float]] = {}
    for name, options in variants.items():
        torch.manual_seed(0)
        net = adapters.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
        functions[name] = _torch_step(net, patch, options.get("batch", batch_size),
                                      threads=options.get("threads", all_threads),
                                      channels_last=options.get("channels_last", False),
                                      mkldnn=options.get("mkldnn", True))
    timed = time_interleaved(functions, repeats=repeats, warmup=1)
    rows = []
    for name, options in variants.items():
        batch, step_s = options.get("batch", batch_size), timed.wall[name]
        rows.append({"setting": name, "step_s": rounded(step_s), "patches_per_s": rounded(batch / step_s),
                     "cpu_s": rounded(timed.cpu[name]), "times_s": [round(t, 3) for t in timed.wall_all[name]]})
    return rows


def _torch_step(net: nn.Module, patch: int, batch: int, *, threads: int, channels_last: bool,
                mkldnn: bool) -> Callable[[], float]:
    from adapters.torch.losses import make_loss
    from adapters.torch.training import make_optimizer

    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.standard_normal((batch, 1, patch, patch, patch), dtype=np.float32))
    label = torch.from_numpy(rng.integers(0, 4, (batch, patch, patch, patch)))
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)  # type: ignore[call-overload]
    image = image.contiguous(memory_format=memory_format)
    net.train()
    optimizer = make_optimizer(net.parameters(), OPTIMIZER)
    loss_fn = make_loss(LOSS)

    def step() -> float:
        with _torch_threads(threads), torch.backends.mkldnn.flags(enabled=mkldnn):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(image), label)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

    return step


def compile_probe(base_filters: int, depth: int, patch: int, batch: int, repeats: int) -> dict[str, Any]:
    """Eager vs ``torch.compile`` training steps in this process (run it in a subprocess: it may hang)."""
    import adapters

    torch.manual_seed(0)
    net = adapters.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
    eager = _torch_step(net, patch, batch, threads=torch.get_num_threads(), channels_last=False, mkldnn=True)
    start = time.perf_counter()
    compiled_net: Any = torch.compile(net)
    compiled = _torch_step(compiled_net, patch, batch, threads=torch.get_num_threads(), channels_last=False,
                           mkldnn=True)
    compiled()
    compile_s = time.perf_counter() - start
    medians = time_interleaved({"eager": eager, "compiled": compiled}, repeats=repeats, warmup=1).wall
    return {"compile_s": rounded(compile_s), "eager_step_s": rounded(medians["eager"]),
            "compiled_step_s": rounded(medians["compiled"]),
            "eager_patches_per_s": rounded(batch / medians["eager"]),
            "compiled_patches_per_s": rounded(batch / medians["compiled"])}


def run_compile_probe(*, base_filters: int, depth: int, patch: int, batch: int, repeats: int, threads: int,
                      timeout_s: float) -> dict[str, Any]:
    """``compile_probe`` in a subprocess; ``{"status": "timeout" | "failed" | "ok", ...}``."""
    command = [sys.executable, "-m", "benchmarks.bench_training", "--compile-probe", "--base-filters",
               str(base_filters), "--depth", str(depth), "--patch", str(patch), "--batch", str(batch),
               "--repeats", str(repeats), "--threads", str(threads)]
    return _json_subprocess(command, timeout_s)


def tf_xla(*, base_filters: int, depth: int, patch: int, batch: int, repeats: int) -> dict[str, Any]:
    """The TF adapter's compiled step (graph, no XLA) vs the same step with ``jit_compile=True``."""
    import tensorflow as tf

    import adapters
    from adapters.tf.losses import make_loss
    from adapters.tf.training import make_optimizer, make_train_step

    rng = np.random.default_rng(0)
    image = tf.constant(rng.standard_normal((batch, patch, patch, patch, 1), dtype=np.float32))
    label = tf.constant(rng.integers(0, 4, (batch, patch, patch, patch)))
    steps: dict[str, Callable[[], float]] = {}
    compile_s: dict[str, float] = {}
    for name, jit in (("graph (adapter)", False), ("XLA jit_compile", True)):
        model = adapters.build("unet3d", "tf", base_filters=base_filters, depth=depth).model  # type: ignore[attr-defined]
        if jit:
            step = _xla_step(model, make_optimizer(OPTIMIZER), make_loss(LOSS))
        else:
            step = make_train_step(model, make_optimizer(OPTIMIZER), make_loss(LOSS), 0.0)
        start = time.perf_counter()
        try:
            float(step(image, label))
        except Exception as exc:  # XLA may not support an op on CPU
            return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        compile_s[name] = time.perf_counter() - start

        def one_step(step: Callable[..., Any] = step) -> float:
            return float(step(image, label))

        steps[name] = one_step
    timings = time_interleaved(steps, repeats=repeats, warmup=0)
    return {"status": "ok", "rows": [
        {"setting": name, "step_s": rounded(timings.wall[name]), "patches_per_s": rounded(batch / timings.wall[name]),
         "first_step_s": rounded(compile_s[name]), "times_s": [round(t, 3) for t in timings.wall_all[name]]}
        for name in steps]}


def _xla_step(model: Any, optimizer: Any, loss_fn: Any) -> Callable[..., Any]:
    import tensorflow as tf

    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def step(image: Any, label: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(model(image, training=True), label)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return step


# ------------------------------------------------------------------------------------------- train-speed


def train_speed_all(*, patch: int = 32, batch: int = 8, steps: int = 3, warmup: int = 1, threads: int = 0,
                    timeout_s: float = 180.0, deadline: float | None = None,
                    architectures: Sequence[str] = ("unet3d", "vnet", "neuronet"),
                    frameworks: Sequence[str] = ("torch", "tf")) -> list[dict[str, Any]]:
    """``bench train-speed`` for every architecture × framework (default network settings), one subprocess each.

    Args:
        threads: ``--threads`` of the command (0 = all cores).
        timeout_s: Limit per run.
        deadline: ``time.perf_counter()`` value after which no run starts and runs are cut short (the
            suite's time budget); a run that would get less than 30 s is skipped.
    """
    rows = []
    for arch in architectures:
        for framework in frameworks:
            limit = timeout_s if deadline is None else min(timeout_s, deadline - time.perf_counter())
            if limit < 30:
                rows.append({"architecture": arch, "framework": framework, "status": "skipped (time budget)"})
                continue
            command = [sys.executable, "-m", "bench", "train-speed", "--arch", arch, "--framework", framework,
                       "--patch", str(patch), "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
                       "--threads", str(threads)]
            rows.append({"architecture": arch, "framework": framework, **_json_subprocess(command, limit)})
    return rows


def _json_subprocess(command: list[str], timeout_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": round(time.perf_counter() - start, 1), "timeout_s": timeout_s}
    wall = round(time.perf_counter() - start, 1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"status": "failed", "wall_s": wall, "returncode": done.returncode,
                "error": (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]}
    return {"status": "ok", "wall_s": wall, **json.loads(lines[-1])}


# ------------------------------------------------------------------------------------------- all


def run(subjects: Sequence[BenchSubject], *, base_filters: int = 16, depth: int = 4, patch: int = 32,
        batch_size: int = 8, steps: int = 8, repeats: int = 3, threads: int = 0, tensorflow: bool = True,
        compile_timeout_s: float = 300.0, peak_size: int = 4096, xla: bool = True,
        overhead_repeats: int | None = None) -> dict[str, Any]:
    """Overhead, GFLOP/s and settings for the 3D U-Net (``base_filters``, ``depth``) at ``patch``³, ``batch_size``.

    Args:
        subjects: Training subjects for the patch sampler.
        steps: Training steps per timed epoch.
        repeats: Timed repetitions of each measurement (medians).
        threads: torch/TF threads for ``fit`` (0 = all cores).
        tensorflow: Also measure the TF adapter (overhead, patches/s, XLA).
        compile_timeout_s: Limit for the torch.compile subprocess (0 skips it).
        peak_size: Matrix size of the matmul peak.
        xla: Also time the TF step with XLA (compiling it takes a while).
        overhead_repeats: Fit/bare pairs for the overhead (default ``repeats``).
    """
    import adapters

    net = adapters.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
    forward = conv_flops_per_patch(net, (patch, patch, patch))
    peak = cpu_peak_gflops(peak_size)
    shared = {"base_filters": base_filters, "depth": depth, "patch": patch, "batch_size": batch_size,
              "repeats": repeats}
    pairs = {**shared, "repeats": overhead_repeats or repeats}
    torch_fit = torch_overhead(subjects, steps=steps, threads=threads, **pairs)
    train_flops = 3.0 * forward
    result: dict[str, Any] = {
        "train_step_overhead_fraction": torch_fit["overhead_fraction"],
        "unet3d_torch_train_patches_per_s": torch_fit["fit_train_patches_per_s"],
        "achieved_gflops_torch": rounded(train_flops * torch_fit["fit_train_patches_per_s"] / 1e9),
        "achieved_gflops_torch_bare": rounded(train_flops * torch_fit["bare_patches_per_s"] / 1e9),
        "cpu_peak_gflops": peak["cpu_peak_gflops"],
        "unet3d_forward_gflop_per_patch": rounded(forward / 1e9),
        "unet3d_train_gflop_per_patch": rounded(train_flops / 1e9),
        "peak": peak,
        "torch_overhead": torch_fit,
    }
    settings = torch_settings(**shared)
    for row in settings:
        row["gflops"] = rounded(train_flops * row["patches_per_s"] / 1e9)
    result["torch_settings"] = settings
    if compile_timeout_s > 0:
        result["torch_compile"] = run_compile_probe(base_filters=base_filters, depth=depth, patch=patch,
                                                    batch=batch_size, repeats=repeats, threads=threads,
                                                    timeout_s=compile_timeout_s)
    if tensorflow:
        tf_fit = tf_overhead(subjects, steps=steps, threads=threads, **pairs)
        result.update({
            "unet3d_tf_train_patches_per_s": tf_fit["fit_train_patches_per_s"],
            "achieved_gflops_tf": rounded(train_flops * tf_fit["fit_train_patches_per_s"] / 1e9),
            "train_step_overhead_fraction_tf": tf_fit["overhead_fraction"],
            "tf_overhead": tf_fit,
        })
        if xla:
            result["tf_xla"] = tf_xla(base_filters=base_filters, depth=depth, patch=patch, batch=batch_size,
                                      repeats=repeats)
        for row in result.get("tf_xla", {}).get("rows", []):
            row["gflops"] = rounded(train_flops * row["patches_per_s"] / 1e9)
    result["settings"] = {**shared, "overhead_pairs": overhead_repeats or repeats, "steps_per_epoch": steps,
                          "threads": threads or "all cores", "model": f"unet3d base_filters={base_filters} depth={depth}",
                          "optimizer": "adam lr=1e-3", "loss": "dice", "sampler": "grid, step patch/2"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network, volumes and repetitions")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_probe:
        print(json.dumps(compile_probe(args.base_filters, args.depth, args.patch, args.batch, args.repeats)))
        return 0
    if args.quick:
        result = run(load_subjects(1, quick=True), base_filters=4, depth=3, patch=16, batch_size=2, steps=2,
                     repeats=1, threads=args.threads, compile_timeout_s=0, peak_size=512)
    else:
        result = run(load_subjects(2), base_filters=args.base_filters, depth=args.depth, patch=args.patch,
                     batch_size=args.batch, repeats=args.repeats, threads=args.threads)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
