"""`once` marks: which backend of `make test` runs a test (tests/once.py)."""

import pytest

from tests import conftest
from tests.once import ORDER, spread


def test_spread_gives_every_backend_a_share_and_keeps_the_ids():
    params = spread(["a", "b", "c", "d", "e"], every_backend=["c"])
    assert params[2] == "c"  # unmarked: every backend
    marked = [p for p in params if p != "c"]
    assert [p.values for p in marked] == [("a",), ("b",), ("d",), ("e",)]
    assert [p.marks[0].kwargs["on"] for p in marked] == [*ORDER, ORDER[0]]
    assert spread([("x", 1)], start=2)[0].values == ("x", 1)
    assert spread([("x", 1)], start=2)[0].marks[0].kwargs["on"] == ORDER[2]


@pytest.mark.parametrize("env,on,expected", [
    ((None, ""), "torch", None),                       # plain pytest: run everywhere
    (("jax", "jax tensorflow torch"), None, "jax"),    # plain `once`: the first backend
    (("jax", "jax tensorflow torch"), "torch", "torch"),
    (("jax", "jax tensorflow"), "torch", "jax"),       # torch not in this run: the first
])
def test_once_backend(monkeypatch, env, on, expected):
    monkeypatch.setattr(conftest, "ONCE_ON", env[0])
    monkeypatch.setattr(conftest, "MAKE_TEST_BACKENDS", env[1].split())
    marker = pytest.mark.once(on=on).mark if on else pytest.mark.once.mark
    assert conftest.once_backend(marker) == expected
