"""The README's example runs and its bounds contain the exact outputs of the box."""
import itertools
import re
from pathlib import Path

import torch


def test_readme_example_runs_and_is_sound():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    model, x, lb, ub = ns["model"], ns["x"], ns["lb"].detach(), ns["ub"].detach()
    grid = torch.tensor(list(itertools.product(*[range(int(v) - 2, int(v) + 3) for v in x[0]])),
                        dtype=torch.float64)
    import qa_lirpa

    y = qa_lirpa.integer_forward(model, grid)
    assert (lb <= y.min(0).values).all() and (ub >= y.max(0).values).all()
    assert torch.equal(ns["exact"], qa_lirpa.integer_forward(model, x))


def test_readme_graph_example_runs_and_matches_the_float_forward():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    first, second = re.findall(r"```python\n(.*?)```", text, re.S)[:2]
    ns: dict = {}
    exec(compile(first, "README.md", "exec"), ns)
    exec(compile(second, "README.md", "exec"), ns)
    import qa_lirpa

    net, img = ns["net"], ns["img"]
    assert not net.is_chain() and len(net.consumers("a1")) == 2
    assert torch.equal(ns["exact"], qa_lirpa.integer_forward(net, img))
    with torch.no_grad():
        assert torch.equal(net(img), ns["exact"])          # power-of-two formats: the float forward is exact
