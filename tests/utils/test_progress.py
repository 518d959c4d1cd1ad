"""When progress bars show: terminals and notebooks yes, logs and CI no."""

import io
import sys
import types

import pytest

from zoo.utils import progress

pytestmark = pytest.mark.once  # no backend involved


@pytest.fixture
def auto(monkeypatch):
    """Auto-detection, no IPython loaded; stderr is pytest's capture (as in a log)."""
    monkeypatch.delenv("ZOO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "_enabled", None)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    return monkeypatch


def fake_ipython(monkeypatch, kernel):
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: shell))


def test_quiet_when_stderr_is_a_log(auto, capsys):
    assert progress.enabled() is False
    with progress.progress_bar(total=3, desc="x") as bar:
        bar.update(3)
    assert list(progress.progress([1, 2], desc="y")) == [1, 2]
    assert capsys.readouterr().err == ""


def test_on_in_a_jupyter_kernel(auto):
    fake_ipython(auto, kernel=object())
    assert progress.enabled() is True


def test_off_in_a_plain_ipython_terminal_with_redirected_stderr(auto):
    fake_ipython(auto, kernel=None)
    assert progress.enabled() is False


def test_on_in_a_terminal(auto):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    auto.setattr(sys, "stderr", Terminal())
    assert progress.enabled() is True


def test_environment_and_set_enabled_win(auto):
    fake_ipython(auto, kernel=object())
    auto.setenv("ZOO_PROGRESS", "0")
    assert progress.enabled() is False
    auto.setenv("ZOO_PROGRESS", "1")
    assert progress.enabled() is True
    progress.set_enabled(False)
    assert progress.enabled() is False
    progress.set_enabled(None)
    auto.delenv("ZOO_PROGRESS")
    assert progress.enabled() is True  # the kernel again
