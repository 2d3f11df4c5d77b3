"""The QA-IBP benchmark's run definitions give valid training configs of the intended kind."""
from __future__ import annotations

from benchscripts import load_benchmark

from qa_lirpa.train.cli import load_train_config


def _bench():
    return load_benchmark("qaibp/bench.py", "qaibp_bench")


def test_run_specs_make_the_three_kinds_of_training():
    b = _bench()
    specs = b.run_specs(["mnist", "fashion-mnist"], [1.0, 4.0], list(b.METHODS))
    assert len(specs) == 10 and len({s.name for s in specs}) == 10
    for s in specs:
        cfg = load_train_config(s.config(), s.overrides(30) + ["schedule.epochs=30"])
        assert cfg.data.name == s.dataset and cfg.model.arch == "small_conv" and cfg.model.bits == 8
        if s.method == "qat":
            assert cfg.schedule.warmup_epochs == cfg.schedule.epochs      # never an IBP step
            assert s.verify_eps([1.0, 4.0]) == [1.0, 4.0]
        else:
            assert cfg.schedule.warmup_epochs < cfg.schedule.epochs and cfg.schedule.eps == s.eps
            assert s.verify_eps([1.0, 4.0]) == [s.eps]
        assert cfg.model.float_train == (s.method == "float_ibp")


def test_summarize_counts_verdicts():
    b = _bench()
    rows = [{"verdict": v, "time_s": t} for v, t in
            [("robust", "1.0"), ("falsified", "3.0"), ("misclassified", "0.1"), ("timeout", "10")]]
    s = b.summarize(rows)
    assert (s["n"], s["robust"], s["falsified"], s["timeout"], s["misclassified"]) == (4, 1, 1, 1, 1)
    assert s["time_sum"] == 14.0 and s["time_max"] == 10.0 and s["time_median"] == 3.0
