"""The one base class of the errors qa_lirpa raises on purpose.

Every exception class of the project derives from :class:`QaLirpaError` (and keeps its older base,
ValueError, RuntimeError or FileNotFoundError, so ``except ValueError`` code keeps working). The
command-line entry points catch ``QaLirpaError`` and print its message as one line.
"""
from __future__ import annotations


class QaLirpaError(Exception):
    """An error qa_lirpa raises on purpose, with a message meant for a person.

    The command line (``qa_lirpa.cli.main``, ``qa_lirpa.vnncomp.main``) catches it and prints one
    line ``error: <message>`` instead of a traceback.
    """


class UserError(QaLirpaError):
    """An error caused by the user's input: printed as one line, exit status 2."""


__all__ = ["QaLirpaError", "UserError"]
