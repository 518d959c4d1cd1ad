"""Atomic writes outside the hub (zoo/utils/atomic.py): the target is old or
new, never half; an exception leaves nothing behind; what a kill -9 left is
cleaned by the next write into that folder, and a live writer's work never is.
Writers are killed for real: each runs in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zoo.utils import atomic

pytestmark = pytest.mark.once  # files and processes only: the same on every backend
ROOT = Path(__file__).resolve().parents[2]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def start_writer(code: str, folder: Path) -> subprocess.Popen:
    """A child that runs `code` (with `folder` and `ready()` defined) and then
    hangs; returns once it has called ready()."""
    ready = folder.parent / f"ready-{time.monotonic_ns()}"
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from zoo.utils import atomic
        folder = Path({str(folder)!r})
        def ready():
            Path({str(ready)!r}).touch()
            time.sleep(600)
    """) + textwrap.dedent(code)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert child.poll() is None, "the writer died before it was ready"
        assert time.monotonic() < deadline, "the writer never got ready"
        time.sleep(0.05)
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_file_is_replaced_whole_and_an_error_leaves_nothing(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and hidden(tmp_path) == []
    with atomic.atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json"  # format from the suffix
        tmp.write_text("new")
    assert target.read_text() == "new" and hidden(tmp_path) == []


def test_folder_is_replaced_whole_and_an_error_leaves_nothing(tmp_path):
    final = tmp_path / "preset"
    final.mkdir()
    (final / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_directory(final) as work:
            (work / "a").write_text("half")
            raise KeyboardInterrupt
    assert (final / "a").read_text() == "old" and hidden(tmp_path) == []
    with pytest.raises(FileExistsError):
        with atomic.atomic_directory(final, overwrite=False) as work:
            (work / "a").write_text("new")
    assert (final / "a").read_text() == "old" and hidden(tmp_path) == []
    with atomic.atomic_directory(final) as work:
        (work / "a").write_text("new")
    assert (final / "a").read_text() == "new" and hidden(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_killed_writer_is_cleaned_by_the_next_write(tmp_path, kind):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".keep.tmp").write_text("a user's own hidden file")  # not zoo's: never touched
    write = ("with atomic.atomic_file(folder / 'x.png') as tmp:\n"
             "    tmp.write_bytes(b'half')\n    ready()\n" if kind == "file" else
             "with atomic.atomic_directory(folder / 'preset') as work:\n"
             "    (work / 'w.h5').write_bytes(b'half')\n    ready()\n")
    writer = start_writer(write, folder)
    try:
        left = hidden(folder)
        assert len(left) == 2 and ".zoo-tmp-" in left[1], left
        assert atomic.sweep(folder) == []  # the writer is alive: its work is kept
    finally:
        kill(writer)
    assert hidden(folder) == left  # a kill -9 leaves it ...
    with atomic.atomic_file(folder / "other.txt") as tmp:  # ... until the next write there
        tmp.write_text("ok")
    assert hidden(folder) == [".keep.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == [".keep.tmp", "other.txt"]


def test_writer_killed_between_its_two_renames_gets_its_folder_back(tmp_path):
    folder = tmp_path / "out"
    final = folder / "preset"
    final.mkdir(parents=True)
    (final / "w.h5").write_text("old")
    writer = start_writer("""
        real = os.replace
        def stop_after_first(src, dst):  # the old folder moved aside, the new not yet in
            real(src, dst)
            ready()
        os.replace = stop_after_first
        with atomic.atomic_directory(folder / 'preset') as work:
            (work / 'w.h5').write_text('new')
    """, folder)
    kill(writer)
    assert not final.exists()  # what a reader sees until someone writes here again
    cleaned = atomic.sweep(folder)
    assert len(cleaned) == 2  # the old folder moved back, the new one's work removed
    assert (final / "w.h5").read_text() == "old" and hidden(folder) == []


def test_reused_process_id_is_not_taken_for_the_writer(tmp_path):
    me = os.getpid()
    start = atomic._start_time(me)
    if not start:
        pytest.skip("no /proc: process start times are unknown")
    mine = tmp_path / f".a.zoo-tmp-{me}-{start}-0123abcd"
    earlier = tmp_path / f".b.zoo-tmp-{me}-{start - 1}-0123abcd.png"  # same id, other process
    for path in (mine, earlier):
        path.write_text("x")
    assert atomic.sweep(tmp_path) == [earlier]
    assert hidden(tmp_path) == [mine.name]


def test_save_to_preset_killed_midway_is_cleaned_by_the_next_save(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    writer = start_writer("""
        import keras
        from zoo.core import weights_io
        from zoo.models import BertBackbone
        real = weights_io.save_weights
        def save_and_hang(*args, **kwargs):
            names = real(*args, **kwargs)
            ready()
        weights_io.save_weights = save_and_hang
        BertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                     intermediate_dim=16).save_to_preset(folder / 'bert')
    """, folder)
    kill(writer)
    assert [name.split(".zoo-")[1][:4] for name in hidden(folder)] == ["tmp-"]
    from zoo.models import BertBackbone

    BertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                 intermediate_dim=16).save_to_preset(folder / "bert")
    assert hidden(folder) == [] and [p.name for p in folder.iterdir()] == ["bert"]
    assert BertBackbone.from_preset(folder / "bert").count_params() > 0
