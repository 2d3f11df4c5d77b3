"""The QA-IBP training loop: warm-up, eps ramp, certified loss, per-epoch evaluation, checkpoints.

:func:`train` runs a :class:`~qa_lirpa.train.config.TrainConfig` and writes into ``out_dir``:
``checkpoint.pt`` (model + optimizer + epoch + RNG states + metrics + config, loadable with
:func:`qa_lirpa.models.load_model`), ``config.yaml`` (the effective config), ``metrics.csv``,
``training_curves.png`` and, after the final evaluation, ``final.json``. Every file is written
atomically. A resumed run (``resume=True``) continues from the last completed epoch and reaches the
same state as an uninterrupted one (data order and augmentation depend only on (seed, epoch)).
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import yaml

from ..base.device import DeviceError, resolve_device
from ..config import ConfigError, from_dict, to_dict
from ..models import QNN, build_model, load_checkpoint, save_checkpoint
from ..nn import set_float_mode
from .bounds import MarginBounds
from .config import RUNTIME_KEYS, TrainConfig, validate
from .datasets import ArrayDataset, load_dataset, make_loader
from .evaluate import Evaluator
from .losses import crown_ibp_loss, gowal_loss, plain_loss, qaibp_loss
from .records import atomic_write_text, plot_training_curves, write_json, write_metrics_csv
from .schedules import StepValues, TrainSchedule

CHECKPOINT = "checkpoint.pt"


@dataclass
class RunResult:
    """What :func:`train` did."""

    out_dir: Path
    model: QNN
    epochs_done: int
    metrics: list[dict[str, Any]]
    final: dict[str, Any] | None
    stopped: str | None = None          # "time budget" / "stop_after" / None (completed)
    extra: dict[str, Any] = field(default_factory=dict)


def set_threads(n: int) -> None:
    """Torch CPU threads: ``n``, or all cores when 0."""
    torch.set_num_threads(n if n > 0 else max(1, os.cpu_count() or 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _subset(ds: ArrayDataset, n: int) -> ArrayDataset:
    return ds.subset(slice(0, n)) if 0 < n < len(ds) else ds


def load_data(cfg: TrainConfig) -> tuple[ArrayDataset, ArrayDataset]:
    d = cfg.data
    train = _subset(load_dataset(d.name, "train", d.root), d.train_subset)
    test = _subset(load_dataset(d.name, "test", d.root), d.test_subset)
    return train, test


def make_model(cfg: TrainConfig, in_shape, n_classes: int) -> QNN:
    """The model to train: a QNN, with its quantizers off when ``model.float_train``."""
    m = cfg.model
    model = build_model(m.arch, in_shape=in_shape, n_classes=n_classes, bits=m.bits, hidden=m.hidden,
                        act_int_bits=m.act_int_bits, rounding=m.rounding, out_bits=m.out_bits)
    return set_float_mode(model, m.float_train)


def _rng_state() -> dict[str, Any]:
    """The RNG states in types that ``torch.load(weights_only=True)`` accepts (no numpy objects)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": [int(version), [int(k) for k in internal], gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = list(torch.cuda.get_rng_state_all())
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    version, internal, gauss = st["python"]
    random.setstate((int(version), tuple(int(k) for k in internal), gauss))
    npst = st["numpy"]
    if isinstance(npst, dict):
        keys = np.asarray(npst["keys"].numpy() if torch.is_tensor(npst["keys"]) else npst["keys"], np.uint32)
        npst = (npst["name"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    np.random.set_state(npst)
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        name = prefix + k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, name + ".")
        elif va != vb and name not in RUNTIME_KEYS:
            keys.append(name)
    return keys


class Trainer:
    """One training run; see :func:`train`."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        validate(cfg)
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out_dir or "runs/train")
        set_threads(cfg.threads)
        try:
            self.device = resolve_device(cfg.device)
        except DeviceError as e:
            raise ConfigError(f"device: {e}") from None
        seed_everything(cfg.seed)
        self.train_ds, self.test_ds = load_data(cfg)
        self.n_classes = max(len(self.train_ds.classes), int(self.train_ds.labels.max()) + 1)
        self.model = make_model(cfg, self.train_ds.image_shape, self.n_classes).to(self.device)
        s = cfg.schedule
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        self.loader = make_loader(self.train_ds, s.batch_size, shuffle=True, seed=cfg.seed,
                                  augment=cfg.data.augment, device=self.device,
                                  drop_last=len(self.train_ds) >= s.batch_size,
                                  crop_padding=cfg.data.crop_padding)
        self.schedule = TrainSchedule(s, cfg.loss, len(self.loader))
        example = self.train_ds.images[:1].to(self.device, torch.float32)
        self.bounds = MarginBounds(self.model, example, self.n_classes, quant_slack=0.0)
        self.evaluator = Evaluator(self.model, example, self.n_classes, self.device)
        # float training: also certify the float network itself (what a float verifier would claim)
        self.float_evaluator = (Evaluator(self.model, example, self.n_classes, self.device, quantized=False)
                                if cfg.model.float_train else None)
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None

    # ----- one step ----------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor, v: StepValues
             ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor | None]:
        """The step's loss, its logged parts, the clean logits and the lower margin bounds
        (None in warm-up)."""
        logits = self.model(x)
        if v.warmup:
            total, parts = plain_loss(logits, y)
            return total, parts, logits, None
        lc = self.cfg.loss
        if lc.kind == "crown_ibp" and v.beta > 0:
            clb, ilb = self.bounds.lower(x, y, v.eps, "CROWN-IBP")
            total, parts = crown_ibp_loss(logits, y, clb, ilb, v.kappa, v.beta)
            return total, parts, logits, v.beta * clb + (1 - v.beta) * ilb
        lb = self.bounds.lower(x, y, v.eps, "IBP")
        if lc.kind == "qaibp":
            total, parts = qaibp_loss(logits, y, lb, self.bounds.hidden_widths(), v.lambda_rob,
                                      v.lambda_reg, lc.margin)
        else:
            total, parts = gowal_loss(logits, y, lb, v.kappa)
        return total, parts, logits, lb

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm import tqdm

        cfg, model = self.cfg, self.model
        for g in self.opt.param_groups:
            g["lr"] = self.schedule.lr(epoch)
        model.train()
        self.loader.set_epoch(epoch)
        sums = {"loss": 0.0, "ce": 0.0, "robust": 0.0, "width": 0.0, "clean": 0, "cert": 0, "n": 0}
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}", leave=False,
                   disable=None if cfg.progress else True, file=sys.stderr)
        v = self.schedule.values(epoch, 0)
        for b, (x, y) in enumerate(bar):
            v = self.schedule.values(epoch, b)
            total, parts, logits, lb = self.loss(x, y, v)
            if not math.isfinite(total.item()):
                raise FloatingPointError(f"epoch {epoch + 1}, batch {b}: the loss is not finite")
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.schedule.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.schedule.grad_clip)
            self.opt.step()
            n = y.shape[0]
            sums["n"] += n
            sums["loss"] += total.item() * n
            for k in ("ce", "robust", "width"):
                sums[k] += parts.get(k, 0.0) * n
            with torch.no_grad():
                sums["clean"] += int((logits.argmax(1) == y).sum())
                sums["cert"] += int((lb > 0).all(1).sum()) if lb is not None else 0
            bar.set_postfix(loss=f"{total.item():.3f}", eps=f"{v.eps:.2f}")
        n = max(sums["n"], 1)
        return {"epoch": epoch, "step": (epoch + 1) * len(self.loader), "lr": self.schedule.lr(epoch),
                "eps": v.eps, "kappa": v.kappa, "lambda_rob": v.lambda_rob, "lambda_reg": v.lambda_reg,
                "beta": v.beta, "loss": sums["loss"] / n, "ce": sums["ce"] / n,
                "robust": sums["robust"] / n, "width": sums["width"] / n,
                "train_clean_acc": sums["clean"] / n, "train_cert_acc": sums["cert"] / n}

    # ----- evaluation ----------------------------------------------------------------------
    def evaluate(self, n: int, pgd: bool = True, seed: int = 0):
        e = self.cfg.eval
        images, labels = self.test_ds.images, self.test_ds.labels
        if 0 < n < len(labels):
            images, labels = images[:n], labels[:n]
        return self.evaluator.evaluate(self.model, images, labels, self.cfg.schedule.eps,
                                       batch_size=e.batch_size, pgd_steps=e.pgd_steps,
                                       pgd_restarts=e.pgd_restarts, pgd_step_size=e.pgd_step_size,
                                       pgd=pgd and e.pgd_restarts > 0, seed=seed)

    # ----- state -------------------------------------------------------------------------
    def save(self) -> None:
        extra = {"optimizer": self.opt.state_dict(),
                 "scheduler": {"epoch": self.epoch, "steps_per_epoch": len(self.loader)},
                 "epoch": self.epoch, "rng": _rng_state(), "metrics": self.metrics,
                 "config": to_dict(self.cfg), "final": self.final}
        save_checkpoint(self.out / CHECKPOINT, self.model, extra)

    def write_records(self) -> None:
        write_metrics_csv(self.out / "metrics.csv", self.metrics)
        if self.metrics:
            c = self.cfg
            title = f"{c.data.name} {c.model.arch} {c.model.bits}-bit, eps={c.schedule.eps:g}"
            plot_training_curves(self.out / "training_curves.png", self.metrics, title)

    def restore(self) -> None:
        """Load ``out_dir/checkpoint.pt`` (the config must match except runtime keys)."""
        path = self.out / CHECKPOINT
        payload = load_checkpoint(path)
        saved = payload.get("config")
        if saved is None:
            raise ConfigError(f"{path}: the checkpoint has no training state to resume from")
        # keys added to TrainConfig after the checkpoint was written count as their defaults
        saved = to_dict(from_dict(TrainConfig, saved, source=str(path)))
        diff = _config_diff(saved, to_dict(self.cfg))
        if diff:
            raise ConfigError(f"{path}: cannot resume, the config differs in {', '.join(diff)}")
        self.model.load_state_dict(payload["state_dict"])
        self.opt.load_state_dict(payload["optimizer"])
        self.epoch, self.metrics = int(payload["epoch"]), list(payload["metrics"])
        self.final = payload.get("final")
        _set_rng_state(payload["rng"])

    # ----- the run ---------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> RunResult:
        """Train from ``self.epoch`` to the configured number of epochs (or ``stop_after`` epochs
        in this call, or until ``max_minutes``), then evaluate the whole test set."""
        cfg, s = self.cfg, self.cfg.schedule
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        t_start, done_here, stopped, last_epoch_s = time.perf_counter(), 0, None, 0.0
        while self.epoch < s.epochs:
            elapsed = time.perf_counter() - t_start
            if s.max_minutes > 0 and elapsed + last_epoch_s > 60 * s.max_minutes:
                stopped = "time budget"
                self.log(f"stopping: the next epoch would exceed max_minutes={s.max_minutes:g}")
                break
            if stop_after is not None and done_here >= stop_after:
                stopped = "stop_after"
                break
            t0 = time.perf_counter()
            row = self.train_epoch(self.epoch)
            row["epoch_seconds"] = time.perf_counter() - t0
            if (self.epoch + 1) % cfg.eval.eval_every == 0 or self.epoch + 1 == s.epochs:
                res = self.evaluate(cfg.eval.test_subset, seed=cfg.seed * 100003 + self.epoch)
                row.update({"test_n": res.n, "test_clean_acc": res.clean_acc, "test_cert_acc": res.cert_acc,
                            "test_pgd_acc": res.pgd_acc, "eval_seconds": res.seconds})
            last_epoch_s = time.perf_counter() - t0
            self.metrics.append(row)
            self.epoch += 1
            done_here += 1
            self.log(_epoch_line(row, s.epochs))
            self.write_records()
            self.save()
        if stopped != "stop_after" and cfg.eval.final:
            self.final_evaluation(stopped, time.perf_counter() - t_start)
        self.write_records()
        return RunResult(self.out, self.model, self.epoch, self.metrics, self.final, stopped)

    def final_evaluation(self, stopped: str | None, wall_seconds: float = 0.0) -> None:
        """Evaluate the whole (configured) test set; writes ``final.json``. ``train_seconds`` sums the
        training time of all epochs (without evaluation), ``wall_seconds`` is this call's run time."""
        e = self.cfg.eval
        res = self.evaluate(0, pgd=e.final_pgd, seed=self.cfg.seed * 100003 + 99991)
        float_part: dict[str, Any] = {}
        if self.float_evaluator is not None:
            fres = self.float_evaluator.evaluate(self.model, self.test_ds.images, self.test_ds.labels,
                                                 self.cfg.schedule.eps, batch_size=e.batch_size, pgd=False)
            float_part = {"float_clean_acc": fres.clean_acc, "float_cert_acc": fres.cert_acc}
            self.log(f"float network before quantization: clean {100 * fres.clean_acc:.2f}%, "
                     f"IBP-certified {100 * fres.cert_acc:.2f}% (the numbers below are after PTQ)")
        self.final = {**res.as_dict(), **float_part, "eps": self.cfg.schedule.eps, "epochs_done": self.epoch,
                      "epochs": self.cfg.schedule.epochs, "stopped": stopped,
                      "train_seconds": sum(r.get("epoch_seconds", 0.0) for r in self.metrics),
                      "wall_seconds": wall_seconds}
        pgd = f", PGD {100 * res.pgd_acc:.2f}%" if res.pgd_acc is not None else ""
        self.log(f"final ({res.n} test samples, eps={self.cfg.schedule.eps:g}): clean {100 * res.clean_acc:.2f}%, "
                 f"IBP-certified {100 * res.cert_acc:.2f}%{pgd} [{res.seconds:.0f} s]")
        write_json(self.out / "final.json", self.final)
        self.save()


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {r['epoch'] + 1}/{epochs} eps {r['eps']:.3f} lr {r['lr']:.2g} loss {r['loss']:.4f} "
            f"(ce {r['ce']:.4f}, robust {r['robust']:.4f}) train clean {100 * r['train_clean_acc']:.1f}% "
            f"cert {100 * r['train_cert_acc']:.1f}% [{r['epoch_seconds']:.1f} s]")
    if r.get("test_n"):
        pgd = f" pgd {100 * r['test_pgd_acc']:.1f}%" if r.get("test_pgd_acc") is not None else ""
        line += (f" | test clean {100 * r['test_clean_acc']:.1f}%{pgd} "
                 f"cert {100 * r['test_cert_acc']:.1f}% [{r['eval_seconds']:.1f} s]")
    return line


def train(cfg: TrainConfig, *, overwrite: bool = False, stop_after: int | None = None,
          log: Callable[[str], None] = print) -> RunResult:
    """Run (or resume, with ``cfg.resume``) a training run; see the module docstring.

    Without ``resume``, an ``out_dir`` that already holds a checkpoint is an error unless
    ``overwrite``. ``stop_after`` ends this call after that many epochs (as an interruption would;
    no final evaluation).
    """
    trainer = Trainer(cfg, log=log)
    ckpt = trainer.out / CHECKPOINT
    if cfg.resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt}")
        trainer.restore()
        log(f"resuming from {ckpt} after epoch {trainer.epoch}")
    elif ckpt.exists() and not overwrite:
        raise ConfigError(f"{trainer.out} already holds a checkpoint: resume it (--resume), "
                          f"overwrite it (--overwrite) or choose another out_dir")
    return trainer.run(stop_after=stop_after)


__all__ = ["CHECKPOINT", "RunResult", "Trainer", "train", "resolve_device", "set_threads", "seed_everything",
           "load_data", "make_model"]
