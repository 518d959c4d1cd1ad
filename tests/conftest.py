"""Test set-up shared by the whole suite.

Tests never touch the network or the user's caches: the zoo hub and the
Hugging Face cache point into temporary directories, and the Hugging Face
client runs offline. The backend is whatever KERAS_BACKEND says (`make test`
runs the suite once per backend).
"""

import atexit
import os
import shutil
import tempfile

_session_tmp = tempfile.mkdtemp(prefix="zoo-tests-")
# Each pytest process (xdist workers too) removes its own folder on exit:
# left behind, every run would leave a few hundred MB of converted presets.
atexit.register(shutil.rmtree, _session_tmp, ignore_errors=True)
os.environ["ZOO_HOME"] = os.path.join(_session_tmp, "zoo_home")
os.environ["HF_HOME"] = os.path.join(_session_tmp, "hf_home")
os.environ["HF_HUB_CACHE"] = os.path.join(_session_tmp, "hf_home", "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["USE_TF"] = "0"  # transformers: reference models are torch only
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["ZOO_PROGRESS"] = "0"
os.environ.setdefault("KERAS_BACKEND", "jax")


def _share_cores_between_workers() -> None:
    """torch under pytest-xdist: each worker gets its share of the cores.

    `make test` runs two workers on two cores; torch would start an OpenMP
    pool as large as the machine in each, and more spinning threads than
    cores run slower. Set before torch loads; child processes inherit it.
    Measured on a sample of the suite (two workers, two cores): torch 341 ->
    279 s with one thread per worker. tensorflow was slower with one thread
    (195 -> 212 s) and jax's XLA flags showed no clear gain, so they keep
    their own pools."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and os.environ["KERAS_BACKEND"] == "torch":
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


_share_cores_between_workers()

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so results do not depend on test order."""
    keras.utils.set_random_seed(1234)


ONCE_ON = os.environ.get("ZOO_TEST_ONCE_ON")
MAKE_TEST_BACKENDS = os.environ.get("ZOO_TEST_BACKENDS", "").split()


def once_backend(marker) -> str | None:
    """The backend a `once` test runs on in `make test`: `on=` where that
    backend is one of the run's (tests/once.py spreads a grid over them), else
    the run's first; None outside `make test`."""
    if not ONCE_ON:
        return None
    on = marker.kwargs.get("on")
    return on if on in MAKE_TEST_BACKENDS else ONCE_ON


def pytest_collection_modifyitems(config, items):
    """`make test` runs tests marked `once` on one backend only: the one named
    by `once(on=...)`, or its first (ZOO_TEST_ONCE_ON); a plain pytest run
    runs them on its one backend."""
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("once")
        target = once_backend(marker) if marker else None
        if target and target != backend:
            item.add_marker(pytest.mark.skip(
                reason=f"the same on every backend: this make test runs it on {target}"))


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
