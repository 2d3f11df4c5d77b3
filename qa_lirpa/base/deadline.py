"""A time budget as one object: a point on the ``time.perf_counter`` clock (monotonic), passed down
instead of loose seconds that every layer converts again.

    d = Deadline.after(10.0)       # ten seconds from now
    d.remaining()                  # seconds left (>= 0)
    d.expired()
    d.fraction(0.5)                # a sub-deadline: half of what remains now
    d.at                           # the absolute perf_counter time
    Deadline.never()               # no limit (remaining() is inf)
    Deadline.from_monotonic(t)     # a time.monotonic() instant (e.g. the process start) on this clock
    d.shifted(-2.0)                # two seconds earlier (a margin)
    as_deadline(timeout)           # seconds or a Deadline -> a Deadline

Public functions keep their ``timeout=`` seconds (or take a Deadline there); they turn seconds into
a Deadline once, at the edge (:func:`as_deadline`), and pass the object down.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """The instant ``at`` (``time.perf_counter()`` seconds; ``inf``: never)."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        """``seconds`` from now (negative or zero: already expired; inf: never)."""
        return cls(time.perf_counter() + float(seconds))

    @classmethod
    def never(cls) -> "Deadline":
        return cls(math.inf)

    @classmethod
    def from_monotonic(cls, instant: float) -> "Deadline":
        """The ``time.monotonic()`` instant ``instant`` on the perf_counter clock (both are
        monotonic; their offset is measured once here)."""
        if math.isinf(instant):
            return cls(instant)
        return cls(time.perf_counter() + (float(instant) - time.monotonic()))

    def remaining(self) -> float:
        """Seconds left, never negative (inf for :meth:`never`)."""
        return max(0.0, self.at - time.perf_counter())

    def expired(self) -> bool:
        return time.perf_counter() >= self.at

    def fraction(self, share: float) -> "Deadline":
        """A sub-deadline for ``share`` (0..1) of the time that remains now; never later than this one."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if math.isinf(self.at):
            return self
        now = time.perf_counter()
        return Deadline(min(self.at, now + share * max(0.0, self.at - now)))

    def earlier(self, other: "Deadline") -> "Deadline":
        """The earlier of the two deadlines."""
        return self if self.at <= other.at else other

    def later(self, other: "Deadline") -> "Deadline":
        """The later of the two deadlines (e.g. a floor: ``d.later(Deadline.after(0.5))``)."""
        return self if self.at >= other.at else other

    def shifted(self, seconds: float) -> "Deadline":
        """This deadline moved by ``seconds`` (negative: earlier); :meth:`never` stays never."""
        return self if math.isinf(self.at) else Deadline(self.at + float(seconds))


def as_deadline(timeout: "float | Deadline") -> Deadline:
    """``timeout`` as a Deadline: a Deadline as it is, a number of seconds from now
    (:meth:`Deadline.after`; inf: never). The one place where public ``timeout=`` seconds become
    a point in time."""
    return timeout if isinstance(timeout, Deadline) else Deadline.after(timeout)


__all__ = ["Deadline", "as_deadline"]
