"""HiGHS calls of the MILP procedure, usable in this process or in a worker process.

HiGHS honours its ``time_limit`` only where it checks the clock: on the AAAI'21 network its root
node (cut separation) ran more than 3 s past a 1.1 s limit. A caller that must keep a hard
deadline (the verifier's MILP fallback) therefore solves in a worker process that it kills when
the deadline has passed: :class:`Worker` runs this file as a script (it imports only numpy and
highspy, and starts in about 0.1 s) and exchanges pickled, length-prefixed messages with it over
its stdin and a private copy of its stdout (HiGHS's own banner goes to /dev/null).

Nothing here imports torch or the rest of the package (only ``qa_lirpa.base``'s errors and
verdict, which import nothing), so that the script starts fast. Answers are
:class:`~qa_lirpa.base.verdict.Verdict` values (a feasible MILP is a violation: ``SAT``;
infeasible: ``UNSAT``; undecided: ``TIMEOUT``); they cross the pipe by name.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import Optional

import numpy as np

if __package__:
    from ..base.errors import QaLirpaError
    from ..base.verdict import Verdict
else:   # run as the worker script: load the floor's modules by path, without the package (torch)
    import importlib.util as _ilu

    def _floor(name: str):
        spec = _ilu.spec_from_file_location(
            f"_qa_lirpa_base_{name}",
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "base", f"{name}.py"))
        module = _ilu.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    QaLirpaError = _floor("errors").QaLirpaError
    Verdict = _floor("verdict").Verdict

#: HiGHS tolerances (the data are integers; these only guard the LP arithmetic).
TOLERANCE = 1e-9

#: The ``threads`` value HiGHS's process-wide task scheduler was last started with here. HiGHS
#: refuses to run (model status "Not Set") when a solver's ``threads`` option differs from the
#: running scheduler's, e.g. an LP run with the default followed by a MILP with threads=1; so
#: every solver gets an explicit ``threads`` and the scheduler is restarted when it changes.
_SCHEDULER_THREADS: list = [None]


def _forget_scheduler() -> None:
    """In a forked child: HiGHS's scheduler threads stayed in the parent, so the first solver here
    must start a new scheduler (else a task it spawns, e.g. the root node's analytic centre,
    waits forever for a worker that does not exist)."""
    _SCHEDULER_THREADS[0] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_scheduler)


class HighsStatusError(QaLirpaError, RuntimeError):
    """HiGHS rejected the model or ended with an unexpected status."""


def new_highs(threads: Optional[int]):
    """A quiet HiGHS instance whose ``threads`` option matches the global scheduler."""
    import highspy

    want = 0 if threads is None else int(threads)      # 0: HiGHS's default (half the cores)
    if _SCHEDULER_THREADS[0] != want:                  # None: not started in this process
        highspy.Highs.resetGlobalScheduler(True)
        _SCHEDULER_THREADS[0] = want
    h = _construct_quietly(highspy)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", want)
    return h


_BANNER_SHOWN: list = [False]


def _construct_quietly(highspy):
    """``highspy.Highs()``; the first one in a process prints HiGHS's banner on file descriptor 1
    before any option can be set, so that one is built with fd 1 pointed at /dev/null."""
    if _BANNER_SHOWN[0]:
        return highspy.Highs()
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _BANNER_SHOWN[0] = True
    return h


def to_highs_lp(lb: list, ub: list, rows: list, integral: bool, cost: Optional[dict] = None):
    """A HighsLp of integer columns (or their LP relaxation) and rows ``(coefs, lo, hi)``."""
    import highspy

    n, m = len(lb), len(rows)
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = m
    c = np.zeros(n)
    if cost:
        for v, a in cost.items():
            c[v] = float(a)
    lp.col_cost_ = c
    lp.col_lower_ = np.asarray(lb, dtype=np.float64)
    lp.col_upper_ = np.asarray(ub, dtype=np.float64)
    inf = highspy.kHighsInf
    lp.row_lower_ = np.array([-inf if lo is None else float(lo) for _, lo, _ in rows], dtype=np.float64)
    lp.row_upper_ = np.array([inf if hi is None else float(hi) for _, _, hi in rows], dtype=np.float64)
    starts = np.zeros(m + 1, dtype=np.int32)
    idx, val = [], []
    for r, (coefs, _, _) in enumerate(rows):
        idx.extend(coefs.keys())
        val.extend(coefs.values())
        starts[r + 1] = len(idx)
    mat = lp.a_matrix_
    mat.format_ = highspy.MatrixFormat.kRowwise
    mat.num_col_ = n
    mat.num_row_ = m
    mat.start_ = starts
    mat.index_ = np.asarray(idx, dtype=np.int32)
    mat.value_ = np.asarray(val, dtype=np.float64)
    lp.a_matrix_ = mat
    if integral:
        lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    return lp


def objective_cutoff(cost: Optional[dict], target: Optional[float]) -> float:
    """The value handed to HiGHS's ``objective_bound`` by :func:`solve_mip`: above every feasible
    point's objective, so it cuts off nothing.

    With ``cost`` and ``target`` the minimised row is also a constraint ``row <= target`` of the
    model (see :func:`qa_lirpa.exact.milp.solve_milp`), so every feasible point has objective at
    most ``target``; the cutoff is ``target + 1`` (plus a relative margin far above the LP
    tolerances). Without them the objective is identically 0 and the cutoff is 1.

    Why at all: with no incumbent and no finite bound, HiGHS (1.16) runs its root feasibility pump
    and central rounding to completion, and on our dense first-layer rows (hundreds of integer
    inputs with wide domains) their rounding-and-propagation loop ran for the whole time limit
    without reaching the first branch (a Fashion-MNIST MLP of the AAAI'21 family, 20-60 s at node
    0); with a finite bound it skips them and branches (the same MILP infeasible after 765 nodes,
    9 s). The proof is unchanged in kind: infeasibility of the model, whose rows include the one
    the bound restates.
    """
    if cost and target is not None:
        t = float(target)
        return t + 1.0 + 1e-6 * abs(t)
    return 1.0


def solve_mip(lb: list, ub: list, rows: list, time_limit: float, threads: Optional[int],
              cost: Optional[dict] = None, target: Optional[float] = None):
    """Solve the MILP (feasibility, or minimise ``cost`` and stop once the objective is at most
    ``target``); returns (verdict, column values or None, node count) with verdict ``Verdict.SAT``
    (feasible: the columns are a violation), ``Verdict.UNSAT`` (infeasible) or ``Verdict.TIMEOUT``
    (undecided within the resources)."""
    import highspy

    n = len(lb)
    if n == 0:                                    # nothing to choose (rows always have columns)
        return Verdict.SAT, [], 0
    lp = to_highs_lp(lb, ub, rows, integral=True, cost=cost)
    h = new_highs(threads)
    h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
    h.setOptionValue("mip_feasibility_tolerance", TOLERANCE)
    h.setOptionValue("primal_feasibility_tolerance", TOLERANCE)
    h.setOptionValue("random_seed", 0)
    if cost and target is not None:
        h.setOptionValue("objective_target", float(target))
        h.setOptionValue("mip_rel_gap", 1e9)
        h.setOptionValue("mip_abs_gap", 1e18)
    h.setOptionValue("objective_bound", objective_cutoff(cost, target))
    status = h.passModel(lp)
    if status == highspy.HighsStatus.kError:
        raise HighsStatusError("HiGHS rejected the model")
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    nodes = int(getattr(info, "mip_node_count", 0))
    S = highspy.HighsModelStatus
    if info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible:
        return Verdict.SAT, list(h.getSolution().col_value), nodes
    if ms in (S.kInfeasible, S.kUnboundedOrInfeasible):
        # every column has finite bounds, so the problem cannot be unbounded
        return Verdict.UNSAT, None, nodes
    if ms in (S.kTimeLimit, S.kInterrupt, S.kIterationLimit, S.kSolutionLimit, S.kUnknown, S.kMemoryLimit,
              S.kHighsInterrupt, S.kObjectiveTarget, S.kObjectiveBound):
        return Verdict.TIMEOUT, None, nodes       # undecided within the resources
    raise HighsStatusError(f"HiGHS ended with status {h.modelStatusToString(ms)}")


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------

_HEADER = struct.Struct("<Q")


def _write(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> Optional[bytes]:
    chunks, left = [], n
    while left:
        b = os.read(fd, left)
        if not b:
            return None
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _read(fd: int):
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


class Worker:
    """A HiGHS worker process that a MILP solve can be taken from when its deadline passes.

    :meth:`solve` sends one problem and waits for the answer until ``time_limit`` plus
    ``grace`` seconds; then it kills the process (the next call starts a new one) and answers
    ``(Verdict.TIMEOUT, None, 0)``.
    """

    def __init__(self, grace: float = 0.1) -> None:
        self.grace = grace
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.kills = 0
        #: a file descriptor that, once readable, interrupts a solve like its deadline (the
        #: verifier's portfolio sets it to the pipe of its exact process while that runs)
        self.abort_fd: Optional[int] = None

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.starts += 1

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    f.close()
        self.proc = None

    def solve(self, lb: list, ub: list, rows: list, time_limit: float, threads: Optional[int],
              cost: Optional[dict] = None, target: Optional[float] = None):
        """:func:`solve_mip` in the worker, killed after ``time_limit + grace`` seconds."""
        deadline = time.monotonic() + max(float(time_limit), 0.0) + self.grace
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        proc = self.proc
        try:
            _write(proc.stdin.fileno(), (lb, ub, rows, time_limit, threads, cost, target))
        except OSError:
            self.close()
            raise HighsStatusError("the HiGHS worker process is gone")
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            fds = [fd] if self.abort_fd is None else [fd, self.abort_fd]
            ready = select.select(fds, [], [], max(left, 0.0))[0] if left > 0 else []
            if fd in ready:
                break
            if left <= 0 or ready:                    # out of time, or interrupted
                self.kills += 1
                self.close()
                return Verdict.TIMEOUT, None, 0
        msg = _read(fd)                               # the whole message follows its first byte
        if msg is None:
            self.close()
            raise HighsStatusError("the HiGHS worker process died")
        kind, payload = msg
        if kind == "error":
            raise HighsStatusError(payload)
        name, sol, nodes = payload
        return Verdict[name], sol, nodes


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent dies (even by SIGKILL), and take the default
    action on SIGTERM/SIGINT/SIGHUP (a parent that hands them to a guard thread blocks them, and
    a child inherits that mask)."""
    import signal

    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
    for s in sigs:
        signal.signal(s, signal.SIG_DFL)
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:                                # the parent died before prctl
        os._exit(0)


def _main() -> int:
    _die_with_parent()
    out = os.dup(1)                                   # the channel; fd 1 gets HiGHS's chatter
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import highspy  # noqa: F401  (its banner now goes to /dev/null)

    src = sys.stdin.fileno()
    while True:
        job = _read(src)
        if job is None:
            return 0
        try:
            verdict, sol, nodes = solve_mip(*job)
            _write(out, ("ok", (verdict.name, sol, nodes)))     # by name: the parent has its own Verdict
        except Exception as e:  # noqa: BLE001 - reported to the caller, which raises it
            _write(out, ("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    sys.exit(_main())
