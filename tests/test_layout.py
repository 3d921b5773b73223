"""The package's layout: its modules import each other without a cycle — counting the imports
made only for type checking (``if TYPE_CHECKING:``) — so each module can be read, tested and
moved on its own. (An import inside a function, made where it is used, is not a dependency of
the module: it does not count.)"""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "seedgrid"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The seedgrid modules ``path`` imports at module level (under ``if`` blocks too)."""
    found = set()
    nodes = list(ast.parse(path.read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If):
            nodes += node.body + node.orelse
        elif isinstance(node, ast.Try):
            nodes += node.body + node.orelse + node.finalbody + [
                n for h in node.handlers for n in h.body]
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from seedgrid import data`: the module seedgrid.data
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return {m for m in found if m in modules}


def test_no_import_cycle_even_for_type_checking():
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _top_level_imports(p, set(paths)) - {m} for m, p in paths.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:  # depth first; 1 = on the current path, 2 = done
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            assert state.get(dep) != 1, " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert len(graph) > 30  # (the package was found)


def test_every_slurm_command_is_run_by_the_slurm_backend():
    """sbatch, scontrol, sacct (and the rest of SLURM's commands) are run in one module,
    seedgrid/grid/slurm.py; and it runs some (the scan finds them)."""
    commands = {"sbatch", "scontrol", "sacct", "squeue", "scancel", "srun", "sinfo"}
    where: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.List)
                    and node.args[0].elts and isinstance(node.args[0].elts[0], ast.Constant)
                    and node.args[0].elts[0].value in commands):
                where.setdefault(str(path.relative_to(REPO)), []).append(
                    node.args[0].elts[0].value)
        for node in ast.walk(ast.parse(path.read_text())):  # shutil.which("sbatch") too
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "which" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in commands):
                where.setdefault(str(path.relative_to(REPO)), []).append(
                    f"which {node.args[0].value}")
    assert set(where) == {"seedgrid/grid/slurm.py"}, where
    assert {"sbatch", "scontrol", "sacct"} <= set(where["seedgrid/grid/slurm.py"])


def test_every_citation_is_of_a_public_source_or_a_file_of_the_project():
    """A reader has no development notes: code, presets, docs and benchmarks cite papers, public
    repositories and the project's own files only."""
    import re

    private = re.compile(r"\.\./shared|(?<![\w/])notes/[\w.-]+\.md")
    files = [p for folder in ("seedgrid", "docs", "benchmarks", "analysis")
             for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".md", ".toml")]
    cited = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in [*files, REPO / "README.md"]
             for m in private.finditer(p.read_text())]
    assert not cited, cited
