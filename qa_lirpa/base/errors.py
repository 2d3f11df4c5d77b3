"""The one error base class of qa_lirpa."""
from __future__ import annotations


class QaLirpaError(Exception):
    """Base of every error qa_lirpa raises on purpose; the CLI catches it and prints one line."""


__all__ = ["QaLirpaError"]
