"""Task functions for tests/test_campaign.py that Ray workers import by name (this folder is put on
the workers' PYTHONPATH by the tests)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from qa_lirpa.campaign import Outcome

#: the task that runs long enough to be killed
SLOW = 3


def sleepy(folder: str, payload: int) -> Outcome:
    """Append this process's pid to ``folder/<payload>.pid``, sleep (long for ``SLOW``), answer."""
    with open(Path(folder) / f"{payload}.pid", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(4.0 if payload == SLOW else 0.05)
    return Outcome("ok", f"{payload},{payload * payload},")


def error_row(payload: int, reason: str) -> Outcome:
    return Outcome("error", f"{payload},,{reason.replace(',', ';')}", reason)
