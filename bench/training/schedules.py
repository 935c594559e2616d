"""Learning-rate schedules, written once for every framework (pure Python: ``bench.training.loop`` sets the lr).

``LrSchedule`` turns a ``bench.contract.SchedulerSpec`` into the lr of every epoch (``interval="epoch"``) or
every train step (``interval="step"``); the framework's ``TrainSteps.set_lr`` only applies it, so torch and
TensorFlow follow the same sequence. Time ``t`` and the run's length ``T`` are counted in the interval's unit
over the run's *maximum* length (``epochs`` x steps per epoch); early stopping may end a run before ``T``.

Formulas (``lr`` is the optimizer's learning rate; ``W`` warm-up units, ``u = t - W``, ``U = T - W``):
    warm-up (``t < W``): ``lr * (t + 1) / (W + 1)``;
    ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * u / U)) / 2`` (torch's CosineAnnealingLR);
    ``poly``: ``lr * (1 - u / U) ** power`` (torch's PolynomialLR, nnU-Net's with power 0.9);
    ``onecycle``: torch's OneCycleLR (``anneal_strategy="cos"``, two phases, ``cycle_momentum=False``);
    ``plateau``: after the warm-up, the lr is ``lr`` and only ``bench.training.loop.Plateau`` changes it.

Example:
    >>> schedule = LrSchedule(SchedulerSpec(kind="cosine", min_lr=0.0), base_lr=1.0, epochs=4, steps_per_epoch=10)
    >>> [round(schedule.lr(epoch), 3) for epoch in range(4)]
    [1.0, 0.854, 0.5, 0.146]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.contract import SchedulerSpec


def cosine_anneal(start: float, end: float, fraction: float) -> float:
    """From ``start`` (fraction 0) to ``end`` (fraction 1) along half a cosine."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)


@dataclass(frozen=True)
class LrSchedule:
    """The lr of each epoch (and step) of one fit.

    Attributes:
        spec: The schedule.
        base_lr: The optimizer's learning rate (the peak of ``onecycle``, the start of the others).
        epochs: The fit's maximum number of epochs.
        steps_per_epoch: Train steps per epoch (used when ``spec.interval == "step"``).
    """

    spec: SchedulerSpec
    base_lr: float
    epochs: int
    steps_per_epoch: int

    @property
    def per_step(self) -> bool:
        """Whether the lr changes every step (else every epoch)."""
        return self.spec.interval == "step"

    @property
    def unit(self) -> int:
        """Steps per schedule unit."""
        return self.steps_per_epoch if self.per_step else 1

    @property
    def total(self) -> int:
        """``T``: the run's length in schedule units."""
        return self.epochs * self.unit

    @property
    def warmup(self) -> int:
        """``W``: warm-up length in schedule units."""
        return self.spec.warmup_epochs * self.unit

    def sets_lr(self, epoch: int) -> bool:
        """Whether this schedule sets the lr during ``epoch`` (plateau: only during the warm-up and the epoch
        after it, which starts at the optimizer's lr; then ``Plateau`` alone changes it)."""
        if self.spec.kind != "plateau":
            return True
        return self.spec.warmup_epochs > 0 and epoch <= self.spec.warmup_epochs

    def lr(self, epoch: int, step: int = 0) -> float:
        """The lr of ``step`` (0-based, within the epoch) of ``epoch``; ``step`` is ignored per epoch."""
        t = epoch * self.steps_per_epoch + step if self.per_step else epoch
        return self.at(t)

    def at(self, t: int) -> float:
        """The lr at schedule time ``t`` (in units)."""
        spec, lr = self.spec, self.base_lr
        if t < self.warmup:
            return lr * (t + 1) / (self.warmup + 1)
        u, span = t - self.warmup, max(self.total - self.warmup, 1)
        if spec.kind == "plateau":
            return lr
        if spec.kind == "cosine":
            return cosine_anneal(lr, spec.min_lr, u / span)
        if spec.kind == "poly":
            return lr * (1.0 - min(u, span) / span) ** spec.power
        return self._onecycle(u, span)

    def _onecycle(self, t: int, total: int) -> float:
        """torch's OneCycleLR at step ``t`` of ``total``: phase ends at ``pct_start * total - 1`` and ``total - 1``."""
        spec, peak = self.spec, self.base_lr
        initial = peak / spec.div_factor
        lowest = initial / spec.final_div_factor
        rise_end = float(spec.pct_start * total) - 1.0
        if t <= rise_end:
            return cosine_anneal(initial, peak, t / rise_end if rise_end > 0 else 1.0)
        fall = (total - 1) - rise_end
        return cosine_anneal(peak, lowest, (t - rise_end) / fall if fall > 0 else 1.0)
