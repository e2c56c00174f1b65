"""The four layers import one way: latentqa and storage never import Prefect or each other's upper layers."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[str]:
    """Every top-level package a package's modules import, at any depth (inside functions too)."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_importing_latentqa_leaves_prefect_out():
    code = ("import sys, latentqa, latentqa.config, latentqa.models, latentqa.residual, latentqa.patching, "
            "latentqa.decoder, latentqa.llm, latentqa.server, latentqa.dialogs; print('prefect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_training_worker_imports_no_prefect():
    """Each data-parallel worker (tasks/train_ddp.py) on a GPU node needs torch, not the orchestrator."""
    code = "import sys, tasks.train_ddp, tasks.train_fit, tasks._data; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_import_direction():
    # app/ (the command line, `latentqa up`) is the only package above the flows; nothing imports it
    assert not {"storage", "tasks", "flows", "prefect", "app"} & _imports("latentqa")
    assert not {"latentqa", "tasks", "flows", "prefect", "app"} & _imports("storage")
    assert not {"flows", "app"} & _imports("tasks")
    assert "app" not in _imports("flows")


def test_stages_write_files_only_through_storage():
    """PROTOCOL.md's completion rule (a temporary name, renamed when complete) holds only if storage/ does every
    write: stages call StageDir's writers (`out.write_text(name, text)`, two arguments), never a Path's own
    (`path.write_text(text)`, one) or a library's saver or a deletion."""
    banned = {"write_bytes", "save_pretrained", "unlink", "rmtree", "rename", "touch", "savefig", "to_parquet"}
    found = []
    for package in ("tasks", "flows"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                name = node.func.attr
                if name in banned or (name in ("write_text", "write_json") and len(node.args) < 2):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{name}()")
    assert not found, found
