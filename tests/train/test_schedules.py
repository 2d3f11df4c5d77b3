"""Schedules: the eps ramp (auto_LiRPA's schedulers at one step per "epoch"), loss coefficients, lr."""
from __future__ import annotations

import pytest

from qa_lirpa.train.config import LossConfig, ScheduleConfig
from qa_lirpa.train.schedules import Ramp, TrainSchedule


def test_linear_ramp_matches_closed_form():
    r = Ramp(start=5, length=20, shape="linear")
    for t in range(0, 40):
        expected = min(max((t - 5) / 20, 0.0), 1.0)
        assert r(t) == pytest.approx(expected, abs=1e-12), t


def test_ramp_is_stateless():
    r = Ramp(start=2, length=10)
    forward = [r(t) for t in range(15)]
    assert [r(t) for t in reversed(range(15))] == list(reversed(forward))


def test_smoothed_ramp_shape():
    r = Ramp(start=10, length=100, shape="smoothed")
    vals = [r(t) for t in range(130)]
    assert all(v == 0.0 for v in vals[:11])
    assert all(v == 1.0 for v in vals[110:])
    assert all(b >= a for a, b in zip(vals, vals[1:])), "not monotone"
    # exponential start (below the linear ramp), linear end
    assert vals[20] < (20 - 10) / 100
    d = [b - a for a, b in zip(vals[60:100], vals[61:101])]
    assert max(d) - min(d) < 1e-9


def test_short_and_empty_ramps():
    assert [Ramp(3, 0)(t) for t in range(5)] == [0, 0, 0, 1, 1]
    assert [Ramp(0, 1, "smoothed")(t) for t in range(3)] == [0, 1, 1]
    with pytest.raises(ValueError):
        Ramp(-1, 3)
    with pytest.raises(ValueError):
        Ramp(0, 3, "cosine")


def test_train_schedule_values():
    sc = ScheduleConfig(epochs=12, warmup_epochs=2, eps=4.0, eps_train_extra=0.1, ramp_start=0, ramp_length=None,
                        ramp_fraction=0.5, lr=1e-3, warmup_lr=5e-4, lr_decay_epochs=[8, 10], lr_decay_factor=0.5)
    lc = LossConfig(kappa_start=1.0, kappa_end=0.5, lambda_rob=0.5, lambda_reg=0.001, beta_start=1.0, beta_end=0.0)
    s = TrainSchedule(sc, lc, steps_per_epoch=10)
    w = s.values(1, 9)
    assert w.warmup and w.eps == 0 and w.kappa == 1.0
    first = s.values(2, 0)
    assert not first.warmup and first.eps == 0 and first.lambda_rob == 0 and first.beta == 1.0
    mid = s.values(4, 5)   # 25 of 50 ramp steps
    assert mid.progress == pytest.approx(0.5)
    assert mid.eps == pytest.approx(2.05) and mid.kappa == pytest.approx(0.75)
    assert mid.lambda_rob == pytest.approx(0.25) and mid.lambda_reg == pytest.approx(0.0005)
    assert mid.beta == pytest.approx(0.5)
    end = s.values(7, 0)
    assert end.eps == pytest.approx(4.1) and end.kappa == pytest.approx(0.5) and end.beta == 0.0
    assert [s.lr(e) for e in (0, 1, 2, 7, 8, 9, 10, 11)] == pytest.approx(
        [5e-4, 5e-4, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


def test_ramp_in_epochs_with_offset():
    sc = ScheduleConfig(epochs=10, warmup_epochs=1, eps=1.0, eps_train_extra=0.0, ramp_start=1.5, ramp_length=2)
    s = TrainSchedule(sc, LossConfig(), steps_per_epoch=4)
    # ramp from step 6 to step 14 after the warm-up (epoch 1 batch 0 is step 0)
    assert s.values(2, 2).eps == 0.0
    assert s.values(3, 0).eps == pytest.approx(2 / 8)
    assert s.values(4, 2).eps == 1.0
