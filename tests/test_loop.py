"""Tests of ``bench.training.loop`` with stand-in steps (no framework imported): validation Dice, plateau and early
stopping, best weights and the monitor, non-finite losses, batches and gradients, how a fit ended, progress.
The same loop with both frameworks' real steps is tested in ``test_adapters.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from adapter_helpers import CropSource, RecordingLogger, quick_spec, spheres

from bench.contract import EarlyStoppingSpec, NullLogger, PatchBatch, SchedulerSpec, TrainSpec
from bench.errors import BenchError
from bench.training import loop


class ScriptedSteps:
    """``loop.TrainSteps`` stand-in: train losses and eval results from scripts; records what it was given."""

    def __init__(self, losses: list[float] | None = None, evals: list[tuple[float, np.ndarray]] | None = None) -> None:
        self.losses, self.evals = iter(losses or []), iter(evals or [])
        self.seen: list[PatchBatch] = []
        self.lr, self.state = 0.1, 0
        self.restored: int | None = None

    def train_step(self, batch: PatchBatch) -> float:
        self.seen.append(batch)
        self.state += 1  # the "weights" change with every step
        return next(self.losses, 1.0)

    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        return next(self.evals)

    def get_lr(self) -> float:
        return self.lr

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def snapshot(self) -> int:
        return self.state

    def restore(self, state: int) -> None:
        self.restored = state


def test_dice_per_class_from_confusion_matrix() -> None:
    confusion = np.array([[5, 0, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 2, 0, 4]])  # rows: truth
    dice = loop.dice_per_class(confusion)
    assert dice == pytest.approx({"CSF": 6 / 9, "GM": 1.0, "WM": 8 / 10})


def test_validation_dice_is_accumulated_over_all_voxels() -> None:
    first = np.zeros((4, 4), np.int64)  # [true, predicted]
    first[0, 0], first[1, 1], first[1, 0], first[0, 1], first[3, 3], first[3, 0] = 5, 2, 1, 1, 4, 1
    second = np.zeros((4, 4), np.int64)
    second[0, 0], second[1, 1] = 3, 1
    steps = ScriptedSteps(evals=[(0.5, first), (1.5, second)])
    batch = PatchBatch(np.zeros((1, 1, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2), np.int64))
    loss, dice = loop.evaluate(steps, [batch, batch], epoch=0)
    # CSF: 2*(2+1)/((3+1)+(3+1)); GM: no voxels anywhere -> 1.0; WM: 2*4/(4+5) (not a mean over batches)
    assert loss == 1.0
    assert dice == pytest.approx({"CSF": 6 / 8, "GM": 1.0, "WM": 8 / 9})
    with pytest.raises(BenchError, match="validation patch source yielded no batches in epoch 2"):
        loop.evaluate(steps, [], epoch=2)


def test_non_finite_loss_names_epoch_and_step() -> None:
    image, label = spheres(size=8)
    batches = list(CropSource(image, label, 8, 1, 3).batches(0))
    steps = ScriptedSteps(losses=[0.5, 0.4, math.nan])  # the third loss is NaN
    with pytest.raises(BenchError, match=r"became nan at epoch 3, step 2.*lower optimizer.lr"):
        loop.train_epoch(steps, batches, epoch=3)
    # the steps get the numpy batches channels-first, as the sources give them
    assert [b.image.shape for b in steps.seen] == [(1, 1, 8, 8, 8)] * 3
    assert all(b.label.dtype == np.int64 for b in steps.seen)
    seen: list[tuple[int, float]] = []
    assert loop.train_epoch(ScriptedSteps(), batches, 0, lambda n, v: seen.append((n, v))) == (1.0, 3, 0)
    assert seen == [(1, 1.0), (2, 1.0), (3, 1.0)]
    with pytest.raises(BenchError, match="no batches in epoch 4"):
        loop.train_epoch(steps, [], epoch=4)
    with pytest.raises(BenchError, match=r"became inf at epoch 0, step 0"):
        loop.train_epoch(ScriptedSteps(losses=[math.inf]), batches, epoch=0)


class SkippingSteps(ScriptedSteps):
    """Scripted steps whose updates at the given call numbers (from 0) are skipped for a non-finite gradient."""

    def __init__(self, skip: set[int]) -> None:
        super().__init__()
        self.skip, self.calls, self.skipped_steps = skip, 0, 0

    def train_step(self, batch: PatchBatch) -> float:
        value = super().train_step(batch)
        self.skipped_steps += self.calls in self.skip
        self.calls += 1
        return value


def test_skipped_updates_are_counted_and_ten_in_a_row_stop_the_fit() -> None:
    image, label = spheres(size=8)
    batches = list(CropSource(image, label, 8, 1, 12).batches(0))
    assert loop.train_epoch(SkippingSteps({1, 4, 5}), batches[:6], 0) == (1.0, 6, 3)
    assert loop.train_epoch(SkippingSteps(set(range(9))), batches, 0)[2] == 9  # 9 in a row are absorbed
    with pytest.raises(BenchError, match=r"not finite in 10 train steps in a row, up to epoch 2, step 10.*fp32"):
        loop.train_epoch(SkippingSteps(set(range(1, 11))), batches, epoch=2)
    source = CropSource(image, label, 8, 1, 4)
    spec = TrainSpec(epochs=2, scheduler=SchedulerSpec(factor=1.0), progress=False,
                     early_stopping=EarlyStoppingSpec(patience=0))
    history = loop.fit(SkippingSteps({1, 6}), source, None, spec, NullLogger())  # 4 steps per epoch
    assert [r.skipped_steps for r in history.epochs] == [1, 1] and history.skipped_steps == 2
    assert loop.fit(ScriptedSteps(), source, None, spec, NullLogger()).skipped_steps == 0  # steps that never skip


def _eval(loss: float, csf_predicted: bool = True) -> tuple[float, np.ndarray]:
    """An eval result with this loss; CSF (class 1) predicted right, or never predicted."""
    confusion = np.diag([10, 5, 5, 5]).astype(np.int64)
    if not csf_predicted:
        confusion[1, 1], confusion[1, 0] = 0, 5
    return loss, confusion


@pytest.mark.parametrize(
    ("val_losses", "patience", "epochs", "convergence", "best"),
    [
        ([0.9, 0.8, 0.85, 0.86, 0.9, 0.9], 2, 6, "stopped_early", 1),  # stops after epoch 3
        ([0.9, 0.8, 0.7, 0.75, 0.76], 2, 5, "plateaued", 2),  # stopping fires at the last epoch
        ([0.9, 0.8, 0.7, 0.6, 0.5], 2, 5, "still_improving", 4),  # epochs run out while improving
        ([0.9, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], 0, 7, "plateaued", 1),  # stopping off: best 5 epochs before the end
        ([0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.5], 0, 7, "still_improving", 6),  # stopping off, best in the last 3
    ],
)
def test_a_fit_records_how_it_ended(val_losses: list[float], patience: int, epochs: int, convergence: str,
                                    best: int) -> None:
    image, label = spheres(size=8)
    source, val = CropSource(image, label, 8, 1, 2), CropSource(image, label, 8, 1, 1)  # one eval per epoch
    spec = TrainSpec(epochs=epochs, scheduler=SchedulerSpec(factor=1.0), progress=False,
                     early_stopping=EarlyStoppingSpec(patience=patience))
    steps = ScriptedSteps(evals=[_eval(v) for v in val_losses])
    history = loop.fit(steps, source, val, spec, NullLogger())
    assert (history.convergence, history.best_epoch) == (convergence, best)
    assert history.converged == (convergence != "still_improving")
    assert [r.patches_seen for r in history.epochs] == [2 * (i + 1) for i in range(len(history.epochs))]
    assert history.unlearned == ()


def test_a_class_never_predicted_at_the_end_is_recorded() -> None:
    image, label = spheres(size=8)
    source = CropSource(image, label, 8, 1, 1)
    spec = TrainSpec(epochs=3, scheduler=SchedulerSpec(factor=1.0), progress=False,
                     early_stopping=EarlyStoppingSpec(patience=0))
    late = ScriptedSteps(evals=[_eval(0.9, False), _eval(0.8, False), _eval(0.7, True)])
    assert loop.fit(late, source, source, spec, NullLogger()).unlearned == ()  # learnt CSF by the end
    never = ScriptedSteps(evals=[_eval(0.9, False), _eval(0.8, False), _eval(0.7, False)])
    assert loop.fit(never, source, source, spec, NullLogger()).unlearned == ("CSF",)
    assert loop.fit(ScriptedSteps(), source, None, spec, NullLogger()).unlearned == ()  # no validation


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_batch_is_refused_before_its_step(bad: float) -> None:
    image, label = spheres(size=8)
    batches = list(CropSource(image, label, 8, 1, 3).batches(0))
    batches[1].image[0, 0, 2, 3, 4] = bad
    steps = ScriptedSteps()
    with pytest.raises(BenchError, match=r"epoch 5, step 1 holds non-finite intensities"):
        loop.train_epoch(steps, batches, epoch=5)
    assert len(steps.seen) == 1  # the bad batch never reached a train step


def test_plateau_follows_torch_rules() -> None:
    plateau = loop.Plateau(SchedulerSpec(factor=0.5, patience=1, min_lr=0.2, threshold=0.1))
    lrs, lr = [], 1.0
    for value in [10.0, 9.5, 9.4, 8.0, 7.9, 7.8, 7.7, 7.6]:  # 9.5 is not < 10 * 0.9: not an improvement
        lr = plateau.step(value, lr)
        lrs.append(lr)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2]
    disabled = loop.Plateau(SchedulerSpec(factor=1.0, patience=1))
    assert [disabled.step(v, 1.0) for v in (1.0, 2.0, 3.0, 4.0)] == [1.0] * 4
    no_patience = loop.Plateau(SchedulerSpec(factor=0.5, patience=0))  # patience <= 0 disables it too
    assert [no_patience.step(v, 1.0) for v in (1.0, 2.0, 3.0, 4.0)] == [1.0] * 4


def test_early_stopper_counts_epochs_without_min_delta_improvement() -> None:
    stopper = loop.EarlyStopper(EarlyStoppingSpec(patience=2, min_delta=0.1))
    # 0.95 and 0.8 do not beat the best by more than 0.1; the second such epoch in a row stops
    assert [stopper.step(v) for v in (1.0, 0.95, 0.85, 0.8, 0.79)] == [False, False, False, False, True]
    never = loop.EarlyStopper(EarlyStoppingSpec(patience=0))
    assert not any(never.step(v) for v in (1.0, 2.0, 3.0, 4.0))


def test_fit_restores_the_best_snapshot_and_lowers_the_lr() -> None:
    image, label = spheres(size=8)
    train = CropSource(image, label, 8, 1, 2)
    confusion = np.eye(4, dtype=np.int64)
    val_losses = [3.0, 1.0, 2.0, 2.0, 2.0]  # one batch per epoch: epoch 1 is the best
    steps = ScriptedSteps(evals=[(v, confusion) for v in val_losses])
    spec = quick_spec(epochs=5, scheduler=SchedulerSpec(factor=0.5, patience=1, min_lr=0.0, threshold=0.0),
                      early_stopping=EarlyStoppingSpec(patience=2))
    logger = RecordingLogger()
    history = loop.fit(steps, train, CropSource(image, label, 8, 1, 1), spec, logger)
    assert [r.val_loss for r in history.epochs] == val_losses[:4]  # epochs 2 and 3 do not improve: stop
    assert history.best_epoch == 1 and history.stopped_early and logger.records == history.epochs
    assert steps.restored == 4  # the snapshot after epoch 1's two steps
    assert [r.lr for r in history.epochs] == [0.1, 0.1, 0.1, 0.1] and steps.lr == 0.05  # cut after epoch 3
    assert history.epochs[0].val_dice == {"CSF": 1.0, "GM": 1.0, "WM": 1.0}
    assert history.fit_seconds > 0


def _csf_right(voxels: int) -> np.ndarray:
    """A confusion matrix whose CSF Dice is ``2 * voxels / (voxels + 10)`` (GM and WM perfect)."""
    confusion = np.diag([10, voxels, 5, 5]).astype(np.int64)
    confusion[1, 0] = 10 - voxels  # CSF voxels predicted as background
    return confusion


@pytest.mark.parametrize(("monitor", "best", "stops_after"), [("val_loss", 1, 4), ("val_dice", 4, 7)])
def test_the_monitor_picks_the_best_epoch_and_drives_early_stopping(monitor: str, best: int, stops_after: int) -> None:
    # the loss is flat from epoch 1 while CSF keeps improving until epoch 4 (a class learned late)
    image, label = spheres(size=8)
    evals = [(1.0, _csf_right(2)), (0.5, _csf_right(4)), (0.5, _csf_right(6)), (0.5, _csf_right(8)),
             (0.5, _csf_right(10)), (0.5, _csf_right(10)), (0.5, _csf_right(10))]
    steps = ScriptedSteps(evals=evals)
    spec = quick_spec(epochs=7, early_stopping=EarlyStoppingSpec(patience=2), monitor=monitor)
    history = loop.fit(steps, CropSource(image, label, 8, 1, 1), CropSource(image, label, 8, 1, 1), spec,
                       RecordingLogger())
    assert history.best_epoch == best and steps.restored == best + 1  # one step per epoch
    assert len(history.epochs) == stops_after
    assert loop.monitored_value("val_dice", 0.3, 0.5, {"CSF": 0.5, "GM": 1.0, "WM": 0.9}) == pytest.approx(0.2)
    assert loop.monitored_value("val_dice", 0.3, None, None) == 0.3  # no validation: the training loss
    with pytest.raises(BenchError, match=r"train\.monitor='val_acc' is unknown"):
        quick_spec(monitor="val_acc")


def test_keep_weights_last_ends_with_the_final_epoch_and_still_reports_the_best() -> None:
    image, label = spheres(size=8)
    val_losses = [3.0, 1.0, 2.0, 2.0]  # epoch 1 is the best monitored epoch
    kept = {}
    for keep in ("best", "last"):
        steps = ScriptedSteps(evals=[(v, np.eye(4, dtype=np.int64)) for v in val_losses])
        spec = quick_spec(epochs=4, keep_weights=keep)
        history = loop.fit(steps, CropSource(image, label, 8, 1, 1), CropSource(image, label, 8, 1, 1), spec,
                           RecordingLogger())
        assert history.best_epoch == 1 and len(history.epochs) == 4
        kept[keep] = steps.restored
    assert kept == {"best": 2, "last": None}  # best: the snapshot after epoch 1 (one step each); last: untouched
    with pytest.raises(BenchError, match=r"train\.keep_weights='first' is unknown \(use one of best, last\)"):
        quick_spec(keep_weights="first")


def test_progress_bar_is_quiet_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    for enabled in (True, False):
        with loop.progress_bar(enabled, 10) as start:
            assert start(0) is None
    assert capsys.readouterr().err == ""
