"""Test set-up shared by the whole suite.

Tests never touch the network or the user's caches: the zoo hub and the
Hugging Face cache point into temporary directories, and the Hugging Face
client runs offline. The backend is whatever KERAS_BACKEND says (`make test`
runs the suite once per backend).
"""

import os
import tempfile

_session_tmp = tempfile.mkdtemp(prefix="zoo-tests-")
os.environ["ZOO_HOME"] = os.path.join(_session_tmp, "zoo_home")
os.environ["HF_HOME"] = os.path.join(_session_tmp, "hf_home")
os.environ["HF_HUB_CACHE"] = os.path.join(_session_tmp, "hf_home", "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["USE_TF"] = "0"  # transformers: reference models are torch only
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["ZOO_PROGRESS"] = "0"
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so results do not depend on test order."""
    keras.utils.set_random_seed(1234)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture
def zoo_home(tmp_path, monkeypatch):
    """A fresh, empty hub for one test."""
    home = tmp_path / "zoo_home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    return home


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh, empty Hugging Face cache for one test."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
