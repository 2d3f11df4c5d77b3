"""Schedules as pure functions of the step: the eps ramp (on auto_LiRPA's ``eps_scheduler``), the
loss coefficients that follow it, and the learning rate.

Everything here is stateless (a value per global step or epoch), so a resumed run sees exactly the
values an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..compat import import_auto_lirpa
from .config import LossConfig, ScheduleConfig


class Ramp:
    """A ramp from 0 to 1: 0 up to step ``start``, 1 from step ``start + length`` on.

    ``shape="linear"`` uses auto_LiRPA's ``LinearScheduler``, ``"smoothed"`` its ``SmoothedScheduler``
    (exponential growth that turns linear, after DeepMind's IBP code), both run at one "epoch" per
    step: ``Ramp(...)(t)`` sets the scheduler's counters to step ``t`` and reads its eps.
    """

    def __init__(self, start: int, length: int, shape: str = "linear") -> None:
        import_auto_lirpa()
        from auto_LiRPA import eps_scheduler as es

        if start < 0 or length < 0:
            raise ValueError(f"Ramp: start and length must be >= 0, got {start}, {length}")
        if shape not in ("linear", "smoothed"):
            raise ValueError(f"Ramp: shape must be 'linear' or 'smoothed', got {shape!r}")
        self.start, self.length, self.shape = int(start), int(length), shape
        opts = f"start={self.start + 1},length={self.length}"
        if shape == "smoothed" and self.length >= 2:
            self._sched = es.SmoothedScheduler(1.0, opts)
        else:   # the smoothed ramp needs >= 2 steps; shorter ones are linear
            self._sched = es.LinearScheduler(1.0, opts)
        self._sched.set_epoch_length(1)

    def __call__(self, step: int) -> float:
        if step >= self.start + self.length:
            return 1.0
        if step < self.start:
            return 0.0
        s = self._sched
        if isinstance(s, _linear_type()):
            s.epoch, s.batch = int(step), 0
            s.step_epoch(verbose=False)
        else:
            s.batch = int(step)
        s.step_batch()
        return min(max(float(s.get_eps()), 0.0), 1.0)


def _linear_type():
    from auto_LiRPA.eps_scheduler import LinearScheduler

    return LinearScheduler


@dataclass(frozen=True)
class StepValues:
    """What one training step uses."""

    epoch: int
    warmup: bool          # plain quantization-aware step (no bounds)
    progress: float       # ramp position in [0, 1]
    eps: float            # training radius, pixel units
    kappa: float          # weight of the clean CE (gowal, crown_ibp)
    lambda_rob: float     # qaibp
    lambda_reg: float     # qaibp
    beta: float           # crown_ibp: weight of the CROWN-IBP bound


class TrainSchedule:
    """Per-step values of one run: ``values(epoch, batch)`` and ``lr(epoch)``."""

    def __init__(self, sched: ScheduleConfig, loss: LossConfig, steps_per_epoch: int) -> None:
        if steps_per_epoch < 1:
            raise ValueError("TrainSchedule: steps_per_epoch must be >= 1")
        self.cfg, self.loss, self.spe = sched, loss, int(steps_per_epoch)
        rest = sched.epochs - sched.warmup_epochs
        length = sched.ramp_length if sched.ramp_length is not None else sched.ramp_fraction * rest
        self.ramp = Ramp(round(sched.ramp_start * self.spe), round(length * self.spe), sched.ramp_shape)

    @property
    def eps_max(self) -> float:
        return self.cfg.eps + self.cfg.eps_train_extra

    def values(self, epoch: int, batch: int) -> StepValues:
        lc = self.loss
        if epoch < self.cfg.warmup_epochs:
            return StepValues(epoch, True, 0.0, 0.0, 1.0, 0.0, 0.0, lc.beta_start)
        p = self.ramp((epoch - self.cfg.warmup_epochs) * self.spe + batch)
        return StepValues(epoch, False, p, p * self.eps_max,
                          lc.kappa_start + (lc.kappa_end - lc.kappa_start) * p,
                          p * lc.lambda_rob, p * lc.lambda_reg,
                          lc.beta_start + (lc.beta_end - lc.beta_start) * p)

    def lr(self, epoch: int) -> float:
        c = self.cfg
        base = c.warmup_lr if (epoch < c.warmup_epochs and c.warmup_lr is not None) else c.lr
        return base * c.lr_decay_factor ** sum(1 for m in c.lr_decay_epochs if epoch >= m)


__all__ = ["Ramp", "StepValues", "TrainSchedule"]
