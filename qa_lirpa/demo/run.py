"""The demo's plain data: what it runs (:class:`DemoOptions`), one verified instance
(:class:`Instance`) and everything the report needs (:class:`DemoRun`). Both
:mod:`.pipeline` (which fills them) and :mod:`.report` (which reads them) import them from here."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DemoOptions:
    """What ``qa-lirpa demo`` runs; the defaults are ``make demo``."""

    out: Path = Path("runs/demo")
    config: str = "demo"                 # shipped config name or YAML path
    overrides: list[str] = field(default_factory=list)   # key=value on the training config
    samples: range = range(0, 100)       # test images that become instances
    timeout: float = 10.0                # per instance, seconds (as in instances.csv)
    category: str = "qnn_mnist"          # picks vnncomp_configs/<category>.yaml
    retrain: bool = False
    via_script: bool = False             # run_instance.sh per instance instead of in-process
    script_checks: int = 3               # instances re-run through run_instance.sh (in-process mode)


@dataclass
class Instance:
    """One verified instance, with the independent checks of stage 5."""

    index: int
    sample: int
    label: int
    onnx: str                            # paths relative to the benchmark folder
    vnnlib: str
    result_file: str
    result: str
    time_s: float
    predicted: int = -1
    misclassified: bool = False
    cex_problem: str | None = None       # for sat: None when onnxruntime confirms the counterexample
    script_result: str | None = None     # the word run_instance.sh wrote in a cross-check


@dataclass
class DemoRun:
    """Everything the report needs."""

    opts: DemoOptions
    cfg: Any = None
    eps: float = 0.0
    onnx_path: Path | None = None
    folder: Path | None = None
    input_shape: tuple[int, ...] = ()
    trained: str = ""                    # "trained" / "resumed" / "reused"
    final: dict[str, Any] = field(default_factory=dict)
    n_test: int = 0
    clean_acc: float = 0.0
    onnx_exact: bool = False
    instances: list[Instance] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


__all__ = ["DemoOptions", "DemoRun", "Instance"]
