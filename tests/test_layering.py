"""The package depends only downward: no import cycle; scoring and inference import no training code;
the generic package imports nothing corpus-specific."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "etser"


def _imports(path: Path) -> set[str]:
    """etser modules imported anywhere in a file (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "etser":
                out |= {f"etser.{a.name}" for a in node.names}
            elif node.module.startswith("etser."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("etser.")}
    return out


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every module of the package and its subpackages -> the etser modules it imports."""
    return {_module(p): _imports(p) - {_module(p)} for p in PKG.rglob("*.py")}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_scoring_and_inference_reach_no_training_code():
    graph = _graph()

    def reach(m: str) -> set[str]:
        seen, todo = set(), [m]
        while todo:
            x = todo.pop()
            for d in graph.get(x, ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    for m in ("etser.score", "etser.infer", "etser.results", "etser.featset", "etser.checkpoint",
              "etser.metrics", "etser.tasks", "etser.launch.plan", "etser.launch.run"):
        assert "etser.train" not in reach(m), m
    assert reach("etser.metrics") == set()   # numpy and scikit-learn only


def test_importing_and_running_score_loads_no_training_module():
    code = ("import sys, etser.score, etser.infer, etser.results, etser.launch.plan, etser.launch.run; "
            "from etser import checkpoint, featset; "
            "print(sorted(m for m in sys.modules if m in ('etser.train', 'emotiontalk') or m.startswith('emotiontalk.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_metrics_module_imports_only_numpy_and_sklearn():
    tree = ast.parse((PKG / "metrics.py").read_text(encoding="utf-8"))
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= {"__future__", "numpy", "sklearn", "pathlib", "typing"}, mods


def test_generic_package_names_no_corpus_labels_or_heads_by_name():
    for p in [*PKG.glob("*.py"), *PKG.glob("launch/*.py")]:
        text = p.read_text(encoding="utf-8")
        assert "emotiontalk" not in text.replace("EmotionTalk", ""), p   # never imports local/emotiontalk
        for label in ("\"neutral\"", "\"happy\"", "'neutral'", "\"Speech(Four)\""):
            assert label not in text, (p, label)
    for p in ("train.py", "score.py", "infer.py", "featset.py", "checkpoint.py", "launch/plan.py"):
        text = (PKG / p).read_text(encoding="utf-8")
        for head in ("\"superb\"", "\"paper\"", "\"attentive\""):
            assert f"== {head}" not in text and f"{head} ==" not in text, (p, head)


def test_no_issue_numbers_in_owned_files():
    import re

    for p in [ROOT / "run.sh", *[PKG / f for f in ("train.py", "score.py", "infer.py", "heads.py", "tasks.py",
                                                    "results.py", "cli.py", "metrics.py", "featset.py",
                                                    "checkpoint.py", "runtime.py", "launch/plan.py", "launch/run.py")]]:
        assert not re.search(r"\bissue\s*#?\d", p.read_text(encoding="utf-8"), re.I), p
