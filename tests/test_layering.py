"""The package depends only downward: no import cycle; scoring and inference import no training code;
the generic package imports nothing corpus-specific."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "etser"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """etser modules imported anywhere in a file (top level or inside functions; relative imports resolved)."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base == "etser" or base.startswith("etser."):
                # "from etser.caption import data": data may be a module of the package
                subs = {f"{base}.{a.name}" for a in node.names if (ROOT / Path(*f"{base}.{a.name}".split("."))
                                                                    ).with_suffix(".py").is_file()
                        or (ROOT / Path(*f"{base}.{a.name}".split(".")) / "__init__.py").is_file()}
                out |= subs or {base}
                if len(subs) < len(node.names) and base != "etser":
                    out.add(base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("etser.")}
    return out


def _graph() -> dict[str, set[str]]:
    """Every module of the package, subpackages included -> the etser modules it imports."""
    return {_module(p): _imports(p) - {_module(p)} for p in sorted(PKG.rglob("*.py"))}


def _reach(m: str) -> set[str]:
    """Modules loaded by importing ``m`` (a module's parent packages are loaded before it)."""
    graph = _graph()
    seen, todo = set(), [m]
    while todo:
        x = todo.pop()
        parents = [x.rsplit(".", k)[0] for k in range(1, x.count("."))]
        for d in [*graph.get(x, ()), *parents]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_graph_covers_every_subpackage():
    graph = _graph()
    for sub in (p.parent for p in PKG.rglob("__init__.py")):
        assert _module(sub / "__init__.py") in graph, sub
    assert "etser.learn.loop" in graph["etser.learn.train"] and "etser.learn.loop" in graph["etser.caption.train"]


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


TRAINING = {"etser.learn.train", "etser.caption.train", "etser.learn.loop"}
READING = ("etser.learn.score", "etser.learn.infer", "etser.report.results", "etser.report.fusion_results", "etser.featset", "etser.learn.checkpoint",
           "etser.metrics", "etser.tasks", "etser.tasks.classes", "etser.tasks.continuous", "etser.launch.plan", "etser.launch.run",
           "etser.caption.score", "etser.caption.decode", "etser.report.caption_table", "etser.caption.metrics",
           "etser.tasks.caption")


def test_scoring_and_inference_reach_no_training_code():
    for m in READING:
        assert not _reach(m) & TRAINING, (m, _reach(m) & TRAINING)
    assert _reach("etser.metrics") <= {"etser"}   # numpy and scikit-learn only


def test_importing_and_running_score_loads_no_training_module():
    code = ("import sys, etser.learn.score, etser.learn.infer, etser.report.results, etser.launch.plan, etser.launch.run, etser.caption.score; "
            "from etser import featset; from etser.learn import checkpoint; "
            f"print(sorted(m for m in sys.modules if m in {sorted(TRAINING) + ['emotiontalk']} "
            "or m.startswith('emotiontalk.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_metrics_module_imports_only_numpy_and_sklearn():
    tree = ast.parse((PKG / "metrics.py").read_text(encoding="utf-8"))
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= {"__future__", "numpy", "sklearn", "pathlib", "typing"}, mods


def test_generic_package_names_no_corpus_labels_or_heads_by_name():
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        assert "emotiontalk" not in text.replace("EmotionTalk", ""), p   # never imports local/emotiontalk
        for label in ("\"neutral\"", "\"happy\"", "'neutral'", "\"Speech(Four)\""):
            assert label not in text, (p, label)
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        for head in ("\"superb\"", "\"paper\"", "\"attentive\""):
            assert f"== {head}" not in text and f"{head} ==" not in text, (p, head)


def test_learning_launch_and_report_code_names_no_modality_backend_or_task():
    """What differs between modalities, backends, fusion models and tasks is declared by their objects (a
    modality's input table, a backend's class, a head's number of streams, the tasks YAML's sections)."""
    import re

    names = ("speech", "text", "visual", "fusion", "ours", "espnet", "sentiment", "caption", "multi_four", "multi_all")
    check = re.compile(r"""[!=]=\s*["'](%s)["']|["'](%s)["']\s*[!=]=""" % ("|".join(names), "|".join(names)))
    for sub in ("learn", "launch", "report"):
        for p in sorted((PKG / sub).rglob("*.py")):
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                assert not check.search(line), f"{p.relative_to(ROOT)}:{n}: {line.strip()}"


def test_no_issue_numbers_in_owned_files():
    import re

    for p in [ROOT / "run.sh", *PKG.rglob("*.py")]:
        assert not re.search(r"\bissue\s*#?\d", p.read_text(encoding="utf-8"), re.I), p
