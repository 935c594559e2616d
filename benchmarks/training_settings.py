"""Settings that move training speed: torch threads, memory format, batch, oneDNN, torch.compile, TF XLA;
and ``bench train-speed`` for every architecture x framework."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import rounded, time_interleaved
from benchmarks.training_common import LOSS, OPTIMIZER, REPO, torch_threads


def torch_settings(*, base_filters: int, depth: int, patch: int, batch_size: int,
                   repeats: int) -> list[dict[str, Any]]:
    """Bare torch training steps under each setting, interleaved; patches/s and step seconds per setting."""
    from adapters.torch.steps import available_cores
    from bench.training import frameworks

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
        net = frameworks.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
        functions[name] = _torch_step(net, patch, options.get("batch", batch_size),
                                      threads=options.get("threads", all_threads),
                                      channels_last=options.get("channels_last", False),
                                      mkldnn=options.get("mkldnn", True))
    timed = time_interleaved(functions, repeats=repeats, warmup=1)
    rows = []
    for name, options in variants.items():
        batch, step_s = options.get("batch", batch_size), timed.wall[name]
        rows.append({"setting": name, "threads": options.get("threads", all_threads), "step_s": rounded(step_s),
                     "patches_per_s": rounded(batch / step_s),
                     "cpu_s": rounded(timed.cpu[name]), "times_s": [round(t, 3) for t in timed.wall_all[name]]})
    return rows


def _torch_step(net: nn.Module, patch: int, batch: int, *, threads: int, channels_last: bool,
                mkldnn: bool) -> Callable[[], float]:
    from adapters.torch.losses import make_loss
    from adapters.torch.steps import make_optimizer

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
        with torch_threads(threads), torch.backends.mkldnn.flags(enabled=mkldnn):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(image), label)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

    return step


def compile_probe(base_filters: int, depth: int, patch: int, batch: int, repeats: int) -> dict[str, Any]:
    """Eager vs ``torch.compile`` training steps in this process (run it in a subprocess: it may hang)."""
    from bench.training import frameworks

    torch.manual_seed(0)
    net = frameworks.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
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

    from adapters.tf.losses import make_loss
    from adapters.tf.steps import make_optimizer, make_train_step
    from bench.training import frameworks

    rng = np.random.default_rng(0)
    image = tf.constant(rng.standard_normal((batch, patch, patch, patch, 1), dtype=np.float32))
    label = tf.constant(rng.integers(0, 4, (batch, patch, patch, patch)))
    steps: dict[str, Callable[[], float]] = {}
    compile_s: dict[str, float] = {}
    for name, jit in (("graph (adapter)", False), ("XLA jit_compile", True)):
        model = frameworks.build("unet3d", "tf", base_filters=base_filters, depth=depth).model  # type: ignore[attr-defined]
        if jit:
            step = _xla_step(model, make_optimizer(OPTIMIZER), make_loss(LOSS))
        else:
            adapter_step = make_train_step(model, make_optimizer(OPTIMIZER), make_loss(LOSS), 0.0)

            def step(image: tf.Tensor, label: tf.Tensor, adapter_step: Any = adapter_step) -> tf.Tensor:
                return adapter_step(image, label)[0]  # the loss (the adapter's step also says if grads were finite)
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
