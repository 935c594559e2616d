"""Overhead of the adapters' training loop: ``fit`` epochs vs bare steps over the same batches, interleaved."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from bench.contract import NullLogger, PatchBatch
from bench.patching.sampler import PatchSampler, PatchSubject
from benchmarks import BenchSubject, rounded
from benchmarks.training_common import LOSS, OPTIMIZER, train_spec

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
    from adapters.torch.steps import make_optimizer, to_tensors

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
    from bench.training import frameworks

    sampler = grid_sampler(subjects, patch, batch_size)
    batches = list(itertools.islice(sampler.batches(0), steps))
    twin = frameworks.build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
    source = TimedSource(sampler, steps, torch_bare_loop(twin, batches), between_count=repeats + 1)
    segmenter: Any = frameworks.build("unet3d", "torch", base_filters=base_filters, depth=depth)
    segmenter.fit(source, None, train_spec(steps, repeats + 2, threads), NullLogger())
    return _overhead_result("torch", source, repeats, threads)


def tf_overhead(subjects: Sequence[BenchSubject], *, base_filters: int, depth: int, patch: int,
                batch_size: int, steps: int, repeats: int, threads: int) -> dict[str, Any]:
    """The TF adapter's fit (2 + ``repeats`` epochs; epoch 0 traces) vs bare compiled steps before each epoch."""
    from adapters.tf.losses import make_loss
    from adapters.tf.steps import configure_threads, make_optimizer, make_train_step, to_tensors
    from bench.training import frameworks

    configure_threads(threads)  # before TF starts (building a model starts it)
    sampler = grid_sampler(subjects, patch, batch_size)
    batches = list(itertools.islice(sampler.batches(0), steps))
    twin = frameworks.build("unet3d", "tf", base_filters=base_filters, depth=depth).model  # type: ignore[attr-defined]
    step = make_train_step(twin, make_optimizer(OPTIMIZER), make_loss(LOSS), 0.0)
    tensors = [to_tensors(b) for b in batches]

    def bare_steps() -> None:
        for image, label in tensors:
            float(step(image, label)[0])  # (loss, gradients finite)

    _clocked(bare_steps)  # traces the bare step
    source = TimedSource(sampler, steps, lambda: _clocked(bare_steps), between_count=repeats + 1)
    segmenter: Any = frameworks.build("unet3d", "tf", base_filters=base_filters, depth=depth)
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
