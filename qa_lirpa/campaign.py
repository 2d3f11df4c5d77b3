"""Campaigns: many independent instances, run in this process or on Ray, written as they arrive.

One runner for ``qa-lirpa certify`` and ``qa-lirpa benchmark run`` (and the benchmark scripts that
fan out): a campaign is a list of :class:`Task` (a key and a payload) and one task function
``fn(shared, payload) -> Outcome``, where ``shared`` is what every task needs (a model's bytes, the
verifier config) and is sent to each worker once.

- **Serial** (``Scale()``): the tasks run one after the other in this process, as before.
- **Local Ray** (``Scale(workers=N)``): an embedded Ray runtime with N CPUs starts in this process
  (nothing to launch by hand) and is shut down at the end; each task is one Ray task that asks for
  ``cpus_per_task`` CPUs (and ``gpus_per_task`` GPUs when the verifier runs on a GPU).
- **Cluster** (``Scale(cluster="HOST:PORT")``): the tasks go to an existing Ray cluster; the
  qa_lirpa package travels with the job (``runtime_env.py_modules``), the Python environment must be
  there already.

The same :func:`run_task` runs every task in both modes: an exception inside a task becomes that
task's ``error`` outcome with a one-line reason. A Ray worker that dies (killed, out of memory, its
node lost) loses only its one task, which is submitted once more and, if it dies again, recorded as
``error``. Results are identical to the serial run: the CSV lists the finished tasks in task order.

Every outcome is appended to a journal (``<csv>.journal``, JSON lines, flushed; fsync'ed once a second) and
the CSV is rewritten atomically as outcomes arrive; an interrupted campaign started again with the
same settings resumes where it stopped (``restart=True`` starts afresh). The journal is removed
when the campaign completes.
"""
from __future__ import annotations

import argparse
import builtins
import json
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .base.errors import UserError
from .base.files import atomic_write_text

#: the word of a task that raised or whose worker died twice
ERROR = "error"
#: seconds between two rewrites of the CSV while outcomes arrive (and always at the end)
CSV_EVERY_S = 1.0
#: the embedded runtime's object store (a model's bytes and the results; Ray's default takes 30% of RAM)
OBJECT_STORE_BYTES = 256 * 2**20
#: tasks handed to Ray per slot (the rest wait in the driver, so that "running" is nearly exact)
QUEUED_PER_SLOT = 2
#: Ray errors after which a task is submitted once more (its worker or node died)
_RETRIABLE = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError",
              "LocalRayletDiedError", "ActorDiedError")


@dataclass(frozen=True)
class Scale:
    """Where the tasks run: ``workers`` processes of an embedded local Ray runtime, or the Ray
    cluster at ``cluster``; neither: serially in this process."""

    workers: int = 0
    cluster: str | None = None
    cpus_per_task: int = 1
    gpus_per_task: float = 0.0

    @property
    def parallel(self) -> bool:
        return self.workers > 0 or bool(self.cluster)

    def describe(self) -> str:
        if self.cluster:
            return f"Ray cluster {self.cluster}"
        if self.workers:
            return f"{self.workers} local Ray workers"
        return "serial"


@dataclass(frozen=True)
class Task:
    """One instance: ``key`` names it in the journal (unique in a campaign), ``payload`` goes to the
    task function."""

    key: str
    payload: Any


@dataclass(frozen=True)
class Outcome:
    """One task's result: its ``word`` (a verdict word or ``error``), its CSV ``row`` (one line),
    and ``detail`` (text the driver needs, e.g. a result file's content; for ``error`` the reason)."""

    word: str
    row: str
    detail: str = ""
    #: a value for :func:`map_records` (returned in memory, not journaled)
    value: Any = None

    def to_json(self, key: str) -> str:
        return json.dumps({"key": key, "word": self.word, "row": self.row, "detail": self.detail})


@dataclass
class CampaignReport:
    """What :func:`run_campaign` returns: the outcomes in task order (None where a task did not
    finish), how many came from the journal of an earlier run, and how many tasks were retried."""

    outcomes: list[Outcome | None]
    resumed: int = 0
    retried: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o is not None]


TaskFn = Callable[[Any, Any], Outcome]
ErrorFn = Callable[[Any, str], Outcome]


def run_task(fn: TaskFn, shared: Any, payload: Any, on_error: ErrorFn) -> Outcome:
    """Run one task; any exception becomes ``on_error(payload, reason)`` (one line). Both the
    serial loop and the Ray workers call this."""
    try:
        return fn(shared, payload)
    except Exception as e:  # noqa: BLE001 - one task's failure is that task's error row
        return on_error(payload, one_line(e))


def one_line(e: BaseException) -> str:
    """``Type: message`` on one line, with the innermost frame of the project's code."""
    text = " ".join(str(e).split())[:300]
    where = ""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if "qa_lirpa" in frame.filename:
            where = f" (at {Path(frame.filename).name}:{frame.lineno})"
            break
    return f"{type(e).__name__}: {text}{where}"


# ------------------------------------------------------------------------------------------------
# the journal


def journal_path(csv_path: str | os.PathLike) -> Path:
    return Path(str(csv_path) + ".journal")


def read_journal(path: Path, meta: dict) -> dict[str, Outcome] | None:
    """The outcomes an earlier run of the same campaign (equal ``meta``) recorded; None when there is
    no journal or it belongs to other settings. A truncated last line (a crash while writing) is
    ignored."""
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        return None
    if not isinstance(head, dict) or head.get("meta") != json.loads(json.dumps(meta)):
        return None
    done: dict[str, Outcome] = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
            done[str(rec["key"])] = Outcome(str(rec["word"]), str(rec["row"]), str(rec.get("detail", "")))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


class _Journal:
    """Append-only JSON lines: each line is flushed before the next task is counted (a killed
    driver loses nothing), and fsync'ed at most every ``CSV_EVERY_S`` and at the end (a crash of
    the machine loses at most that much)."""

    def __init__(self, path: Path, meta: dict, fresh: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_text(path, json.dumps({"meta": meta}) + "\n")
        self.f = open(path, "a", encoding="utf-8")
        self.synced = time.monotonic()

    def add(self, key: str, outcome: Outcome) -> None:
        self.f.write(outcome.to_json(key) + "\n")
        self.f.flush()
        if time.monotonic() - self.synced >= CSV_EVERY_S:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.f.fileno())
        self.synced = time.monotonic()

    def close(self) -> None:
        self.sync()
        self.f.close()


# ------------------------------------------------------------------------------------------------
# the runner


def run_campaign(fn: TaskFn, shared: Any, tasks: Sequence[Task], *, csv_path: str | os.PathLike | None,
                 header: str, on_error: ErrorFn, meta: dict, scale: Scale = Scale(),
                 on_outcome: Callable[[Task, Outcome], None] | None = None, restart: bool = False,
                 progress: bool = True, desc: str = "instances", order: Sequence[str] = (),
                 hard_limit_s: float | None = None, say: Callable[[str], None] | None = None) -> CampaignReport:
    """Run ``tasks`` and write ``csv_path`` (``header`` then one row per finished task, task order;
    None: no CSV and no journal, the outcomes are only returned).

    ``meta`` (JSON-able) identifies the campaign's settings: a journal written under other settings
    is not resumed. ``on_outcome(task, outcome)`` runs in this process for each new outcome (e.g.
    to write a result file). ``order``: the verdict words whose counts the progress bar shows.
    ``hard_limit_s``: a Ray task this long after its submission (at most ``QUEUED_PER_SLOT``
    tasks wait per slot) is cancelled and recorded as ``error`` (its own timeout should have ended
    it long before). A KeyboardInterrupt leaves the journal
    and the CSV of what finished, and is raised again."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("run_campaign: task keys must be unique")
    say = say or (lambda s: print(s, file=sys.stderr))
    t_start = time.monotonic()
    jpath = journal_path(csv_path) if csv_path is not None else None
    earlier = None if restart or jpath is None else read_journal(jpath, meta)
    if earlier is None and jpath is not None and jpath.exists() and not restart:
        say(f"{jpath}: written by a run with other settings; starting afresh")
    report = CampaignReport(outcomes=[None] * len(tasks))
    index = {k: i for i, k in enumerate(keys)}
    for k, o in (earlier or {}).items():
        if k in index:
            report.outcomes[index[k]] = o
    report.resumed = sum(o is not None for o in report.outcomes)
    if report.resumed:
        say(f"resuming {jpath}: {report.resumed} of {len(tasks)} done")
    todo = [t for t in tasks if report.outcomes[index[t.key]] is None]
    journal = _Journal(jpath, meta, fresh=earlier is None) if jpath is not None else None
    writer = _CsvWriter(Path(csv_path), header, report) if csv_path is not None else None
    bar = _Bar(len(tasks), report, order, desc, progress)
    completed = False

    def record(task: Task, outcome: Outcome) -> None:
        if journal is not None:
            journal.add(task.key, outcome)
        report.outcomes[index[task.key]] = outcome
        if on_outcome is not None:
            on_outcome(task, outcome)
        bar.advance(outcome.word)
        if writer is not None:
            writer.maybe_write()

    try:
        if not scale.parallel:
            bar.running(1)
            for task in todo:
                record(task, run_task(fn, shared, task.payload, on_error))
        else:
            _run_on_ray(fn, shared, todo, on_error, scale, record, bar, report, hard_limit_s)
        completed = True
    finally:
        bar.close()
        if journal is not None:
            journal.close()
        if writer is not None:
            writer.write()
        report.wall_s = time.monotonic() - t_start
        if jpath is not None and completed and all(o is not None for o in report.outcomes):
            jpath.unlink(missing_ok=True)
    return report


def _record_task(fn: Callable[[Any], Any], arg: Any) -> Outcome:
    return Outcome("done", "", value=fn(arg))


def map_records(fn: Callable[[Any], Any], args: Sequence[Any], scale: Scale = Scale(), *,
                on_error: Callable[[Any, str], Any] | None = None, progress: bool = True,
                desc: str = "instances") -> list[Any]:
    """``[fn(a) for a in args]`` (the benchmark scripts' records), serially or on Ray, in ``args``
    order; a task that raises or whose worker dies twice
    gives ``on_error(arg, reason)`` (default ``{"error": reason}``). ``fn`` must be importable by
    the workers (a module on their PYTHONPATH)."""
    def error(arg: Any, reason: str) -> Outcome:
        return Outcome(ERROR, "", reason, on_error(arg, reason) if on_error is not None else {"error": reason})

    tasks = [Task(str(i), a) for i, a in enumerate(args)]
    report = run_campaign(_record_task, fn, tasks, csv_path=None, header="", on_error=error, meta={},
                          scale=scale, progress=progress, desc=desc)
    return [o.value for o in report.done]


class _CsvWriter:
    def __init__(self, path: Path, header: str, report: CampaignReport) -> None:
        self.path, self.header, self.report = path, header, report
        self.last = 0.0

    def write(self) -> None:
        rows = [o.row for o in self.report.outcomes if o is not None]
        atomic_write_text(self.path, "\n".join([self.header] + rows) + "\n")
        self.last = time.monotonic()

    def maybe_write(self) -> None:
        if time.monotonic() - self.last >= CSV_EVERY_S:
            self.write()


class _Bar:
    """tqdm: done of total, with running / remaining and the verdict counts in the postfix (counted
    as outcomes arrive, so a long campaign does not recount them)."""

    def __init__(self, total: int, report: CampaignReport, order: Sequence[str], desc: str, show: bool) -> None:
        from tqdm import tqdm

        self.report, self.order, self.total = report, list(order), total
        self.n_running, self.n_done = 0, report.resumed
        self.counts = Counter(o.word for o in report.done)
        self.bar = tqdm(total=total, initial=report.resumed, disable=not show, unit="inst", desc=desc,
                        dynamic_ncols=True, leave=False)
        self._post()

    def _post(self) -> None:
        post: dict[str, Any] = {"running": self.n_running,
                                "left": max(self.total - self.n_done - self.n_running, 0)}
        for w in self.order + [ERROR]:
            if self.counts[w] or w in self.order[:3]:
                post[w[:7]] = self.counts[w]
        if self.report.retried:
            post["retried"] = self.report.retried
        self.bar.set_postfix(post, refresh=False)

    def running(self, n: int) -> None:
        if n != self.n_running:
            self.n_running = n
            self._post()

    def advance(self, word: str) -> None:
        self.n_done += 1
        self.counts[word] += 1
        self._post()
        self.bar.update(1)              # tqdm redraws at most every mininterval

    def close(self) -> None:
        self.n_running = 0
        self._post()
        self.bar.refresh()
        self.bar.close()


# ------------------------------------------------------------------------------------------------
# Ray


def import_ray():
    """The ``ray`` module, or a UserError saying how to install it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--workers and --cluster need Ray: pip install 'qa-lirpa[ray]' "
                        "(the Makefile's venv has it)") from None
    return ray


def start_ray(scale: Scale) -> tuple[Any, int]:
    """Start the embedded runtime or join the cluster; returns (ray, how many tasks fit at once)."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")      # no network calls from the runtime
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")         # leave builtins.print alone
    package = str(Path(__file__).resolve().parent)
    if scale.cluster:
        _probe(scale.cluster)
        try:
            ray.init(address=scale.cluster, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"py_modules": [package]})
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ... as one line
            hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                    "; if the cluster uses token authentication (Ray >= 2.59), export RAY_AUTH_MODE=token and "
                    "put the head's ~/.ray/auth_token on this machine")
            raise UserError(f"--cluster {scale.cluster}: cannot join the Ray cluster: "
                            f"{type(e).__name__}: {' '.join(str(e).split())[:200]}{hint}") from None
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        slots = max(1, int(cpus // max(scale.cpus_per_task, 1)))
    else:
        if scale.workers < 1:
            raise UserError("--workers must be >= 1")
        # workers start from this environment: PYTHONPATH gives them this checkout's qa_lirpa
        root = str(Path(package).parent)
        path = os.environ.get("PYTHONPATH", "")
        if root not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = root + (os.pathsep + path if path else "")
        gpus = None
        if scale.gpus_per_task > 0:
            import torch

            gpus = torch.cuda.device_count()
        ray.init(num_cpus=scale.workers * max(scale.cpus_per_task, 1), num_gpus=gpus,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 object_store_memory=OBJECT_STORE_BYTES)
        slots = scale.workers
    return ray, slots


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast, with one line, when nothing listens at ``HOST:PORT`` (Ray itself retries for
    minutes). ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--cluster {address}: expected HOST:PORT (the head's GCS port, 6379 by default) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--cluster {address}: cannot join the Ray cluster: nothing answers there ({e})") from None


def _run_on_ray(fn: TaskFn, shared: Any, todo: list[Task], on_error: ErrorFn, scale: Scale,
                record: Callable[[Task, Outcome], None], bar: _Bar, report: CampaignReport,
                hard_limit_s: float | None) -> None:
    t0 = time.monotonic()
    printer = builtins.print                                   # Ray may patch it; the caller's comes back
    ray, slots = start_ray(scale)
    try:
        remote = ray.remote(run_task).options(num_cpus=max(scale.cpus_per_task, 1), num_gpus=scale.gpus_per_task,
                                               max_retries=0)
        shared_ref = ray.put(shared)
        report.startup_s = time.monotonic() - t0
        queue = list(reversed(todo))
        tries: dict[str, int] = {}
        running: dict[Any, tuple[Task, float]] = {}

        def submit(task: Task) -> None:
            running[remote.remote(fn, shared_ref, task.payload, on_error)] = (task, time.monotonic())

        while queue or running:
            while queue and len(running) < QUEUED_PER_SLOT * slots:     # a worker never waits for the driver
                submit(queue.pop())
            bar.running(min(len(running), slots))
            ready, rest = ray.wait(list(running), num_returns=1, timeout=0.5)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                task, _ = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died or the task was cancelled
                    name = type(e).__name__
                    if name in _RETRIABLE and tries.get(task.key, 0) < 1:
                        tries[task.key] = tries.get(task.key, 0) + 1
                        report.retried += 1
                        queue.append(task)
                        continue
                    why = f"{name}: {' '.join(str(e).split())[:200]}"
                    outcome = on_error(task.payload, f"worker lost twice ({why})" if tries.get(task.key) else why)
                record(task, outcome)
            if hard_limit_s is not None:
                now = time.monotonic()
                for ref, (task, since) in list(running.items()):
                    if now - since > hard_limit_s:
                        running.pop(ref)
                        ray.cancel(ref, force=True)
                        record(task, on_error(task.payload, f"no answer within {hard_limit_s:g} s; cancelled"))
    finally:
        ray.shutdown()
        builtins.print = printer


# ------------------------------------------------------------------------------------------------
# the command line


def add_campaign_arguments(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--cluster``, ``--restart``: one definition for certify and benchmark run."""
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run N instances at once on an embedded local Ray runtime (pip install 'qa-lirpa[ray]')")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run on an existing Ray cluster (e.g. HEAD:6379, or 'auto' on a cluster node)")
    p.add_argument("--restart", action="store_true",
                   help="ignore the journal of an interrupted run of the same campaign and start afresh")


def scale_from_args(args: argparse.Namespace) -> Scale:
    """The :class:`Scale` of ``--workers``/``--cluster`` (one line for bad values)."""
    workers, cluster = int(getattr(args, "workers", 0) or 0), getattr(args, "cluster", None)
    if workers < 0:
        raise UserError("--workers must be >= 0")
    if workers or cluster:
        import_ray()
    return Scale(workers=workers, cluster=cluster or None)


__all__ = ["ERROR", "Scale", "Task", "Outcome", "CampaignReport", "run_campaign", "map_records", "run_task", "one_line",
           "journal_path", "read_journal", "import_ray", "start_ray",
           "add_campaign_arguments", "scale_from_args"]
