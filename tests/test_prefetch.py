"""The bounded batch prefetch (issue 38): the same batches in the same order, errors where they happened, no
thread left behind; and a fit with prefetch equals one without, in both frameworks."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench.contract import NullLogger, PatchBatch
from bench.patching.augment import AugmentSpec
from bench.patching.sampler import PatchSampler, PatchSubject
from bench.training import loop
from bench.training.prefetch import THREAD_NAME, Prefetcher, prefetched
from tests.adapter_helpers import quick_spec, spheres


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def sampler(seed: int, mode: str = "grid") -> PatchSampler:
    image, label = spheres(24, seed=seed)
    subject = PatchSubject(image=image, label=label, mask=label > 0, id="s")
    augment = AugmentSpec(name="test", flip_prob=(0.5, 0.5, 0.5), noise_prob=0.5)
    return PatchSampler([subject], 8, batch_size=3, seed=seed, mode=mode,  # type: ignore[arg-type]
                        patches_per_epoch=None if mode == "grid" else 10, augment=augment)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["grid", "random"])
def test_prefetched_batches_equal_todays(seed: int, mode: str) -> None:
    today = [(b.image, b.label) for epoch in (0, 1) for b in sampler(seed, mode).batches(epoch)]
    source = sampler(seed, mode)
    ahead = []
    for epoch in (0, 1):
        with prefetched(source.batches(epoch), depth=2) as batches:
            ahead.extend((b.image, b.label) for b in batches)
    assert len(ahead) == len(today) > 2
    for (image, label), (image2, label2) in zip(today, ahead, strict=True):
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(label, label2)
    other = [b.image for b in sampler(seed + 1, mode).batches(0)]  # the comparison can fail
    assert not all(np.array_equal(a, b) for a, b in zip(other, [i for i, _ in today], strict=False))


def test_depth_zero_starts_no_thread_and_depth_bounds_the_read_ahead() -> None:
    made: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10):
            made.append(i)
            yield i

    with prefetched(items(), depth=0) as it:
        assert not prefetch_threads() and next(it) == 0 and made == [0]
    made.clear()
    with prefetched(items(), depth=2) as it:
        assert next(it) == 0
        time.sleep(0.3)
        assert made == [0, 1, 2, 3]  # the one taken, two in the queue, one waiting to be put
    assert list(prefetched_all(range(7), 3)) == list(range(7))


def prefetched_all(items: Any, depth: int) -> list[Any]:
    with prefetched(items, depth) as it:
        return list(it)


def test_an_error_while_making_an_item_is_raised_at_its_position() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad subject")

    got: list[int] = []
    with pytest.raises(ValueError, match="bad subject"), prefetched(items(), depth=4) as it:
        for item in it:
            got.append(item)
    assert got == [1, 2] and not prefetch_threads()


def test_leaving_early_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with prefetched(endless(), depth=2) as it:
        assert [next(it) for _ in range(3)] == [0, 1, 2]
    assert closed.is_set() and not prefetch_threads()
    with pytest.raises(RuntimeError, match="step failed"), prefetched(endless(), depth=2) as it:
        next(it)
        raise RuntimeError("step failed")
    assert not prefetch_threads()
    ahead = Prefetcher(endless(), 1)
    ahead.close()
    assert list(ahead) == [] and not prefetch_threads()


class RecordingSteps:
    """Steps that remember every batch they saw (train and eval) and can fail at one train step."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.seen: list[tuple[str, np.ndarray]] = []
        self.fail_at = fail_at

    def train_step(self, batch: PatchBatch) -> float:
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            return float("nan")
        self.seen.append(("train", batch.image.copy()))
        return float(batch.image.mean())

    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        self.seen.append(("eval", batch.image.copy()))
        return 1.0, np.eye(4, dtype=np.int64)

    def get_lr(self) -> float:
        return 0.1

    def set_lr(self, lr: float) -> None:
        pass

    def snapshot(self) -> None:
        return None

    def restore(self, state: Any) -> None:
        pass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_sees_the_same_batches_with_and_without_prefetch(seed: int) -> None:
    runs = []
    for depth in (0, 2):
        steps = RecordingSteps()
        spec = quick_spec(epochs=3, steps_per_epoch=2, prefetch_batches=depth, seed=seed)
        history = loop.fit(steps, sampler(seed), sampler(seed, "random"), spec, NullLogger())
        runs.append((steps.seen, [r.train_loss for r in history.epochs]))
    (seen0, losses0), (seen2, losses2) = runs
    assert [kind for kind, _ in seen0] == [kind for kind, _ in seen2] and len(seen0) == 3 * (2 + 4)
    for (_, a), (_, b) in zip(seen0, seen2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert losses0 == losses2
    assert not prefetch_threads()


def test_a_failing_step_leaves_no_prefetch_thread() -> None:
    with pytest.raises(Exception, match="training loss became nan"):
        loop.fit(RecordingSteps(fail_at=1), sampler(0), None, quick_spec(prefetch_batches=2), NullLogger())
    assert not prefetch_threads()


def _fit_twice(framework: str, seed: int) -> list[tuple[list[float], list[np.ndarray]]]:
    from bench.training import frameworks

    out = []
    for depth in (0, 2):
        seg: Any = frameworks.build("unet3d", framework, base_filters=2, depth=2)
        spec = quick_spec(framework, steps_per_epoch=2, seed=seed, prefetch_batches=depth)
        history = seg.fit(sampler(seed), None, spec, NullLogger())
        weights = ([w.detach().numpy().copy() for w in seg.net.state_dict().values()] if framework == "torch"
                   else [np.array(w) for w in seg.model.get_weights()])
        out.append(([r.train_loss for r in history.epochs], weights))
    return out


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_a_fit_with_prefetch_equals_one_without(framework: str) -> None:
    if importlib.util.find_spec("tensorflow" if framework == "tf" else "torch") is None:
        pytest.skip(f"{framework} is not installed")
    for seed in (0, 1, 2):
        (losses0, weights0), (losses2, weights2) = _fit_twice(framework, seed)
        assert losses0 == losses2, seed
        for a, b in zip(weights0, weights2, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not prefetch_threads()


def _spec(*overrides: str) -> Any:
    from bench.config import run_spec_from_config
    from bench.sweeps import compose_config, to_container

    pinned = ["+experiment=table1/row5", "profile=smoke", "profile.precision=fp32", "profile.num_threads=2",
              "data.root=/data/synthetic"]
    return run_spec_from_config(to_container(compose_config([*pinned, *overrides])))


def test_profile_settings_reach_the_train_spec_and_only_deterministic_false_enters_the_hash() -> None:
    from bench.errors import ConfigError

    default = _spec()
    assert default.network.train.deterministic is True and default.network.train.prefetch_batches == 2
    on = _spec("profile.deterministic=true")
    off = _spec("profile.deterministic=false")
    assert off.network.train.deterministic is False
    assert on.config_hash == default.config_hash != off.config_hash
    none = _spec("profile.prefetch_batches=0")
    assert none.network.train.prefetch_batches == 0 and none.config_hash == default.config_hash
    with pytest.raises(ConfigError, match=r"profile\.prefetch_batches=-1 must be an integer >= 0"):
        _spec("profile.prefetch_batches=-1")
    with pytest.raises(ConfigError, match=r"profile\.deterministic='yes'"):
        _spec("profile.deterministic=yes")


def test_torch_honours_deterministic_both_ways_and_stages_cpu_batches_as_they_are() -> None:
    torch = pytest.importorskip("torch")
    from adapters.torch.steps import configure_runtime

    try:
        assert configure_runtime(quick_spec(deterministic=False)).type == "cpu"
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        configure_runtime(quick_spec(deterministic=True))
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        configure_runtime(quick_spec())
    from bench.training import frameworks

    seg: Any = frameworks.build("unet3d", "torch", base_filters=2, depth=2)
    seg._configure(quick_spec())
    batch = next(sampler(0).batches(0))
    assert seg._steps(quick_spec()).stage(batch) is batch  # pinned copies only for a CUDA device


def test_tf_warns_that_determinism_stays_on_in_its_process() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    from adapters.tf.steps import configure_runtime

    configure_runtime(quick_spec("tf", deterministic=True))
    with pytest.warns(RuntimeWarning, match="cannot switch it off"):
        configure_runtime(quick_spec("tf", deterministic=False))
