"""Learning-rate schedules (``bench.training.schedules``) and how the one training loop applies them.

Oracles: torch's own CosineAnnealingLR, PolynomialLR and OneCycleLR (when torch imports) and hand-computed
warm-up values. Both frameworks' real steps following the same sequence is in tests/test_adapters_parity.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from test_records import spec_of

from bench.contract import EarlyStoppingSpec, PatchBatch, SchedulerSpec, TrainSpec
from bench.errors import ConfigError
from bench.spec import effective_settings
from bench.training import loop
from bench.training.schedules import LrSchedule


def sequence(spec: SchedulerSpec, base: float, epochs: int, steps: int) -> list[float]:
    schedule = LrSchedule(spec, base, epochs, steps)
    if schedule.per_step:
        return [schedule.lr(e, s) for e in range(epochs) for s in range(steps)]
    return [schedule.lr(e) for e in range(epochs)]


def torch_sequence(make: str, total: int, base: float) -> list[float]:
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    schedulers = torch.optim.lr_scheduler
    scheduler = {
        "cosine": lambda: schedulers.CosineAnnealingLR(optimizer, T_max=total, eta_min=1e-4),
        "poly": lambda: schedulers.PolynomialLR(optimizer, total_iters=total, power=0.9),
        "onecycle": lambda: schedulers.OneCycleLR(optimizer, max_lr=base, total_steps=total, pct_start=0.3,
                                                  anneal_strategy="cos", cycle_momentum=False, div_factor=25.0,
                                                  final_div_factor=1e4, three_phase=False),
    }[make]()
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(("kind", "interval"), [("cosine", "step"), ("poly", "epoch"), ("onecycle", "step"),
                                                ("onecycle", "epoch")])
def test_schedules_match_torch_schedulers(kind: str, interval: str) -> None:
    spec = SchedulerSpec(kind=kind, interval=interval, min_lr=1e-4)  # type: ignore[arg-type]
    epochs, steps = 7, 5
    ours = sequence(spec, 0.02, epochs, steps)
    assert len(ours) == (epochs * steps if interval == "step" else epochs)
    assert ours == pytest.approx(torch_sequence(kind, len(ours), 0.02), rel=1e-9, abs=1e-15)
    assert len(set(ours)) == len(ours)  # the lr really changes every unit


def test_warmup_rises_linearly_then_the_schedule_runs_over_the_rest() -> None:
    ours = sequence(SchedulerSpec(kind="cosine", warmup_epochs=2, min_lr=0.0), 1.0, epochs=6, steps=3)
    assert ours[:2] == pytest.approx([1 / 3, 2 / 3])  # lr * (t + 1) / (W + 1)
    assert ours[2:] == pytest.approx([(1 + math.cos(math.pi * u / 4)) / 2 for u in range(4)])  # U = 6 - 2
    per_step = sequence(SchedulerSpec(kind="poly", warmup_epochs=1, interval="step", power=1.0), 2.0, 3, 2)
    assert per_step == pytest.approx([2 / 3, 4 / 3, 2.0, 1.5, 1.0, 0.5])


def test_plateau_schedule_leaves_the_lr_to_the_plateau_rule() -> None:
    plain = LrSchedule(SchedulerSpec(), 0.1, epochs=10, steps_per_epoch=4)
    assert not any(plain.sets_lr(e) for e in range(10))  # the default: exactly the loop as before
    warm = LrSchedule(SchedulerSpec(warmup_epochs=2), 0.1, epochs=10, steps_per_epoch=4)
    assert [warm.sets_lr(e) for e in range(4)] == [True, True, True, False]
    assert [warm.lr(e) for e in range(3)] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])


class LrSteps:
    """Stand-in ``TrainSteps`` recording the lr each train step ran with; eval losses from a script."""

    def __init__(self, val_losses: list[float]) -> None:
        self.lr, self.used, self.val = 0.1, [], iter(val_losses)

    def train_step(self, batch: PatchBatch) -> float:
        self.used.append(self.lr)
        return 1.0

    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        return next(self.val), np.eye(4, dtype=np.int64)

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def snapshot(self) -> float:
        return self.lr

    def restore(self, state: float) -> None:
        return None


class Batches:
    patch_size, batch_size = (2, 2, 2), 1

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        for _ in range(self.steps):
            yield PatchBatch(np.zeros((1, 1, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2), np.int64))


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_fit_trains_every_step_at_the_scheduled_lr(interval: str) -> None:
    scheduler = SchedulerSpec(kind="onecycle", interval=interval)  # type: ignore[arg-type]
    spec = TrainSpec(epochs=4, steps_per_epoch=3, scheduler=scheduler, early_stopping=EarlyStoppingSpec(0),
                     progress=False)
    steps = LrSteps([1.0] * 4)
    history = loop.fit(steps, Batches(5), Batches(1), spec, loop_logger())
    schedule = LrSchedule(scheduler, 0.1, 4, 3)
    expected = [schedule.lr(e, s) for e in range(4) for s in range(3)]
    assert steps.used == pytest.approx(expected)
    assert [r.lr for r in history.epochs] == pytest.approx(expected[::3])  # an epoch's first step
    if interval == "epoch":
        assert steps.used[:3] == [steps.used[0]] * 3


def test_plateau_after_warmup_cuts_the_lr_from_the_optimizer_lr() -> None:
    scheduler = SchedulerSpec(warmup_epochs=2, factor=0.5, patience=1, threshold=0.0, min_lr=0.0)
    spec = TrainSpec(epochs=6, steps_per_epoch=1, scheduler=scheduler, early_stopping=EarlyStoppingSpec(0),
                     progress=False)
    steps = LrSteps([1.0, 1.0, 5.0, 5.0, 5.0, 5.0])  # epochs without improvement in the warm-up do not count
    loop.fit(steps, Batches(1), Batches(1), spec, loop_logger())
    assert steps.used == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.05])


def loop_logger():  # type: ignore[no-untyped-def]
    from bench.contract import NullLogger

    return NullLogger()


# --- config and record ------------------------------------------------------------------------------------
def test_scheduler_settings_reach_the_spec_and_only_applicable_ones_are_recorded() -> None:
    spec = spec_of("+profile.scheduler.kind=cosine", "+profile.scheduler.warmup_epochs=3",
                   "+profile.scheduler.interval=step")
    scheduler = spec.network.train.scheduler
    assert (scheduler.kind, scheduler.warmup_epochs, scheduler.interval) == ("cosine", 3, "step")
    recorded = effective_settings(spec)["train"]["scheduler"]
    assert recorded == {"kind": "cosine", "min_lr": scheduler.min_lr, "warmup_epochs": 3, "interval": "step"}
    default = effective_settings(spec_of())["train"]["scheduler"]
    assert default == {"kind": "plateau", "factor": 0.5, "patience": 5, "min_lr": 1e-5, "threshold": 1e-4,
                       "warmup_epochs": 0}
    assert spec.config_hash != spec_of("+profile.scheduler.kind=cosine").config_hash


@pytest.mark.parametrize(("override", "needle"), [
    ("+profile.scheduler.kind=linear", "profile.scheduler.kind='linear' is unknown"),
    ("+profile.scheduler.interval=batch", "profile.scheduler.interval='batch' is unknown"),
    ("+profile.scheduler.warmup=2", "profile.scheduler has unknown key 'warmup'"),
    ("+profile.scheduler.warmup_epochs=-1", "profile.scheduler.warmup_epochs=-1 must be an integer >= 0"),
    ("+profile.scheduler.pct_start=1.5", "profile.scheduler.pct_start=1.5 must be in (0, 1)"),
])
def test_bad_scheduler_settings_name_the_setting(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec_of(override)
    assert needle in info.value.message


def test_onecycle_with_warmup_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="warmup_epochs=2 does not apply to kind=onecycle") as info:
        spec_of("+profile.scheduler.kind=onecycle", "+profile.scheduler.warmup_epochs=2")
    assert "pct_start" in (info.value.fix or "")


def test_the_monitor_reaches_the_spec_and_is_recorded_when_it_is_not_the_default() -> None:
    spec = spec_of("profile.monitor=val_dice")
    assert spec.network.train.monitor == "val_dice"
    assert effective_settings(spec)["train"]["monitor"] == "val_dice"
    default = spec_of()
    assert default.network.train.monitor == "val_loss"
    assert "monitor" not in effective_settings(default)["train"]  # runs recorded before the setting keep their hash
    assert spec.config_hash != default.config_hash
    with pytest.raises(ConfigError, match=r"profile\.monitor='loss' is unknown \(use one of val_loss, val_dice\)"):
        spec_of("profile.monitor=loss")


def test_keep_weights_reaches_the_spec_and_is_recorded_when_it_is_not_the_default() -> None:
    last = spec_of("profile.keep_weights=last")
    assert last.network.train.keep_weights == "last"
    assert effective_settings(last)["train"]["keep_weights"] == "last"
    default = spec_of()
    assert default.network.train.keep_weights == "best"
    assert "keep_weights" not in effective_settings(default)["train"]  # earlier runs keep their hash
    assert last.config_hash != default.config_hash
    with pytest.raises(ConfigError, match=r"profile\.keep_weights='final' is unknown \(use one of best, last\)"):
        spec_of("profile.keep_weights=final")


def test_train_on_val_reaches_the_spec_and_is_recorded_only_when_on() -> None:
    on = spec_of("data.train_on_val=true")
    assert on.data.train_on_val is True
    assert effective_settings(on)["data"]["train_on_val"] is True
    default = spec_of()
    assert default.data.train_on_val is False
    assert "train_on_val" not in effective_settings(default)["data"]
    assert on.config_hash != default.config_hash
    with pytest.raises(ConfigError, match=r"data\.train_on_val='yes' must be true or false"):
        spec_of("data.train_on_val='yes'")


def test_batch_dice_reaches_the_spec_and_is_recorded_when_it_is_not_the_default() -> None:
    batch = spec_of("loss.dice_reduction=batch")
    assert batch.network.train.loss.dice_reduction == "batch"
    assert effective_settings(batch)["train"]["loss"]["dice_reduction"] == "batch"
    default = spec_of()
    assert default.network.train.loss.dice_reduction == "sample"
    assert "dice_reduction" not in effective_settings(default)["train"]["loss"]  # earlier runs keep their hash
    assert batch.config_hash != default.config_hash
