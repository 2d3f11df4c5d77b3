import io

import pytest

from qa_lirpa.cli import main
from qa_lirpa.demo import run_bounds_demo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_demo_is_sound_and_crown_tighter(seed):
    out = io.StringIO()
    assert run_bounds_demo(seed=seed, eps=2, out=out)
    text = out.getvalue()
    assert text.strip().endswith("sound")
    ratio = float(text.split("CROWN/IBP = ")[1].split(")")[0])
    assert ratio < 1.0


def test_bounds_demo_cli_exit_status(capsys):
    assert main(["demo", "--bounds", "--eps", "1"]) == 0
    assert "sound" in capsys.readouterr().out


def test_bounds_demo_rejects_fractional_eps(capsys):
    assert main(["demo", "--bounds", "--eps", "1.5"]) == 2
    assert "whole number" in capsys.readouterr().err
