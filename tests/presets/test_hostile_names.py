"""Hostile and careless input to the hub: preset names, paths, ZOO_HOME, a full
disk, kill -9 in the middle of a write, non-UTF-8 arguments, an offline Hub.

Each case checks the error class, that the one-line message says what to fix,
that nothing outside the hub was written or removed, that the hub is as it
was (nothing left in `$ZOO_HOME/tmp`), and that the hub still works after.
These are file and path checks: they run once, under the jax backend.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import pytest

import zoo.presets
from tests.nlp.bert.reference import make_hf_bert
from tests.presets.test_handles import hub_entries
from zoo import cli, cli_convert
from zoo.core.errors import NetworkError, PresetError, PresetNotFoundError
from zoo.models import Backbone, BertBackbone
from zoo.presets import handles, hub

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="backend-independent: runs once, under jax")
ROOT = Path(__file__).resolve().parents[2]
BERT = "zoo.nlp.bert.bert_convert"


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return make_hf_bert(tmp_path_factory.mktemp("hostile") / "hf", "BertModel")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, bert_folder):
    """`bert_folder` converted once, by `zoo convert`'s driver."""
    home = tmp_path_factory.mktemp("converted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_HOME", str(home))
        assert cli_convert.main([str(bert_folder), "--name", "keep"], BERT, "test") == 0
    return home / "presets" / "keep"


@pytest.fixture
def hub_with_preset(zoo_home, converted):
    """A hub holding one converted preset, `keep`."""
    shutil.copytree(converted, zoo_home / "presets" / "keep")
    return zoo_home


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path (to compare before and after)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def convert(capsys, *argv: str) -> tuple[int, str]:
    """`zoo convert ARGV` in this process: (exit code, the one stderr line)."""
    code = cli.main(["convert", *argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) <= 1, lines
    return code, lines[0] if lines else ""


def assert_hub_clean(home: Path) -> None:
    tmp = home / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], list(tmp.iterdir())


# --------------------------------------------------------------------------- #
# Preset names.
# --------------------------------------------------------------------------- #


def test_every_catalog_name_is_a_valid_preset_name():
    names = zoo.presets.list()
    assert {"whisper_tiny_en", "opt_6.7b_en"} <= set(names)
    assert [n for n in names if not hub.is_preset_name(n)] == []


@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "a/b", "/abs/folder", "-x", ".hidden",
                                  "a\\b", "a b", "a\nb", "ünï", "x" * 101, "a\x00b"])
def test_bad_names_are_refused_before_any_work(name, hub_with_preset, bert_folder, tmp_path,
                                               capsys, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    if name == "/abs/folder":
        name = str(victim)
    before = snapshot(hub_with_preset)
    monkeypatch.setattr(cli_convert, "raw_folder",
                        lambda source: pytest.fail("fetched the source despite a bad name"))
    code, line = convert(capsys, str(bert_folder), f"--name={name}")
    assert code == 1 and "is not a valid preset name" in line and "Fix:" in line
    with pytest.raises(PresetError, match="Fix: pass a name"):
        hub.new_preset_path(name)
    assert snapshot(hub_with_preset) == before
    assert (victim / "data.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim", "zoo_home"]
    assert isinstance(Backbone.from_preset("keep"), BertBackbone)


def test_existing_preset_is_replaced_only_with_overwrite(hub_with_preset, bert_folder, capsys):
    before = snapshot(hub_with_preset)
    code, line = convert(capsys, str(bert_folder), "--name", "keep")
    assert code == 1 and "'keep' already exists" in line and "--overwrite" in line
    assert snapshot(hub_with_preset) == before
    # Asked for, the replacement is complete and atomic; the hub keeps one preset.
    assert cli.main(["convert", str(bert_folder), "--name", "keep", "--overwrite"]) == 0
    assert hub_entries(hub_with_preset) == ["keep"]
    assert_hub_clean(hub_with_preset)
    assert isinstance(Backbone.from_preset("keep"), BertBackbone)


def test_named_lookup_never_leaves_the_presets_folder(hub_with_preset, tmp_path, monkeypatch):
    # "." and ".." are local paths (here: empty folders), never the hub's folders.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for handle in (".", ".."):
        with pytest.raises(PresetError, match="neither a zoo preset") as info:
            zoo.presets.resolve(handle)
        assert str(hub_with_preset) not in str(info.value)


# --------------------------------------------------------------------------- #
# Source paths and handles.
# --------------------------------------------------------------------------- #


def test_convert_missing_source_says_it_does_not_exist(zoo_home, tmp_path, capsys):
    code, line = convert(capsys, str(tmp_path / "no" / "such" / "dir"), "--name", "x")
    assert code == 1 and "does not exist" in line and "Fix: check the path" in line
    assert hub_entries(zoo_home) == []


@pytest.mark.parametrize("handle", ["hf://../..", "hf://a--b/c", "hf://org/re po",
                                    "hf://org/repo/../../etc/passwd", "hf://org/repo/a//b.pt",
                                    "hf://org/repo/a\\b.pt"])
def test_bad_hf_handles_are_refused(handle, zoo_home, hf_cache):
    with pytest.raises(PresetError, match="Fix: write hf://org/repo"):
        zoo.presets.resolve(handle)
    assert hub_entries(zoo_home) == []


@pytest.mark.parametrize("handle", ["pkg://.os/x", "pkg://a..b/x", "pkg://1abc/x"])
def test_bad_pkg_handles_are_refused(handle, zoo_home, capsys):
    with pytest.raises(PresetError, match="Fix: write pkg://python_package/sub/path"):
        zoo.presets.resolve(handle)
    code, line = convert(capsys, handle, "--name", "x")
    assert code == 1 and "names no Python package" in line
    with pytest.raises(PresetNotFoundError, match="pip install no-such-parent"):
        zoo.presets.resolve("pkg://no_such_parent.child/x")


def test_upload_target_is_checked_before_converting(zoo_home, bert_folder, capsys):
    code, line = convert(capsys, str(bert_folder), "--name", "x", "--upload", "me/repo")
    assert code == 1 and "is not hf://org/repo" in line and "Fix:" in line
    assert hub_entries(zoo_home) == []


# --------------------------------------------------------------------------- #
# ZOO_HOME and a full disk.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unusable_zoo_home_is_found_before_converting(where, tmp_path, monkeypatch, capsys,
                                                      bert_folder):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZOO_HOME", str(blocker if where == "a file" else blocker / "hub"))
    monkeypatch.setattr(cli_convert, "raw_folder",
                        lambda source: pytest.fail("fetched the source for an unusable hub"))
    code, line = convert(capsys, str(bert_folder), "--name", "x")
    assert code == 1 and "ZOO_HOME=" in line and "Fix: set ZOO_HOME" in line
    with pytest.raises(PresetError, match="Fix: set ZOO_HOME"):
        zoo.presets.resolve(bert_folder)  # the implicit hub write says the same
    assert blocker.read_text() == "not a folder"


def test_disk_full_during_a_hub_write(hub_with_preset, bert_folder, monkeypatch, capsys):
    import zoo.nlp.bert.bert_convert as convert_module

    def fill_the_disk(source, output, handle, dtype="source"):
        (Path(output) / "model.weights.h5").write_bytes(b"\0" * 1000)  # half written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(convert_module, "convert_transformers", fill_the_disk)
    before = snapshot(hub_with_preset)
    argv = [str(bert_folder), "--name", "keep", "--overwrite"]
    assert cli_convert.main(argv, BERT, "test") == 1  # what `zoo convert` runs
    line = capsys.readouterr().err.strip()
    assert "is full" in line and "Fix: free some space" in line and "\n" not in line
    with pytest.raises(PresetError, match="is full"):  # and through from_preset's hub write
        zoo.presets.resolve(bert_folder)
    assert snapshot(hub_with_preset) == before
    assert_hub_clean(hub_with_preset)


def test_output_file_on_a_full_disk(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")

    def fill_the_disk(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(cli.CommandError, match="No space left.*Fix: free some space"):
        cli.write_atomically(out, fill_the_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"] and out.read_text() == "old"


# --------------------------------------------------------------------------- #
# Command-line text.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("argv", [["embed", "\udcff"], ["generate", "a\udcfeb"],
                                  ["text-to-image", "x", "--out", "o.png",
                                   "--negative-prompt", "\udcff"],
                                  ["info", "\udcff"]])
def test_non_utf8_text_is_one_clear_line(argv, capsys):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid UTF-8 (b'" in err and "Fix: pass UTF-8" in err


def test_non_utf8_file_names_are_allowed(tmp_path, capsys):
    # File names may hold any bytes: the command goes on to its own check.
    assert cli.main(["transcribe", str(tmp_path / "\udcff.wav")]) == 1
    assert "No audio file" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# The Hugging Face Hub, offline.
# --------------------------------------------------------------------------- #


@pytest.fixture
def hub_down(monkeypatch):
    """Network on (no HF_HUB_OFFLINE), but the Hub's address refuses connections."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(handles, "_probes", {})


def test_offline_hub_fails_fast_and_once(hub_down, zoo_home, hf_cache):
    start = time.monotonic()
    for handle in ("hf://org/repo", "hf://org/repo/model.pt", "hf://other/repo"):
        with pytest.raises(PresetNotFoundError, match="cannot be reached.*Fix: connect"):
            zoo.presets.resolve(handle)
    assert time.monotonic() - start < 5  # huggingface_hub alone retries for ~25 s each
    assert list(handles._probes) == ["http://127.0.0.1:9"]
    assert hub_entries(zoo_home) == []


def test_upload_while_offline_fails_fast(hub_down, hub_with_preset):
    start = time.monotonic()
    with pytest.raises(NetworkError, match="Cannot upload.*cannot be reached.*Fix: connect"):
        zoo.presets.upload(hub_with_preset / "presets" / "keep", "hf://me/repo")
    assert time.monotonic() - start < 5


def test_hf_hub_offline_set_late_is_honoured(hub_down, monkeypatch, hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PresetNotFoundError, match="HF_HUB_OFFLINE is set.*Fix:"):
        zoo.presets.resolve("hf://org/repo")
    assert handles._probes == {}  # no request was made


# --------------------------------------------------------------------------- #
# kill -9 in the middle of a write.
# --------------------------------------------------------------------------- #

WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from zoo.presets import hub

    point = sys.argv[1]
    replace, calls = os.replace, []

    def replace_then_maybe_die(src, dst):
        calls.append(dst)
        if point == "between renames" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # the old preset is out, the new not in
        replace(src, dst)
        if point == "after renames" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # before the entry is removed

    os.replace = replace_then_maybe_die
    with hub.atomic_directory(hub.presets_dir() / "p", tmp_root=hub.tmp_dir()) as work:
        (work / "weights").write_text("new")
        if point == "while writing":
            os.kill(os.getpid(), signal.SIGKILL)
        if point == "live":
            print("ready", flush=True)
            sys.stdin.readline()
""")


def run_writer(point: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, point], env=dict(os.environ),
                            cwd=ROOT, text=True, **kwargs)


@pytest.mark.parametrize("point, content", [("while writing", "old"),
                                            ("between renames", "old"),
                                            ("after renames", "new")])
def test_kill_during_a_hub_write(point, content, zoo_home):
    (zoo_home / "presets" / "p").mkdir(parents=True)
    (zoo_home / "presets" / "p" / "weights").write_text("old")
    assert run_writer(point).wait(timeout=60) == -signal.SIGKILL
    assert len(list((zoo_home / "tmp").iterdir())) == 1  # what the kill left
    hub._clean_stale_tmp(zoo_home / "tmp")  # as the next write does first
    assert (zoo_home / "presets" / "p" / "weights").read_text() == content
    assert hub_entries(zoo_home) == ["p"]
    assert_hub_clean(zoo_home)


def test_a_live_writers_work_is_never_cleaned(zoo_home):
    writer = run_writer("live", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == "ready\n"
        (entry,) = (zoo_home / "tmp").iterdir()
        os.utime(entry, (0, 0))  # however old it looks
        hub._clean_stale_tmp(zoo_home / "tmp")
        with hub.atomic_directory(zoo_home / "presets" / "q", tmp_root=zoo_home / "tmp"):
            pass  # another write cleans first, too
        assert (entry / "preset" / "weights").read_text() == "new"
        writer.kill()
        writer.wait(timeout=60)
    finally:
        writer.kill()
    hub._clean_stale_tmp(zoo_home / "tmp")
    assert_hub_clean(zoo_home)
    assert hub_entries(zoo_home) == ["q"]


def test_unlocked_leftovers_are_removed_after_a_day(zoo_home):
    tmp = zoo_home / "tmp"
    (tmp / ".new-abcd1234").mkdir(parents=True)  # a writer killed setting up its entry
    (tmp / ".old-style.tmp-abcd1234").mkdir()  # left by an earlier zoo
    (tmp / "notes.txt").write_text("not zoo's")  # ZOO_HOME=$HOME makes ~/tmp the hub's
    (tmp / "project").mkdir()
    hub._clean_stale_tmp(tmp)
    assert len(list(tmp.iterdir())) == 4  # might be a writer that just started
    for entry in tmp.iterdir():
        os.utime(entry, (time.time() - 2 * 24 * 3600,) * 2)
    hub._clean_stale_tmp(tmp)
    assert sorted(p.name for p in tmp.iterdir()) == ["notes.txt", "project"]


def start(command: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, "ZOO_HOME": str(home)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_once_writing(children: dict[Path, subprocess.Popen]) -> None:
    """SIGKILL each child as soon as its work appears under its hub's tmp/."""
    deadline = time.monotonic() + 300
    try:
        while any(child.returncode is None for child in children.values()):
            for home, child in children.items():
                tmp = home / "tmp"
                if child.returncode is None and tmp.is_dir() and any(
                        (e / "preset").is_dir() for e in tmp.iterdir()):
                    child.send_signal(signal.SIGKILL)
                    assert child.wait(timeout=60) == -signal.SIGKILL
                assert child.poll() in (None, -signal.SIGKILL), child.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        for child in children.values():
            child.kill()
            child.stderr.close()


def test_kill_during_convert_and_pull(hub_with_preset, bert_folder, tmp_path):
    """A real `zoo convert --overwrite` and a real hub conversion (what `zoo pull`
    runs; each in its own hub, side by side), killed mid-write: the hubs are as
    they were, and the next write leaves nothing behind."""
    before = snapshot(hub_with_preset / "presets")
    pull_home = tmp_path / "pull_home"
    kill_once_writing({
        hub_with_preset: start([sys.executable, "-m", "zoo.cli", "convert", str(bert_folder),
                                "--name", "keep", "--overwrite"], hub_with_preset),
        pull_home: start([sys.executable, "-c", "import sys, zoo.presets; "
                          "zoo.presets.resolve(sys.argv[1])", str(bert_folder)], pull_home)})
    assert snapshot(hub_with_preset / "presets") == before
    assert hub_entries(pull_home) == []
    for home, entries in ((hub_with_preset, ["keep", "next"]), (pull_home, ["next"])):
        with hub.atomic_directory(home / "presets" / "next", tmp_root=home / "tmp") as work:
            (work / "f").write_text("next write")  # cleans first
        assert hub_entries(home) == entries
        assert_hub_clean(home)
    assert isinstance(Backbone.from_preset("keep"), BertBackbone)
