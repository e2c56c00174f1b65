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


# The one writer outside storage/: the machine-wide cache of dequantised embedded models. latentqa.models must
# convert a GGUF wherever a model is loaded (tests, benches, workers) and may not import storage/, so it keeps
# storage's rule by hand: a `.partial` folder, renamed into place when complete.
WRITERS_OUTSIDE_STORAGE = {("latentqa/models.py", "convert_gguf")}
BANNED = {"write_bytes", "save_pretrained", "unlink", "rmtree", "rename", "touch", "savefig", "to_parquet",
          "write_table", "to_csv", "save", "save_file"}  # making a folder writes no content and stays allowed
OS_WRITES = {"os": {"replace", "remove", "rename", "renames", "unlink", "rmdir", "removedirs", "truncate"},
             "shutil": {"rmtree", "move", "copy", "copy2", "copyfile", "copytree"}}


def _writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) for each call that writes, renames or deletes a file without storage/'s help."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                found.append((node.lineno, f"open(..., {mode.value!r})"))
        elif isinstance(node.func, ast.Attribute):
            name = node.func.attr
            module = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            if name in OS_WRITES.get(module, ()):
                found.append((node.lineno, f"{node.func.value.id}.{name}()"))
            elif name in BANNED or (name in ("write_text", "write_json") and len(node.args) < 2):
                found.append((node.lineno, f".{name}()"))
    return found


def _functions(tree: ast.AST) -> dict[int, str]:
    """{line: enclosing top-level function name} for every line inside a top-level function."""
    return {line: node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for line in range(node.lineno, node.end_lineno + 1)}


def test_only_storage_writes_files():
    """PROTOCOL.md's completion rule (a temporary name, renamed when complete) holds only if storage/ does every
    write: everything else calls StageDir's writers (`out.write_text(name, text)`, two arguments) or storage's
    helpers, never a Path's own (`path.write_text(text)`, one), open(..., "w"), a library's saver or a deletion."""
    found = []
    for package in ("tasks", "flows", "latentqa", "app"):
        for path in (ROOT / package).rglob("*.py"):
            tree, rel = ast.parse(path.read_text()), str(path.relative_to(ROOT))
            inside = _functions(tree)
            found += [f"{rel}:{line} {call}" for line, call in _writes(tree)
                      if (rel, inside.get(line)) not in WRITERS_OUTSIDE_STORAGE]
    assert not found, found


def test_the_write_check_sees_each_kind_of_write():
    code = ("def f(p, out):\n    p.write_text('x')\n    open(p, 'w')\n    open(p, mode='ab')\n    p.unlink()\n"
            "    model.save_pretrained(p)\n    os.replace(p, p)\n    out.write_text('name', 'x')\n    open(p)\n"
            "    open(p, 'rb')\n    'a'.replace('a', 'b')\n    os.getenv('X')\n")
    assert [line for line, _ in _writes(ast.parse(code))] == [2, 3, 4, 5, 6, 7]
