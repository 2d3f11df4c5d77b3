"""The architecture rules of issue 12, checked on the source: backends ask the op registry instead of
switching on layer types, and the rooms (subpackages and top-level modules) import each other
without a cycle (docs/architecture.md)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qa_lirpa"

#: where layers are walked: these modules must ask the registry (op definitions, in the layers'
#: own files under qa_lirpa/nn and qa_lirpa/onnx/ort_layers.py, may of course name their types, and
#: qa_lirpa.graph.as_graph is where a chain becomes a graph)
BACKENDS = ["verify", "exact", "train", "demo", "onnx/export.py", "onnx/referee.py", "nn/reference.py",
            "nn/intervals.py", "vnncomp.py", "models.py", "aaai21.py", "benchfolder.py"]

#: a layer class: ours (Quant*, Float32*, TolerantQuant) or torch's layer modules
LAYER = r"(Quant\w+|Float32\w+|TolerantQuant|_QuantWeighted|nn\.(Linear|Conv\dd|ReLU|Flatten|Unflatten|Identity|" \
        r"Dropout|MaxPool\dd|AvgPool\dd|BatchNorm\dd|Sequential))"
SWITCH = re.compile(r"isinstance\([^,]+,\s*\(?[^)]*?\b" + LAYER + r"\b")


def _files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_the_switch_pattern_finds_switches():
    assert SWITCH.search("if isinstance(layer, (QuantLinear, QuantConv2d)):")
    assert SWITCH.search("elif isinstance(m, nn.Flatten):")
    assert SWITCH.search("isinstance(layer, (nn.Identity, nn.Dropout))")
    assert not SWITCH.search("isinstance(e, ValueError)")
    assert not SWITCH.search("isinstance(spec, InputSpec)")


@pytest.mark.parametrize("entry", BACKENDS)
def test_no_backend_switches_on_layer_types(entry):
    found = []
    for path in _files(entry):
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            if SWITCH.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{no}: {line.strip()}")
    assert not found, "ask qa_lirpa.graph.op_for(layer) instead:\n" + "\n".join(found)


def _room(module: str) -> str:
    """``qa_lirpa.verify.bab`` -> ``verify``; ``qa_lirpa.models`` -> ``models``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every qa_lirpa module an import statement of ``path`` names (also inside functions)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            names = [target] + [f"{target}.{a.name}" for a in node.names] if target == "qa_lirpa" else [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, node.lineno) for n in names if n.startswith("qa_lirpa.")]
    return out


def _room_graph() -> dict[str, dict[str, str]]:
    rooms = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0]
             for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE}
    edges: dict[str, dict[str, str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        src = path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
        for module, line in _imports(path):
            dst = _room(module)
            if dst in rooms and dst != src:
                edges.setdefault(src, {}).setdefault(dst, f"{path.relative_to(PACKAGE)}:{line}")
    return edges


def test_no_import_cycle_between_rooms():
    edges = _room_graph()
    assert "verify" in edges.get("exact", {}) or "nn" in edges.get("verify", {})   # the walk sees imports
    cycles = []
    state: dict[str, int] = {}

    def visit(room: str, path: list[str]) -> None:
        state[room] = 1
        for nxt in edges.get(room, {}):
            if state.get(nxt) == 1:
                cyc = path[path.index(nxt):] + [nxt]
                cycles.append(" -> ".join(f"{a} ({edges[a][b]})" for a, b in zip(cyc, cyc[1:])))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[room] = 2

    for room in sorted(edges):
        if room not in state:
            visit(room, [room])
    assert not cycles, "\n".join(cycles)


def test_exact_does_not_import_verify():
    edges = _room_graph()
    assert "verify" not in edges.get("exact", {}), edges.get("exact", {}).get("verify")
