"""The CP-SAT options benchmark's pure parts (``benchmarks/cpsat_options.py``): variant parsing,
and the table flags images whose decided verdicts differ between variants."""
from __future__ import annotations

import pytest
from benchscripts import load_benchmark

co = load_benchmark("cpsat_options.py", "cpsat_options")


def test_variant_keywords_and_parameters():
    name, kw, params = co.parse_variant("eager:eager_lp=true,threads=2,p.linearization_level=1,p.cut_level=0.5")
    assert name == "eager"
    assert kw == {"eager_lp": True, "threads": 2}
    assert params == {"linearization_level": 1, "cut_level": 0.5}
    assert co.parse_variant("lazy:eager_lp=off")[1] == {"eager_lp": False}
    assert co.parse_variant("plain:") == ("plain", {}, {})


@pytest.mark.parametrize("bad", ["x:eagerlp=true", "x:eager_lp"])
def test_bad_variant_is_one_line(bad):
    with pytest.raises(SystemExit, match="--variant"):
        co.parse_variant(bad)


def test_table_counts_and_flags_disagreement():
    got = {("a", 1): ("UNSAT", 3.0, 10), ("b", 1): ("TIMEOUT", 20.0, 99),
           ("a", 2): ("SAT", 1.0, 5), ("b", 2): ("UNSAT", 2.0, 7)}
    text, bad = co.table(["a", "b"], [1, 2], got, 20.0)
    assert bad == 1
    assert "| `a` | 2 / 2 | 1 | 1 | 0 |" in text and "| `b` | 1 / 2 | 1 | 0 | 1 |" in text
    assert "timeout (20 s)" in text and text.count("DISAGREE") == 1
    got[("b", 2)] = ("SAT", 2.0, 7)
    assert co.table(["a", "b"], [1, 2], got, 20.0)[1] == 0
