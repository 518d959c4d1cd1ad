"""`zoo launch`: the processes it starts, their environment, and how a job ends.

The real multi-process jax job it starts is in tests/layout/test_multiprocess.py;
these run plain Python children (no jax) and need no backend."""

from __future__ import annotations

import sys
import time

import pytest

from zoo.cli import main
from zoo.cli_launch import launch

pytestmark = pytest.mark.once


@pytest.fixture(autouse=True)
def _jax_job(monkeypatch):
    """zoo launch refuses another KERAS_BACKEND: these run on whichever backend
    pytest runs (make test: the first; a plain run: every one)."""
    monkeypatch.setenv("KERAS_BACKEND", "jax")

SHOW_ENV = ("import os; print(','.join(os.environ.get(k, '-') for k in ("
            "'KERAS_DISTRIBUTION_PROCESS_ID', 'KERAS_DISTRIBUTION_NUM_PROCESSES', "
            "'KERAS_DISTRIBUTION_JOB_ADDRESSES', 'KERAS_BACKEND', 'XLA_FLAGS', "
            "'JAX_CPU_COLLECTIVES_IMPLEMENTATION')))")


def test_every_process_gets_its_id_and_the_same_coordinator(capfd, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=false "
                                    "--xla_force_host_platform_device_count=2")
    assert main(["launch", "--processes", "3", "--devices-per-process", "4", "--port", "23999",
                 "--", "python", "-c", SHOW_ENV]) == 0
    lines = sorted(capfd.readouterr().out.splitlines())
    assert lines == [f"[{i}] {i},3,127.0.0.1:23999,jax,--xla_cpu_use_thunk_runtime=false "
                     f"--xla_force_host_platform_device_count=4,gloo" for i in range(3)]


def test_without_simulated_devices_the_flags_are_left_alone(capfd, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", raising=False)
    assert launch([sys.executable, "-c", SHOW_ENV], processes=1, prefix=False) == 0
    fields = capfd.readouterr().out.strip().split(",")
    assert fields[0:2] == ["0", "1"] and fields[-2:] == ["-", "-"]


def test_a_failing_process_stops_the_job_with_its_exit_code():
    start = time.monotonic()
    code = launch([sys.executable, "-c",
                   "import os, sys, time\n"
                   "if os.environ['KERAS_DISTRIBUTION_PROCESS_ID'] == '1': sys.exit(7)\n"
                   "time.sleep(120)"], processes=2)
    assert code == 7
    assert time.monotonic() - start < 30  # process 0 was stopped, not waited for


def test_timeout_stops_every_process():
    start = time.monotonic()
    assert launch([sys.executable, "-c", "import time; time.sleep(120)"], processes=2,
                  timeout=2) == 124
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("argv, says", [
    (["launch", "--processes", "2", "--", "no-such-program-zoo"], "cannot start"),
    (["launch", "--processes", "0", "--", "python", "-V"], "at least 1"),
    (["launch", "--processes", "2"], "needs a command"),
    (["--backend", "torch", "launch", "--processes", "2", "--", "python", "-V"],
     "KERAS_BACKEND='torch'"),
])
def test_bad_launches_are_one_line(capsys, monkeypatch, argv, says):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
