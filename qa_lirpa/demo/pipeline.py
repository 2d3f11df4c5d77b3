"""``qa-lirpa demo``: the main job end to end on the built-in default.

Six stages, each announced with its timing:

1. **train**: QA-IBP training of a small MNIST QNN (``qa_lirpa/configs/demo.yaml``) with the
   trainer of ``qa-lirpa train``, into ``OUT/train/``. A finished checkpoint with the same config is
   reused, an interrupted one is resumed; ``--retrain`` starts afresh.
2. **export**: the checkpoint as ``OUT/model.onnx``; onnxruntime's outputs on the whole test set are
   compared with the exact integer semantics, and give the clean accuracy.
3. **benchmark**: ``OUT/vnncomp/`` (``onnx/``, ``vnnlib/``, ``instances.csv``) for the first N test
   images at the training eps, written by ``qa-lirpa benchmark make``'s code.
4. **verify**: every instance decided by ``run_instance`` (what ``run_instance.sh`` runs), through
   ``qa-lirpa benchmark run``'s loop in this process, or (``--via-script``) by running
   ``vnncomp_configs/run_instance.sh`` once per instance. Verdicts go to ``OUT/vnncomp/results/``.
5. **check**: each verdict file is read back; every ``sat`` counterexample is run in onnxruntime and
   checked against its property with zero tolerance; the clean images are classified by
   onnxruntime; a few instances are run again through ``run_instance.sh`` and must agree.
6. **report**: the table on stdout, ``OUT/results.md``, ``OUT/results.csv``, ``OUT/summary.json``
   and the plot ``OUT/verification.png``.

The exit status is 0 when every check holds, 1 when one fails (an unconfirmed counterexample, a
verdict the script contradicts, a misclassified image reported ``unsat``, an ``error`` verdict, or
onnxruntime disagreeing with the integer semantics).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from ..base.errors import UserError
from ..benchfolder import make_folder, read_instances, run_folder
from ..config import ConfigError, from_dict, to_dict
from ..models import load_checkpoint, load_model
from ..nn import integer_forward
from ..onnx import export_onnx
from ..train import load_train_config
from ..train.config import RUNTIME_KEYS, TrainConfig
from ..train.datasets import load_dataset
from ..train.trainer import CHECKPOINT, train
from . import report
from .checks import counterexample_problem, onnx_outputs, read_result, run_script, violates_at_centre
from .run import DemoOptions, DemoRun, Instance

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_INSTANCE = ROOT / "vnncomp_configs" / "run_instance.sh"
N_STAGES = 6


class Stages:
    """Prints ``[k/6] name: what`` before and the elapsed time after each stage."""

    def __init__(self, run: DemoRun, out: TextIO) -> None:
        self.run, self.out, self.k = run, out, 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __call__(self, name: str, what: str, fn, *args):
        self.k += 1
        self.say(f"[{self.k}/{N_STAGES}] {name}: {what}")
        t0 = time.perf_counter()
        value = fn(*args)
        dt = time.perf_counter() - t0
        self.run.stage_seconds[name] = dt
        self.say(f"      {name} done in {dt:.1f} s")
        return value


# ----- 1. train ------------------------------------------------------------------------------
def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two config dicts, runtime keys excepted."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for k, v in d.items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return items

    a, b = flat(saved), flat(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RUNTIME_KEYS)


def _existing_run(ckpt: Path, cfg, say) -> str | None:
    """"reuse" / "resume" when ``ckpt`` holds this config's finished / unfinished run, else None."""
    try:
        payload = load_checkpoint(ckpt)
        # keys added to TrainConfig since the checkpoint was saved count as their defaults
        saved = to_dict(from_dict(TrainConfig, payload.get("config") or {}, source=str(ckpt)))
    except (ValueError, ConfigError) as e:
        say(f"      {e}: training afresh")
        return None
    changes = config_changes(saved, to_dict(cfg))
    if changes:
        shown = ", ".join(changes[:4]) + (", ..." if len(changes) > 4 else "")
        say(f"      {ckpt} was trained with another config ({shown}): training afresh")
        return None
    if int(payload.get("epoch", 0)) >= cfg.schedule.epochs and payload.get("final"):
        return "reuse"
    return "resume"


def train_stage(run: DemoRun, say) -> Path:
    cfg = run.cfg
    ckpt = Path(cfg.out_dir) / CHECKPOINT
    mode = None if run.opts.retrain or not ckpt.exists() else _existing_run(ckpt, cfg, say)
    if mode == "reuse":
        say(f"      reusing the finished run in {cfg.out_dir} (--retrain to train again)")
        run.trained = "reused"
        run.final = dict(load_checkpoint(ckpt)["final"])
    else:
        cfg.resume = mode == "resume"
        run.trained = "resumed" if cfg.resume else "trained"
        def log(line: str) -> None:
            say(f"      {line}")

        try:
            result = train(cfg, overwrite=True, log=log)
        except ConfigError as e:
            if not cfg.resume:
                raise
            say(f"      {e}: training afresh")
            cfg.resume, run.trained = False, "trained"
            result = train(cfg, overwrite=True, log=log)
        run.final = dict(result.final or {})
    return ckpt


# ----- 2. export -----------------------------------------------------------------------------
def export_stage(run: DemoRun, ckpt: Path, say) -> None:
    cfg = run.cfg
    test = load_dataset(cfg.data.name, "test", cfg.data.root)
    run.input_shape = tuple(int(d) for d in test.images.shape[1:])
    model = load_model(ckpt)
    run.onnx_path = run.opts.out / "model.onnx"
    export_onnx(model, run.onnx_path, run.input_shape)
    ort, exact = [], []
    with torch.no_grad():
        for i in range(0, len(test.labels), 1000):
            batch = test.images[i:i + 1000]
            ort.append(onnx_outputs(run.onnx_path, batch.numpy(), run.input_shape))
            exact.append(integer_forward(model, batch.double()).numpy())
    ort_out, exact_out = np.concatenate(ort), np.concatenate(exact)
    run.n_test = len(test.labels)
    run.clean_acc = float((ort_out.argmax(1) == test.labels.numpy()).mean())
    run.onnx_exact = bool(np.array_equal(ort_out, exact_out))
    if not run.onnx_exact:
        run.problems.append("onnxruntime's outputs differ from the exact integer semantics")
    say(f"      {run.onnx_path}: onnxruntime {'equals' if run.onnx_exact else 'DIFFERS FROM'} the "
        f"integer semantics on all {run.n_test} test images; clean accuracy {100 * run.clean_acc:.2f}%")


# ----- 3. benchmark folder ---------------------------------------------------------------------
def bench_stage(run: DemoRun, say) -> None:
    folder = run.opts.out / "vnncomp"
    if folder.exists() and any(folder.iterdir()) and not (folder / "instances.csv").exists():
        raise UserError(f"{folder} exists and is not a benchmark folder: move it or choose another --out")
    # built beside, then swapped in: the folder is always complete, and stale instances and
    # verdicts of an earlier run go
    tmp = run.opts.out / ".vnncomp.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    cfg, s = run.cfg, run.opts.samples
    make_folder(str(run.onnx_path), cfg.data.name, s, [run.eps], str(tmp), run.opts.timeout, cfg.data.root)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    run.folder = folder
    say(f"      {folder}: {len(s)} instances (test images {s.start}..{s.stop - 1}, eps {run.eps:g}, "
        f"timeout {run.opts.timeout:g} s, category {run.opts.category})")


# ----- 4. verify -----------------------------------------------------------------------------
def _result_rel(vnn_rel: str, results: str = "results") -> str:
    return f"{results}/{Path(vnn_rel).stem}.txt"


def verify_stage(run: DemoRun, say) -> None:
    labels = load_dataset(run.cfg.data.name, "test", run.cfg.data.root).labels
    if run.opts.via_script:
        rows = _verify_via_script(run)
    else:
        rows = run_folder(str(run.folder), run.opts.category)
    instances = read_instances(run.folder)
    if len(rows) != len(instances) or len(rows) != len(run.opts.samples):
        raise RuntimeError(f"{run.folder}: {len(rows)} verdicts for {len(instances)} instances")
    for k, (row, sample) in enumerate(zip(rows, run.opts.samples)):
        run.instances.append(Instance(k, sample, int(labels[sample]), row["onnx"], row["vnnlib"],
                                      _result_rel(row["vnnlib"]), row["result"], float(row["time_s"])))


def _verify_via_script(run: DemoRun) -> list[dict]:
    _require_script()
    rows = []
    bar = tqdm(read_instances(run.folder), desc="run_instance.sh", unit="inst", file=sys.stderr)
    for onnx_rel, vnn_rel, timeout in bar:
        result = run.folder / _result_rel(vnn_rel)
        seconds, err = run_script(RUN_INSTANCE, run.opts.category, run.folder / onnx_rel,
                                  run.folder / vnn_rel, result, timeout)
        word = read_result(result)[0]
        if err:
            bar.write(f"      {vnn_rel}: run_instance.sh: {err}")
        rows.append({"onnx": onnx_rel, "vnnlib": vnn_rel, "result": word, "time_s": round(seconds, 3)})
    return rows


def _require_script() -> None:
    if not RUN_INSTANCE.is_file() or not (ROOT / ".venv" / "bin" / "python").exists():
        raise UserError(f"{RUN_INSTANCE} (with .venv beside it) is needed: run from a qa-lirpa checkout "
                        f"after 'make install'")


# ----- 5. checks -------------------------------------------------------------------------------
def check_stage(run: DemoRun, say) -> None:
    images = load_dataset(run.cfg.data.name, "test", run.cfg.data.root).images
    idx = [inst.sample for inst in run.instances]
    outputs = onnx_outputs(run.onnx_path, images[idx].numpy(), run.input_shape)
    labels = np.array([inst.label for inst in run.instances])
    wrong = violates_at_centre(outputs, labels)
    for inst, out, bad in zip(run.instances, outputs, wrong):
        inst.predicted, inst.misclassified = int(out.argmax()), bool(bad)
        if inst.result == "sat":
            inst.cex_problem = counterexample_problem(run.folder / inst.onnx, run.folder / inst.vnnlib,
                                                      run.folder / inst.result_file, run.input_shape)
            if inst.cex_problem:
                run.problems.append(f"{inst.result_file}: {inst.cex_problem}")
        if inst.misclassified and inst.result == "unsat":
            run.problems.append(f"{inst.result_file}: unsat, but the clean image itself violates the property")
        if inst.result in ("error", "missing"):
            run.problems.append(f"{inst.result_file}: {inst.result}")
    sats = [i for i in run.instances if i.result == "sat"]
    confirmed = sum(i.cex_problem is None for i in sats)
    say(f"      {confirmed} of {len(sats)} sat counterexamples confirmed by onnxruntime (zero tolerance); "
        f"{int(wrong.sum())} of {len(wrong)} clean images misclassified")
    if not run.opts.via_script and run.opts.script_checks > 0:
        _script_cross_check(run, say)


def _script_cross_check(run: DemoRun, say) -> None:
    """Re-run a few instances (sat ones first) through run_instance.sh; decided verdicts must agree."""
    if not RUN_INSTANCE.is_file() or not (ROOT / ".venv" / "bin" / "python").exists():
        say("      run_instance.sh cross-check skipped: no vnncomp_configs/ and .venv here")
        return
    chosen = sorted(run.instances, key=lambda i: (i.result != "sat", i.result != "unsat", i.index))
    chosen = chosen[:run.opts.script_checks]
    agree = 0
    for inst in chosen:
        rel = _result_rel(inst.vnnlib, "results_script")
        _, err = run_script(RUN_INSTANCE, run.opts.category, run.folder / inst.onnx,
                            run.folder / inst.vnnlib, run.folder / rel, run.opts.timeout)
        inst.script_result = read_result(run.folder / rel)[0]
        decided = {inst.result, inst.script_result} <= {"sat", "unsat"}
        if inst.script_result == inst.result:
            agree += 1
        elif decided:
            run.problems.append(f"{inst.vnnlib}: run_instance.sh says {inst.script_result}, "
                                f"in-process {inst.result}")
        if inst.script_result == "sat":
            problem = counterexample_problem(run.folder / inst.onnx, run.folder / inst.vnnlib,
                                             run.folder / rel, run.input_shape)
            if problem:
                run.problems.append(f"{rel}: {problem}")
        if err:
            say(f"      {inst.vnnlib}: run_instance.sh: {err}")
    say(f"      run_instance.sh on {len(chosen)} instances ({', '.join(i.result for i in chosen)}): "
        f"{agree} same verdict")


# ----- the whole job ---------------------------------------------------------------------------
def run_pipeline(opts: DemoOptions, out: TextIO | None = None) -> int:
    """Run the six stages; print the table; return the exit status (0: every check holds)."""
    out = out if out is not None else sys.stdout
    t_start = time.perf_counter()
    run = DemoRun(opts)
    run.cfg = load_train_config(opts.config, opts.overrides, str(opts.out / "train"))
    run.eps = float(run.cfg.schedule.eps)
    c = run.cfg
    stage = Stages(run, out)
    stage.say(f"qa-lirpa demo: {c.data.name}, {c.model.bits}-bit {c.model.arch}, QA-IBP ({c.loss.kind}) "
              f"at eps {run.eps:g} -> ONNX -> VNN-COMP folder of {len(opts.samples)} instances -> "
              f"complete verification; output in {opts.out}/")
    subset = f"{c.data.train_subset} training images" if c.data.train_subset else "all training images"
    ckpt = stage("train", f"{c.schedule.epochs} epochs on {subset} -> {c.out_dir}/", train_stage, run,
                 stage.say)
    stage("export", "ONNX with the exact integer semantics", export_stage, run, ckpt, stage.say)
    stage("benchmark", "onnx/, vnnlib/, instances.csv", bench_stage, run, stage.say)
    how = "vnncomp_configs/run_instance.sh per instance" if opts.via_script else \
        "run_instance in this process (qa-lirpa benchmark run)"
    stage("verify", how, verify_stage, run, stage.say)
    stage("check", "counterexamples in onnxruntime, run_instance.sh cross-check", check_stage, run,
          stage.say)
    stage("report", "table, results.md, results.csv, summary.json, verification.png",
          report.write_report, run, stage.say)
    total = time.perf_counter() - t_start
    stage.say("")
    stage.say(report.console_text(run, total))
    return 1 if run.problems else 0


__all__ = ["DemoOptions", "DemoRun", "Instance", "run_pipeline", "config_changes"]
