"""Replay the robustness probes against vnncomp_configs/*.sh and the qa-lirpa CLI; print a markdown
table (family x tried x handled well) and write it to benchmarks/results/robustness_probe.md.

    .venv/bin/python benchmarks/robustness_probe.py [--out benchmarks/results/robustness_probe.md]

"Handled well" for one try: the documented result word is written (where a path is writable), at
most one non-empty line on stderr and no traceback, no hang, and the run ends within TIMEOUT + 2 s
(the interpreter start-up counts against TIMEOUT). Families: malformed and huge VNN-LIB
files, malformed ONNX files, gzip (bomb, corrupt), signals, parallel runs on one new .gz, odd
TIMEOUT arguments, a malicious checkpoint, an unwritable result path, and prepare_instance.
"""
from __future__ import annotations

import argparse
import gzip
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SCRIPTS = ROOT / "vnncomp_configs"

import hardening_cases as hc  # noqa: E402


class Probe:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: dict[str, list[tuple[str, bool, str]]] = {}
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env["QA_LIRPA_CACHE_DIR"] = str(work / "cache")

    def record(self, family: str, case: str, ok: bool, note: str = "") -> None:
        self.rows.setdefault(family, []).append((case, ok, note))
        print(f"{'ok  ' if ok else 'FAIL'} {family}: {case} {note}", file=sys.stderr)

    @staticmethod
    def clean_stderr(stderr: str) -> tuple[bool, str]:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        return len(lines) <= 1 and "Traceback" not in stderr, (lines[-1][:90] if lines else "")

    def run(self, family: str, case: str, onnx: Path, vnn: Path, timeout: str = "20",
            want: tuple[str, ...] = ("error",), env: dict | None = None, result: Path | None = None) -> None:
        out = result or self.work / f"{family}-{case}.txt".replace(" ", "_")
        if result is None:
            out.write_text("sat\n")                              # a stale answer
        t0 = time.monotonic()
        try:
            p = subprocess.run(["bash", str(SCRIPTS / "run_instance.sh"), "v1", "probe", str(onnx), str(vnn),
                                str(out), timeout], capture_output=True, text=True, env=env or self.env,
                               timeout=120)
        except subprocess.TimeoutExpired:
            self.record(family, case, False, "hang")
            return
        took = time.monotonic() - t0
        clean, line = self.clean_stderr(p.stderr)
        try:
            budget = float(timeout)
        except ValueError:
            budget = 0.0
        valid = budget == budget and 0 < budget < 1e9
        in_budget = took <= (budget + 2.0 if valid else 10.0)       # an invalid TIMEOUT: a quick refusal
        word = out.read_text().splitlines()[0] if out.exists() and result is None else None
        ok = clean and in_budget and (result is not None or word in want) and p.returncode in (0, 1)
        self.record(family, case, ok, f"-> {word} in {took:.1f} s; {line}")


def build(work: Path) -> dict[str, Path]:
    import numpy as np
    import torch

    from qa_lirpa.nn import integer_forward
    from qa_lirpa.onnx import export_onnx
    from qa_lirpa.verify.vnnlib import robustness_property, write_vnnlib
    from qnn_factory import mlp

    f: dict[str, Path] = {}
    model = mlp([8, 16, 4], seed=1)
    f["qnn.onnx"] = work / "qnn.onnx"
    export_onnx(model, f["qnn.onnx"], (8,))
    x = np.full(8, 128.0)
    label = int(integer_forward(model, torch.tensor(x)[None]).argmax())
    lo, hi, dis = robustness_property(x - 2, x + 2, label, 4)
    f["qnn.vnnlib"] = work / "qnn.vnnlib"
    write_vnnlib(f["qnn.vnnlib"], lo, hi, dis)
    # a hard instance that runs to its timeout (a HiGHS worker is started after 10% of it)
    hard = mlp([24, 64, 64, 4], seed=2)
    f["hard.onnx"] = work / "hard.onnx"
    export_onnx(hard, f["hard.onnx"], (24,))
    xs = torch.randint(0, 256, (20000, 24), generator=torch.Generator().manual_seed(0)).double()
    ys = integer_forward(hard, xs)
    c = float((ys[:, 0] - ys[:, 1]).max()) + 120.0
    mat = np.zeros((1, 4))
    mat[0, 0], mat[0, 1] = -1.0, 1.0
    f["hard.vnnlib"] = work / "hard.vnnlib"
    write_vnnlib(f["hard.vnnlib"], np.zeros(24), np.full(24, 255.0), [(mat, np.array([-c]))])

    f["ok.onnx"] = hc.float_mlp_onnx(work / "ok.onnx")
    for name, kw in (("nan", dict(poison=float("nan"))), ("inf", dict(poison=float("inf"))),
                     ("op99", dict(opset=99)), ("shape", dict(bad_shape=True))):
        f[f"{name}.onnx"] = hc.float_mlp_onnx(work / f"{name}.onnx", **kw)
    (work / "garbage.onnx").write_bytes(b"not a protobuf at all")
    f["garbage.onnx"] = work / "garbage.onnx"
    (work / "empty.onnx").write_bytes(b"")
    f["empty.onnx"] = work / "empty.onnx"
    texts = {"ok.vnnlib": hc.box_vnnlib(), "deep.vnnlib": hc.deep_vnnlib(),
             "many.vnnlib": hc.many_disjuncts_vnnlib(), "truncated.vnnlib": hc.box_vnnlib()[:-5],
             "unknownvar.vnnlib": hc.box_vnnlib().replace("Y_0 1000", "Y_9 1000"),
             "hugeexp.vnnlib": hc.box_vnnlib().replace("1000.0", "1e999999999"),
             "tiny.vnnlib": hc.box_vnnlib().replace("1000.0", "1e-400")}
    for name, text in texts.items():
        f[name] = work / name
        f[name].write_text(text)
    f["nonutf8.vnnlib"] = work / "nonutf8.vnnlib"
    f["nonutf8.vnnlib"].write_bytes(hc.non_utf8_vnnlib())
    f["bomb.vnnlib.gz"] = hc.gzip_bomb(work / "bomb.vnnlib.gz", 64)
    f["corrupt.vnnlib.gz"] = work / "corrupt.vnnlib.gz"
    f["corrupt.vnnlib.gz"].write_bytes(hc.corrupt_gzip(hc.box_vnnlib().encode() * 50))
    f["empty.vnnlib.gz"] = work / "empty.vnnlib.gz"
    f["empty.vnnlib.gz"].write_bytes(gzip.compress(b""))
    return f


def descendants(pid: int) -> list[int]:
    from qa_lirpa.vnncomp import _descendants

    return _descendants(pid)


def probe_signals(pr: Probe, f: dict[str, Path]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        out = pr.work / f"sig-{sig.name}.txt"
        out.write_text("sat\n")
        proc = subprocess.Popen(["bash", str(SCRIPTS / "run_instance.sh"), "v1", "probe", str(f["hard.onnx"]),
                                 str(f["hard.vnnlib"]), str(out), "20"], env=pr.env, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(1.0)                                          # Python has taken over from bash
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end and not descendants(proc.pid):
            time.sleep(0.1)
        kids = descendants(proc.pid)
        proc.send_signal(sig)
        t0 = time.monotonic()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            pr.record("signals", sig.name, False, "hang")
            continue
        took = time.monotonic() - t0
        time.sleep(0.3)
        alive = [k for k in kids if os.path.exists(f"/proc/{k}")
                 and open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        clean, line = pr.clean_stderr(err)
        word = out.read_text().splitlines()[0]
        ok = word == "unknown" and not alive and took < 1.5 and clean and proc.returncode == 0
        pr.record("signals", sig.name, ok, f"-> {word} in {took:.2f} s, {len(kids)} child(ren), "
                                           f"{len(alive)} left; {line}")


def probe_parallel(pr: Probe, f: dict[str, Path]) -> None:
    gz_onnx, gz_vnn = pr.work / "par.onnx.gz", pr.work / "par.vnnlib.gz"
    for src, dst in ((f["qnn.onnx"], gz_onnx), (f["qnn.vnnlib"], gz_vnn)):
        with open(src, "rb") as a, gzip.open(dst, "wb") as b:
            shutil.copyfileobj(a, b)
    env = dict(pr.env, QA_LIRPA_CACHE_DIR=str(pr.work / "cache-par"))
    outs = [pr.work / f"par{i}.txt" for i in range(8)]
    procs = [subprocess.Popen(["bash", str(SCRIPTS / "run_instance.sh"), "v1", "probe", str(gz_onnx), str(gz_vnn),
                               str(o), "60"], env=env, stderr=subprocess.PIPE, text=True) for o in outs]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    words = [o.read_text().splitlines()[0] for o in outs]
    for i, (w, e) in enumerate(zip(words, errs)):
        clean, line = pr.clean_stderr(e)
        pr.record("parallel runs (8 on one new .gz)", f"run {i}", clean and w == words[0] and w in ("sat", "unsat"),
                  f"-> {w}; {line}")


def probe_checkpoint(pr: Probe) -> None:
    marker = pr.work / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    vnn = pr.work / "ck.vnnlib"
    vnn.write_text(hc.box_vnnlib(1, 1))
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        evil = pr.work / f"evil{proto}.pt"
        with open(evil, "wb") as fh:
            pickle.dump({"format": "qa-lirpa-checkpoint", "version": 1, "x": Payload()}, fh, protocol=proto)
        for cmd in (["verify", "--model", str(evil), "--vnnlib", str(vnn)],
                    ["certify", "--model", str(evil), "--dataset", "synthetic", "--eps", "1", "--samples", "0:1"],
                    ["benchmark", "make", "--model", str(evil), "--dataset", "synthetic", "--samples", "0:1",
                     "--eps", "1", "--out", str(pr.work / "bm")]):
            p = subprocess.run([str(ROOT / "bin" / "qa-lirpa"), *cmd], capture_output=True, text=True,
                               env=pr.env, timeout=120)
            clean, line = pr.clean_stderr(p.stderr)
            ok = clean and p.returncode != 0 and not marker.exists() and ("refusing" in p.stderr
                                                                          or "not a qa-lirpa" in p.stderr)
            pr.record("malicious checkpoint", f"{cmd[0]} {cmd[1] if cmd[0] == 'benchmark' else ''} protocol {proto}",
                      ok, f"rc {p.returncode}; {line}")


def probe_prepare(pr: Probe, f: dict[str, Path]) -> None:
    cases = [("NaN weights", "nan.onnx", "ok.vnnlib", 1), ("opset 99", "op99.onnx", "ok.vnnlib", 1),
             ("deep nesting", "ok.onnx", "deep.vnnlib", 1), ("gzip bomb", "ok.onnx", "bomb.vnnlib.gz", 1),
             ("good instance", "qnn.onnx", "qnn.vnnlib", 0)]
    for case, o, v, want in cases:
        p = subprocess.run(["bash", str(SCRIPTS / "prepare_instance.sh"), "v1", "probe", str(f[o]), str(f[v])],
                           capture_output=True, text=True, env=dict(pr.env, QA_LIRPA_MAX_BYTES="16e6"), timeout=120)
        clean, line = pr.clean_stderr(p.stderr)
        pr.record("prepare_instance agrees with run", case, clean and p.returncode == want, f"rc {p.returncode}; {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robustness_probe.md"))
    args = ap.parse_args()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qa-lirpa-probe-") as tmp:
        work = Path(tmp)
        f = build(work)
        pr = Probe(work)
        for case, v in (("truncated", "truncated.vnnlib"), ("non-UTF-8", "nonutf8.vnnlib"),
                        ("nesting depth 5000", "deep.vnnlib"), ("undeclared variable", "unknownvar.vnnlib"),
                        ("exponent 999999999", "hugeexp.vnnlib")):
            pr.run("malformed VNN-LIB", case, f["ok.onnx"], f[v])
        pr.run("huge VNN-LIB", "90,000 disjuncts", f["ok.onnx"], f["many.vnnlib"], "60", want=("sat", "unsat"))
        pr.run("VNN-LIB numbers", "1e-400 is not 0", f["ok.onnx"], f["tiny.vnnlib"], "20", want=("sat", "unsat"))
        for case, o in (("garbage bytes", "garbage.onnx"), ("empty file", "empty.onnx"), ("opset 99", "op99.onnx"),
                        ("onnxruntime shape error", "shape.onnx"), ("NaN weights", "nan.onnx"),
                        ("Inf weights", "inf.onnx")):
            pr.run("malformed ONNX", case, f[o], f["ok.vnnlib"])
        bomb_env = dict(pr.env, QA_LIRPA_MAX_BYTES="16e6")
        pr.run("gzip", "bomb (64 MB of zeros, 16 MB cap)", f["ok.onnx"], f["bomb.vnnlib.gz"], env=bomb_env)
        pr.run("gzip", "corrupt body", f["ok.onnx"], f["corrupt.vnnlib.gz"])
        pr.run("gzip", "empty", f["ok.onnx"], f["empty.vnnlib.gz"])
        for t in ("nan", "inf", "1e309", "-1", "0", "soon"):
            pr.run("odd TIMEOUT", t, f["qnn.onnx"], f["qnn.vnnlib"], t)
        pr.run("budget", "TIMEOUT 5 on a hard instance", f["hard.onnx"], f["hard.vnnlib"], "5",
               want=("timeout", "unknown", "sat", "unsat"))
        pr.run("unwritable result path", "/proc/none/out.txt", f["qnn.onnx"], f["qnn.vnnlib"],
               result=Path("/proc/none/out.txt"))
        probe_signals(pr, f)
        probe_parallel(pr, f)
        probe_checkpoint(pr)
        probe_prepare(pr, f)
    lines = ["# Robustness probe", "",
             f"Command: `.venv/bin/python benchmarks/robustness_probe.py` ({time.monotonic() - t_start:.0f} s, "
             f"{os.cpu_count()} CPUs). Handled well: the documented result word written (where the path is "
             "writable), at most one line on stderr and no traceback, no hang, within TIMEOUT + 2 s measured "
             "around the whole script (10 s for a refused TIMEOUT); signals: `unknown` written, exit 0 "
             "within 1.5 s and no child left.", "",
             "| family | tried | handled well |", "|---|---|---|"]
    for fam, rows in pr.rows.items():
        lines.append(f"| {fam} | {len(rows)} | {sum(ok for _, ok, _ in rows)} |")
    total = sum(len(r) for r in pr.rows.values())
    good = sum(ok for r in pr.rows.values() for _, ok, _ in r)
    lines += [f"| **all** | **{total}** | **{good}** |", "", "## Cases", ""]
    for fam, rows in pr.rows.items():
        for case, ok, note in rows:
            lines.append(f"- {'ok' if ok else '**FAIL**'} {fam} / {case}: {note.replace('|', '/')}")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0 if good == total else 1


if __name__ == "__main__":
    sys.exit(main())
