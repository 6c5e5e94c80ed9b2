"""The layout's rules, read from the source: no import cycle between modules (lazy imports inside functions
included), lower boxes never import higher ones, at most 8 modules flat in ``hffm_opt/``, none over 500 lines; the
learner path loads without the solver and tuning stack."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import hffm_opt

ROOT = Path(hffm_opt.__file__).parent
# the boxes of the flow, lowest first (ARCHITECTURE.md); a module may import its own box and lower ones
LAYERS = {"errors": 0, "_io": 0, "_version": 0, "_cores": 0, "_pools": 0, "network": 1, "plan": 2, "evaluate": 3,
          "formulations": 4, "solvers": 5, "schedulers": 6, "learners": 7, "analysis": 8, "tuning": 8, "cli": 9,
          "__init__": 10}


def module_name(path: Path) -> str:
    parts = ["hffm_opt", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every hffm_opt module ``name`` imports, at module level or inside functions (``from P import m`` of a
    submodule m counts as importing P.m, any other name as importing P itself)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("hffm_opt"):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
    return out - {name}


def import_graph() -> nx.DiGraph:
    mods = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        graph.add_edges_from((name, target) for target in imports_of(name, path, set(mods)))
    return graph


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_the_graph_reader_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert graph.has_edge("hffm_opt.cli.plans", "hffm_opt.schedulers.optimising")  # lazy, inside a function
    assert graph.has_edge("hffm_opt.evaluate.consistent", "hffm_opt.network.trees")  # `from ..network import trees`
    assert graph.has_edge("hffm_opt.solvers.f4.decomposition", "hffm_opt.solvers.f4.structures")


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


def test_lower_boxes_never_import_higher_ones():
    graph = import_graph()
    bad = [(a, b) for a, b in graph.edges if layer(b) > layer(a)]
    assert not bad, f"imports against the flow: {bad}"


def test_every_module_belongs_to_a_box():
    for name in modules():
        parts = name.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, f"{name}: not in a box of ARCHITECTURE.md"


def test_at_most_8_modules_flat_and_none_over_500_lines():
    flat = [p.name for p in ROOT.glob("*.py")]
    assert len(flat) <= 8, flat
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


@pytest.mark.parametrize("bad", [
    ("hffm_opt.network.scenario", "from ..solvers import solve"),
    ("hffm_opt.plan", "from .network import scenario\nfrom .cli import main"),
])
def test_a_new_upward_import_would_be_caught(tmp_path, bad):
    name, source = bad
    path = tmp_path / "mod.py"
    path.write_text(source)
    targets = imports_of(name, path, set(modules()))
    assert any(layer(t) > layer(name) for t in targets)


def test_the_learner_path_runs_without_the_solver_and_tuning_stack():
    # a CUDA machine's image has torch but no cvxpy, pyomo, HiGHS or Optuna: the command line, the learners and
    # the learner bench must load without them (they load lazily, for the commands and the dynamic mode that need
    # them)
    code = ("import sys\n"
            "import hffm_opt.cli, hffm_opt.analysis.learner_bench, hffm_opt.learners, hffm_opt.schedulers\n"
            "hffm_opt.cli.build_parser()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'cvxpy', 'pyomo', 'optuna', 'highspy', 'sqlalchemy', 'gurobipy'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
