"""Campaigns (qa_lirpa.campaign): serial and Ray runs give the same CSV; a killed worker's task is
retried once, then recorded as ``error``; an interrupted run resumes from its journal."""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from qa_lirpa import campaign
from qa_lirpa.campaign import Outcome, Scale, Task, journal_path, run_campaign
from qa_lirpa.cli import main

pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent


def _rows(path: Path, drop=("time_s",)) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from qa_lirpa import models

    torch.manual_seed(3)
    model = models.build_model("mlp", in_shape=(1, 8, 8), n_classes=4, hidden=(16,))
    path = tmp_path / "m.pt"
    models.save_checkpoint(path, model)
    return path


def test_certify_workers_match_serial(checkpoint, tmp_path, capsys):
    import builtins

    print_before = builtins.print
    common = ["certify", "--model", str(checkpoint), "--dataset", "synthetic", "--eps", "6", "--samples", "0:40",
              "--timeout", "20", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "serial.csv")]) == 0
    serial_out = capsys.readouterr().out
    assert main(common + ["--out", str(tmp_path / "ray.csv"), "--workers", "2"]) == 0
    ray_out = capsys.readouterr().out
    serial, par = _rows(tmp_path / "serial.csv"), _rows(tmp_path / "ray.csv")
    assert len(serial) == 40 and serial == par
    words = {r["verdict"] for r in serial}
    assert len(words) >= 2 and "error" not in words, words       # a meaningful mix, nothing failed
    assert "2 local Ray workers" in ray_out
    def table(text: str) -> list[str]:
        skip = ("time", "qa-lirpa", "per-sample")
        return [ln for ln in text.splitlines() if ln[:1].isalpha() and not ln.startswith(skip)]

    assert table(serial_out) == table(ray_out)
    assert not journal_path(tmp_path / "ray.csv").exists()
    import builtins

    assert builtins.print is print_before          # Ray's tqdm patch of print does not outlive the campaign


def test_benchmark_run_workers_match_serial(checkpoint, tmp_path, capsys):
    from qa_lirpa.benchfolder import make_folder, read_instances

    # 60 s per instance: far above the slowest instance (about 6 s), so that a loaded machine
    # cannot turn a verdict into a timeout in one of the two runs and fail the comparison
    folder = make_folder(str(checkpoint), "synthetic", range(0, 4), [2.0, 30.0], str(tmp_path / "bench"), 60.0)
    assert main(["benchmark", "run", str(folder), "--no-progress"]) == 0
    serial = _rows(folder / "results.csv")
    texts = {p.name: p.read_text() for p in (folder / "results").iterdir()}
    (folder / "results.csv").unlink()
    for p in (folder / "results").iterdir():
        p.unlink()
    assert main(["benchmark", "run", str(folder), "--no-progress", "--workers", "2"]) == 0
    assert _rows(folder / "results.csv") == serial and len(serial) == len(read_instances(folder))
    assert {p.name: p.read_text() for p in (folder / "results").iterdir()} == texts
    assert {r["result"] for r in serial} >= {"sat"}


def _killer(folder: Path, key: int, kills: int, stop: threading.Event) -> list[int]:
    """SIGKILL the process that runs task ``key`` (its pid file), ``kills`` times."""
    killed: list[int] = []

    def loop() -> None:
        while not stop.is_set() and len(killed) < kills:
            path = folder / f"{key}.pid"
            pids = [int(x) for x in path.read_text().split()] if path.exists() else []
            new = [p for p in pids if p not in killed]
            if new:
                time.sleep(0.3)                      # mid-task
                os.kill(new[-1], signal.SIGKILL)
                killed.append(new[-1])
            time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()
    return killed


@pytest.mark.parametrize("kills", [1, 2])
def test_killed_worker_is_retried_once(tmp_path, monkeypatch, kills):
    from campaign_tasks import SLOW, error_row, sleepy

    monkeypatch.setenv("PYTHONPATH", str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tasks = [Task(str(i), i) for i in range(8)]
    stop = threading.Event()
    killed = _killer(tmp_path, SLOW, kills, stop)
    try:
        report = run_campaign(sleepy, str(tmp_path), tasks, csv_path=tmp_path / "out.csv", header="i,sq,note",
                              on_error=error_row, meta={"t": 1}, scale=Scale(workers=2), progress=False)
    finally:
        stop.set()
    assert len(killed) == kills and report.retried == 1
    rows = _rows(tmp_path / "out.csv", drop=())
    assert [int(r["i"]) for r in rows] == list(range(8))                 # nothing lost, task order
    for r in rows:
        if int(r["i"]) != SLOW or kills == 1:
            assert r["sq"] == str(int(r["i"]) ** 2)
    slow = report.outcomes[SLOW]
    if kills == 1:
        assert slow.word == "ok"
    else:
        assert slow.word == "error" and "worker lost twice" in slow.detail and "WorkerCrashed" in slow.detail


def test_interrupted_run_resumes_from_its_journal(tmp_path, capsys):
    ran: list[int] = []

    def task(shared, i):
        if shared["stop_at"] == i:
            raise KeyboardInterrupt
        ran.append(i)
        return Outcome("even" if i % 2 == 0 else "odd", f"{i},{i % 2}")

    out = tmp_path / "r.csv"
    kw = dict(csv_path=out, header="i,parity", on_error=lambda p, why: Outcome("error", f"{p},"), progress=False,
              meta={"campaign": "parity"})
    tasks = [Task(str(i), i) for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        run_campaign(task, {"stop_at": 6}, tasks, **kw)
    assert ran == list(range(6)) and journal_path(out).exists()
    assert [r["i"] for r in _rows(out)] == [str(i) for i in range(6)]   # what finished is on disk
    with open(journal_path(out), "a") as f:
        f.write('{"key": "6", "word": "ev')                               # a crash while writing a line
    ran.clear()
    report = run_campaign(task, {"stop_at": -1}, tasks, **kw)
    assert ran == [6, 7, 8, 9] and report.resumed == 6
    assert "resuming" in capsys.readouterr().err
    assert [r["parity"] for r in _rows(out)] == [str(i % 2) for i in range(10)]
    assert not journal_path(out).exists()
    # other settings: the journal is not used
    with pytest.raises(KeyboardInterrupt):
        run_campaign(task, {"stop_at": 3}, tasks, **kw)
    ran.clear()
    report = run_campaign(task, {"stop_at": -1}, tasks, **{**kw, "meta": {"campaign": "other"}})
    assert report.resumed == 0 and ran == list(range(10))
    assert "other settings" in capsys.readouterr().err


def test_a_task_that_raises_is_an_error_row(tmp_path):
    def task(shared, i):
        if i == 2:
            raise ValueError("bad, sample")
        return Outcome("ok", f"{i},ok")

    report = run_campaign(task, None, [Task(str(i), i) for i in range(4)], csv_path=tmp_path / "e.csv",
                          header="i,note", on_error=lambda i, why: Outcome("error", f'{i},"{why}"', why),
                          meta={}, progress=False)
    assert [o.word for o in report.outcomes] == ["ok", "ok", "error", "ok"]
    assert report.outcomes[2].detail.startswith("ValueError: bad, sample")
    assert _rows(tmp_path / "e.csv", drop=())[2]["note"].startswith("ValueError: bad, sample")


def test_certify_error_row_has_the_reason():
    from qa_lirpa.verify.certify import CSV_HEADER, SampleResult, certify_error

    o = certify_error((7, None, 3), "RuntimeError: x, y")
    r = SampleResult.from_csv(o.row)
    assert (r.index, r.label, r.verdict, r.note) == (7, 3, "error", "RuntimeError: x, y")
    assert len(next(csv.reader([o.row]))) == len(CSV_HEADER.split(","))


def test_bad_campaign_arguments_are_one_line(checkpoint, tmp_path, capsys):
    args = ["certify", "--model", str(checkpoint), "--dataset", "synthetic", "--eps", "1", "--samples", "0:2",
            "--out", str(tmp_path / "x.csv"), "--no-progress"]
    assert main(args + ["--workers", "-1"]) == 2
    assert "--workers must be >= 0" in capsys.readouterr().err
    assert main(args + ["--cluster", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot join the Ray cluster" in err and len(err.strip().splitlines()) == 1
    assert main(args + ["--cluster", "headnode"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    monkey = campaign.Scale(workers=0)
    assert not monkey.parallel and campaign.Scale(cluster="auto").parallel
