"""The wheel is the product: built from the checkout, installed (not editable)
into a throw-away environment, and run from a folder outside the checkout.

The environment is a `venv` without pip whose only own package is the zoo
wheel; a `.pth` file puts the test environment's site-packages (keras, the
backends, the peers and the weight packages, all already installed) behind
it, so nothing is downloaded. An audit hook, installed by a `.pth` file of
that environment, records every file any of its Python processes (the `zoo` command and the
benchmark's workers) opens inside the checkout, other than that environment's
own packages; the test fails if there is one. `zoo demo` runs here, not in
test_cli.py: it is the user's first command, so it is checked as installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()

# Written into the throw-away environment: every `open` under the checkout
# (except the base environment's site-packages, which live in .venv there)
# is appended to $ZOO_WHEEL_OPENS, one path a line.
AUDIT_HOOK = """\
import os, sys

_root = os.environ.get("ZOO_WHEEL_CHECKOUT")
_log = os.environ.get("ZOO_WHEEL_OPENS")
_allowed = os.environ.get("ZOO_WHEEL_ALLOWED", "\\0")
if _root and _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _hook(event, args, _root=_root + os.sep, _allowed=_allowed, _fd=_fd):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_root) and not path.startswith(_allowed):
                os.write(_fd, (path + "\\n").encode())

    sys.addaudithook(_hook)
"""


def build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the package sources (a build in the
    checkout would write build/ and *.egg-info into it)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "zoo", src / "zoo",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(out / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (out / "dist").glob("zoo-*.whl")
    return wheel


def make_env(env_dir: Path, wheel: Path) -> Path:
    """A venv with the wheel installed and the base site-packages behind it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz_base_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "zoo_wheel_audit.py").write_text(AUDIT_HOOK)
    (site / "00_zoo_wheel_audit.pth").write_text("import zoo_wheel_audit\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--quiet", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir / "bin" / "zoo"


@pytest.mark.real_weights
@pytest.mark.once(on="torch")
def test_installed_wheel_runs_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"zoo/data/story.flac", "zoo/data/grace_hopper.jpg",
            "zoo/benchmarks/bench_bert.py", "zoo/benchmarks/suite.py"} <= set(names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    zoo = make_env(tmp_path / "env", wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    opens = tmp_path / "opens.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(ZOO_WHEEL_CHECKOUT=str(ROOT), ZOO_WHEEL_OPENS=str(opens),
               ZOO_WHEEL_ALLOWED=str(Path(sysconfig.get_paths()["purelib"])) + os.sep,
               KERAS_BACKEND=BACKEND)

    def run(*args: str, timeout: float = 600) -> str:
        proc = subprocess.run([str(zoo), *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc.stdout

    where = subprocess.run([str(tmp_path / "env" / "bin" / "python"), "-c",
                            "import zoo; print(zoo.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(tmp_path / "env")), where  # the wheel, not the checkout

    assert "benchmark" in run("--help")
    presets = run("presets")
    assert all(f"{name} " in presets for name in ("all_minilm_l6_v2", "whisper_tiny_en",
                                                 "yolov8s_fall"))
    assert "all installed" in run("packages")

    demo = run("demo", "--out-dir", str(work / "demo"))
    assert f"Keras backend: {BACKEND}" in demo
    ranking = [line for line in demo.splitlines() if line.startswith(("  +", "  -"))]
    assert ranking[0].endswith("Most indoor plants need bright, indirect light.")
    srt = work / "demo" / "transcript.srt"
    assert f"subtitles: {srt}" in demo and srt.read_text().startswith("1\n00:00:00,000 --> ")
    assert "small town by the sea" in demo
    png = work / "demo" / "detections.png"
    assert f"annotated image: {png}" in demo and png.stat().st_size > 10_000

    report = run("benchmark", "--smoke", "--family", "bert", "--backend", BACKEND,
                 "--out", str(work / "bench.json"))
    assert "| bert | " in report and (work / "bench.json").is_file()
    # Nothing was written where a checkout would have a benchmarks/ folder.
    assert sorted(p.name for p in work.iterdir()) == ["bench.json", "bench.png", "demo"]

    read = sorted(set(opens.read_text().splitlines())) if opens.exists() else []
    assert not read, f"files read from the checkout: {read[:10]}"
