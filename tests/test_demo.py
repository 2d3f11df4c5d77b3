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


def test_demo_cli_exit_status(capsys):
    assert main(["demo", "--eps", "1"]) == 0
    assert "sound" in capsys.readouterr().out
