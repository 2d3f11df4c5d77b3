"""The training configuration: nested dataclasses with defaults; YAML files hold overrides only.

Load with ``qa_lirpa.config.load_config(TrainConfig, "mnist_8bit", ["schedule.eps=4"])``. Every key
is documented here; unknown keys are errors (:class:`qa_lirpa.config.ConfigError`).

Units: ``eps`` is in pixel units on the 0..255 grid (eps=1 means +-1 grey level), as in the QA-IBP
paper. Epoch counts include the warm-up epochs (epoch 0 is the first epoch of the run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from ..config import ConfigError

LossKind = Literal["gowal", "qaibp", "crown_ibp"]
RampShape = Literal["linear", "smoothed"]


@dataclass
class DataConfig:
    """Which dataset, where, and how much of it."""

    name: str = "synthetic"          # mnist | fashion-mnist | cifar10 | synthetic
    root: Optional[str] = None       # folder with the standard files (None: the packaged source)
    augment: Optional[str] = None    # None | crop | flip | crop+flip
    crop_padding: int = 4            # zero padding of the random crop, pixels
    train_subset: int = 0            # use the first N training samples (0: all)
    test_subset: int = 0             # use the first N test samples everywhere (0: all)


@dataclass
class ModelConfig:
    """Arguments of :func:`qa_lirpa.models.build_model` (the input shape and classes come from data)."""

    arch: str = "mlp"                # mlp | aaai21_mlp | small_conv | mnist_conv | fashion_conv | cifar_conv
                                     # | resnet_mini | resnet_small (residual QNN graphs)
    bits: int = 8                    # bit width of weights, biases and activations (4, 6 or 8)
    hidden: List[int] = field(default_factory=lambda: [64])   # hidden sizes of `mlp`
    act_int_bits: Optional[int] = None   # integer bits of hidden activations (None: per arch)
    rounding: Literal["half_up", "half_even", "half_down", "down", "up"] = "half_up"   # QuantSpec.rounding
    out_bits: Optional[int] = None   # requantize outputs (None: keep the accumulator, as the paper)
    batchnorm: bool = False          # residual archs: BatchNorm folded into each quantized conv
    # Train the float network (every quantizer off: no rounding, no saturation, ReLU activations),
    # then quantize post-training (PTQ): the checkpoint is the same fixed-point QNN, its weights
    # rounded into their formats. Evaluation reports the quantized network, plus float_* metrics.
    float_train: bool = False


@dataclass
class LossConfig:
    """The certified training loss.

    * ``gowal``: ``kappa * CE(clean) + (1 - kappa) * CE(worst-case logits)`` (Gowal et al. 2018),
      kappa going from ``kappa_start`` to ``kappa_end`` during the eps ramp.
    * ``qaibp``: the official QA-IBP code, ``CE(clean) + lambda_rob * mean_k hinge(margin - LB(z_y - z_k))
      + lambda_reg * sum_layers mean(ub - lb)``, both lambdas ramped from 0 with eps.
    * ``crown_ibp``: the kappa loss of ``gowal`` on ``beta * LB_CROWN-IBP + (1 - beta) * LB_IBP``
      (Zhang et al. 2020), beta going from ``beta_start`` to ``beta_end`` during the ramp.
    """

    kind: LossKind = "gowal"        # gowal | qaibp | crown_ibp
    kappa_start: float = 1.0
    kappa_end: float = 0.5
    lambda_rob: float = 0.5
    lambda_reg: float = 0.001
    margin: float = 0.2
    beta_start: float = 1.0
    beta_end: float = 0.0


@dataclass
class ScheduleConfig:
    """Epochs, epsilon ramp and optimiser (AdamW with step decay)."""

    epochs: int = 10
    warmup_epochs: int = 0           # plain quantization-aware training (eps 0, clean CE) first
    eps: float = 1.0                 # target radius, pixel units
    eps_train_extra: float = 0.1     # train up to eps + this (paper: +0.1 survives input rounding)
    ramp_start: float = 0.0          # epochs after the warm-up before the ramp starts
    ramp_length: Optional[float] = None   # ramp length in epochs (None: ramp_fraction of the rest)
    ramp_fraction: float = 0.9       # used when ramp_length is None (paper: first 90% of steps)
    ramp_shape: RampShape = "linear"  # linear | smoothed (auto_LiRPA's SmoothedScheduler)
    batch_size: int = 256
    lr: float = 1e-3
    warmup_lr: Optional[float] = None     # learning rate of the warm-up epochs (None: lr)
    weight_decay: float = 5e-5
    lr_decay_epochs: List[int] = field(default_factory=list)   # absolute epochs: lr *= factor
    lr_decay_factor: float = 0.1
    grad_clip: float = 10.0          # max gradient norm (0: off)
    max_minutes: float = 0.0         # stop training gracefully after this wall time (0: no limit)


@dataclass
class EvalConfig:
    """Per-epoch and final evaluation: clean (exact integer), IBP-certified (float64), PGD."""

    eval_every: int = 1              # evaluate every N epochs (and always after the last)
    test_subset: int = 1000          # per-epoch evaluation on the first N test samples (0: all)
    batch_size: int = 500
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_step_size: Optional[float] = None   # pixel units (None: max(0.5, eps / 4))
    final: bool = True               # evaluate the whole test set after training
    final_pgd: bool = True           # include PGD in the final evaluation


@dataclass
class TrainConfig:
    """Everything ``qa-lirpa train`` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: Optional[str] = None    # None: runs/<config name>
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0                 # torch CPU threads (0: all cores)
    progress: bool = True            # tqdm bar per epoch (on a terminal)
    resume: bool = False             # continue from out_dir/checkpoint.pt


# keys that may differ between a run and its resumption (they do not change the result)
RUNTIME_KEYS = ("resume", "progress", "device", "threads", "out_dir", "schedule.max_minutes",
                "eval.final", "eval.final_pgd")


def validate(cfg: TrainConfig) -> None:
    """Range checks the types cannot express; raises :class:`qa_lirpa.config.ConfigError`."""
    s, e = cfg.schedule, cfg.eval
    checks = [
        (s.epochs >= 1, "schedule.epochs must be >= 1"),
        (0 <= s.warmup_epochs <= s.epochs, "schedule.warmup_epochs must be in 0..epochs"),
        (s.eps >= 0 and s.eps_train_extra >= 0, "schedule.eps and eps_train_extra must be >= 0"),
        (s.ramp_start >= 0, "schedule.ramp_start must be >= 0"),
        (s.ramp_length is None or s.ramp_length >= 0, "schedule.ramp_length must be >= 0"),
        (0 <= s.ramp_fraction <= 1, "schedule.ramp_fraction must be in [0, 1]"),
        (s.batch_size >= 1 and e.batch_size >= 1, "batch sizes must be >= 1"),
        (s.lr > 0, "schedule.lr must be > 0"),
        (e.eval_every >= 1, "eval.eval_every must be >= 1"),
        (e.pgd_steps >= 0 and e.pgd_restarts >= 0, "eval.pgd_steps and pgd_restarts must be >= 0"),
        (cfg.model.bits in range(2, 17), "model.bits must be in 2..16"),
        (cfg.threads >= 0, "threads must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


__all__ = ["DataConfig", "ModelConfig", "LossConfig", "ScheduleConfig", "EvalConfig", "TrainConfig",
           "RUNTIME_KEYS", "validate"]
