"""HiGHS prints nothing on stdout (run_instance's stdout and piped CLIs stay clean)."""
from __future__ import annotations

import subprocess
import sys


def test_no_highs_banner_on_stdout():
    code = ("from qa_lirpa.exact.highs_worker import new_highs\n"
            "h = new_highs(1); h2 = new_highs(None)\n"
            "print('done')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
