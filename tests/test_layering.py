"""zoo's modules depend one way: every import of a zoo module (at the top of a
file or inside a function, and `importlib.import_module("zoo. ...")` with a
literal name) goes to the same layer or a lower one. Families never import
each other. The layers, lowest first:

0. `zoo` itself (the version), the family table (`zoo.families`, data),
   errors and backend helpers (`zoo.core.errors`, `zoo.core.compiled_loop`)
1. shared building blocks: `zoo.layers`, `zoo.samplers`, `zoo.utils` (COCO
   metrics included), `zoo.layout`, `zoo.data`
2. the preset format (`zoo.core.preset_io`, `preset_classes`,
   `preset_handlers`, `weights_io`, `deferred`) and the tokenizer base
   (`zoo.core.tokenizer`), which saves and loads through it
3. `zoo.tokenizers`: below core's model classes, which they never import;
   above the preset format they save into
4. the rest of `zoo.core`: backbones, tasks, preprocessors, generation
5. `zoo.presets`: handles, catalog, hub, conversion plumbing; it installs the
   resolver `zoo.core.preset_io.resolve` calls, and finds families' data and
   converters by module name
6. the families (`zoo.nlp.bert`, `zoo.nlp.opt`, `zoo.audio.whisper`,
   `zoo.cv.yolov8`, `zoo.diffusion.stable_diffusion`) and what their areas
   share (`zoo.cv.box_ops` / `nms`, `zoo.diffusion.schedulers`): zoo.core
   reaches these only through hooks the families set
   (`TextToImage.get_scheduler`)
7. `zoo.models`, the flat public namespace
8. the `zoo` command and the benchmarks (`zoo.cli*`, `zoo.benchmarks`)

A preset's classes are found through the module its config records
(`zoo.core.preset_classes.get_class`), not by importing every family.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[1] / "zoo"
FAMILIES = ("zoo.nlp.bert", "zoo.nlp.opt", "zoo.audio.whisper", "zoo.cv.yolov8",
            "zoo.diffusion.stable_diffusion")
# (module prefix, layer); the longest matching prefix wins
LAYERS = {
    "zoo": 0, "zoo.families": 0, "zoo.core.errors": 0, "zoo.core.compiled_loop": 0,
    "zoo.core.processes": 0, "zoo.core.verified": 0,
    "zoo.layers": 1, "zoo.samplers": 1, "zoo.utils": 1, "zoo.layout": 1, "zoo.data": 1,
    **{f"zoo.core.{m}": 2 for m in ("preset_io", "preset_classes", "preset_handlers",
                                    "weights_io", "deferred", "tokenizer")},
    "zoo.tokenizers": 3,
    "zoo.core": 4,
    "zoo.presets": 5,
    **dict.fromkeys(FAMILIES, 6), "zoo.nlp": 6, "zoo.audio": 6, "zoo.cv": 6,
    "zoo.diffusion": 6,
    "zoo.models": 7,
    "zoo.cli": 8, "zoo.cli_args": 8, "zoo.cli_convert": 8, "zoo.cli_demo": 8,
    "zoo.cli_detect": 8, "zoo.cli_launch": 8, "zoo.cli_transcribe": 8,
    "zoo.benchmarks": 8,
}

pytestmark = pytest.mark.once  # reads source files only


def layer_of(module: str) -> tuple[int, str]:
    """(layer, the prefix that decided it)."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best], best


def family_of(module: str) -> str | None:
    return next((f for f in FAMILIES if module == f or module.startswith(f + ".")), None)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, modules: set[str]) -> list[tuple[str, int]]:
    """(imported zoo module, line) for every import in the file, wherever it is."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                      if f"{node.module}.{a.name}" in modules]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return [(m, line) for m, line in found if m == "zoo" or m.startswith("zoo.")]


def wrong_way_imports() -> list[str]:
    files = {module_name(p): p for p in ZOO.rglob("*.py")}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    # `from zoo.core import preset_io` runs zoo/core/__init__.py too; a package
    # whose __init__ imports nothing of zoo adds no dependency of its own
    namespaces = {m for m, p in files.items()
                  if p.name == "__init__.py" and not imports(trees[m], set(files))}
    problems = []
    for module, path in sorted(files.items()):
        (low, _), family = layer_of(module), family_of(module)
        for target, line in imports(trees[module], set(files)):
            if target in namespaces:
                continue
            (high, prefix), other = layer_of(target), family_of(target)
            where = f"{path.relative_to(ZOO.parent)}:{line}: {module} imports {target}"
            if high > low:
                problems.append(f"{where} (layer {high}, {prefix}, is above layer {low})")
            elif family and other and other != family:
                problems.append(f"{where} (another family)")
    return problems


def test_every_module_has_a_layer():
    assert all(module_name(p) == "zoo" or layer_of(module_name(p))[1] != "zoo"
               for p in ZOO.rglob("*.py") if p.parent != ZOO or p.stem != "__init__"), (
        "a module outside every named layer: add it to LAYERS")


def test_imports_go_one_way():
    problems = wrong_way_imports()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The check itself: a function-level import and an import_module string count."""
    tree = ast.parse("def f():\n    from zoo.models import Task\n"
                     "    importlib.import_module('zoo.presets.catalog')\n")
    assert imports(tree, set()) == [("zoo.models", 2), ("zoo.presets.catalog", 3)]
    assert layer_of("zoo.core.task") == (4, "zoo.core")
    assert layer_of("zoo.core.preset_io") == (2, "zoo.core.preset_io")
    assert layer_of("zoo.core.errors") == (0, "zoo.core.errors")
    assert layer_of("zoo.cv.yolov8.yolov8_detector") == (6, "zoo.cv.yolov8")
    assert family_of("zoo.cv.nms") is None and layer_of("zoo.cv.nms") == (6, "zoo.cv")


#: modules that may ask `keras.backend.backend()`: the one home of backend
#: differences (named capabilities), the benchmarks (one worker per backend)
#: and the command line (which prints it)
ASKS_BACKEND = ("zoo.core.compiled_loop", "zoo.benchmarks", "zoo.cli")


def backend_calls(tree: ast.AST) -> list[int]:
    """Lines that call `keras.backend.backend()` (or `backend.backend()`)."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "backend" and isinstance(node.func.value, (ast.Attribute,
                                                                             ast.Name))
            and getattr(node.func.value, "attr", getattr(node.func.value, "id", "")) == "backend"]


def test_backend_differences_live_in_one_module():
    """Layers and tasks ask named capabilities (`has_fused_attention()`,
    `can_shard()`, ...) of zoo.core.compiled_loop, never the backend's name."""
    problems = []
    for path in sorted(ZOO.rglob("*.py")):
        module = module_name(path)
        if module.startswith(ASKS_BACKEND):
            continue
        problems += [f"{path.relative_to(ZOO.parent)}:{line}"
                     for line in backend_calls(ast.parse(path.read_text(), str(path)))]
    assert not problems, ("keras.backend.backend() outside zoo.core.compiled_loop (add a named "
                          "capability there):\n" + "\n".join(problems))
    assert backend_calls(ast.parse("if keras.backend.backend() == 'jax':\n    pass\n")) == [1]


def run_python(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_a_preset_loads_its_own_family_only(tmp_path):
    """Fresh processes: a saved BERT preset loads through the base class with
    no family imported first, importing BERT's modules only; without
    zoo.presets a catalog name is one clear error naming the fix."""
    run_python(f"""
        from zoo.nlp.bert import BertBackbone
        backbone = BertBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16,
                                intermediate_dim=32, max_sequence_length=16)
        backbone.save_to_preset({str(tmp_path / 'p')!r})
        print("saved")
        """, tmp_path)
    loaded = run_python(f"""
        import sys
        from zoo.core.backbone import Backbone
        from zoo.core import preset_handlers
        assert not preset_handlers.installed()
        backbone = Backbone.from_preset({str(tmp_path / 'p')!r})
        # modules inside a family (zoo.nlp.opt.opt_backbone), not package files
        # such as zoo/nlp/__init__.py, which names both text families lazily
        families = sorted({{m.split(".")[2] for m in sys.modules
                           if m.startswith(("zoo.nlp.", "zoo.audio.", "zoo.cv.", "zoo.diffusion."))
                           and m.count(".") >= 3}})
        print(type(backbone).__name__, families, "zoo.models" in sys.modules)
        """, tmp_path)
    assert loaded == "BertBackbone ['bert'] False"
    error = run_python("""
        from zoo.core.errors import PresetError
        from zoo.tokenizers import WordPieceTokenizer
        try:
            WordPieceTokenizer.from_preset("all_minilm_l6_v2")
        except PresetError as e:
            print(e)
        """, tmp_path)
    assert "zoo.presets, which is not loaded. Fix: import zoo.models" in error
