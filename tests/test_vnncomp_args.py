"""run_instance.sh / prepare_instance.sh / install_tool.sh argument handling (no verification)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "vnncomp_configs"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("script,args", [
    ("run_instance.sh", ["v1", "cat", "a.onnx"]),
    ("run_instance.sh", ["v2", "cat", "a.onnx", "b.vnnlib", "out.txt", "10"]),
    ("prepare_instance.sh", ["v1", "cat"]),
    ("prepare_instance.sh", ["v0", "cat", "a.onnx", "b.vnnlib"]),
    ("install_tool.sh", ["v2"]),
])
def test_bad_arguments_exit_2_with_one_message(script, args):
    p = run(script, *args)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "usage" in p.stderr or "'v1'" in p.stderr


def test_missing_files_give_error_word(tmp_path):
    out = tmp_path / "result.txt"
    out.write_text("no_result_in_file\n")
    p = run("run_instance.sh", "v1", "cat", str(tmp_path / "nope.onnx"), str(tmp_path / "nope.vnnlib"),
            str(out), "10")
    assert p.returncode == 0
    assert out.read_text().splitlines()[0] == "error"
    assert "nope.onnx" in p.stderr


def test_bad_timeout_gives_error_word(tmp_path):
    out = tmp_path / "result.txt"
    p = run("run_instance.sh", "v1", "cat", "a.onnx", "b.vnnlib", str(out), "soon")
    assert p.returncode == 0 and out.read_text().splitlines()[0] == "error"
    assert "TIMEOUT" in p.stderr


def test_prepare_missing_file_is_nonzero(tmp_path):
    p = run("prepare_instance.sh", "v1", "cat", str(tmp_path / "x.onnx"), str(tmp_path / "y.vnnlib"))
    assert p.returncode == 1 and "x.onnx" in p.stderr
