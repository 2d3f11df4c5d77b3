"""QA-IBP certified training of quantized networks (``qa-lirpa train``).

Modules: :mod:`.config` (TrainConfig), :mod:`.datasets` (offline datasets as raw pixels),
:mod:`.schedules` (eps ramp on auto_LiRPA's schedulers, coefficients, lr), :mod:`.bounds` (margin
bounds through auto_LiRPA and by hand), :mod:`.losses`, :mod:`.attack` (PGD checked exactly),
:mod:`.evaluate` (clean / IBP-certified / PGD accuracy), :mod:`.trainer` (the loop, checkpoints,
resume), :mod:`.records` (metrics.csv, final.json, training_curves.png), :mod:`.cli`.

Typical use::

    from qa_lirpa.train import load_train_config, train
    result = train(load_train_config("mnist_8bit", ["schedule.eps=4"], "runs/mnist_eps4"))

Importing this package does not import auto_LiRPA (the trainer does, when it runs).
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": ".config", "validate": ".config",
    "load_train_config": ".cli",
    "train": ".trainer", "Trainer": ".trainer", "RunResult": ".trainer",
    "Evaluator": ".evaluate", "EvalResult": ".evaluate",
    "MarginBounds": ".bounds", "spec_matrix": ".bounds", "torch_ibp_margins": ".bounds",
    "pgd_attack": ".attack",
    "load_dataset": ".datasets", "make_loader": ".datasets",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
