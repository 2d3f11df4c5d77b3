"""One way to turn a device setting into a ``torch.device``."""
from __future__ import annotations

from typing import Union

import torch

from .errors import QaLirpaError


class DeviceError(QaLirpaError, ValueError):
    """A device that torch does not know, or CUDA asked for where it is not available."""


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` or None: cuda when available, else cpu; anything else (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, a ``torch.device``) as torch understands it. :class:`DeviceError` for an unknown
    device or for CUDA without an available CUDA device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise DeviceError(f"unknown device {str(device)!r} ({' '.join(str(e).split())})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


__all__ = ["DeviceError", "resolve_device"]
