"""`zoo launch`: start one multi-process jax job on this machine.

Keras' distribution API spans several processes through jax's distributed
runtime: every process runs the same script, calls
`keras.distribution.initialize()` first, and finds the coordinator, the
process count and its own id in three environment variables. `zoo launch`
starts the processes with those set, so the multi-host path can be tried,
and tested, on one machine before it runs on a cluster:

    zoo launch --processes 2 --devices-per-process 4 -- python train.py

Each child gets

- `KERAS_DISTRIBUTION_JOB_ADDRESSES` (the coordinator, `HOST:PORT`, a free
  port unless `--port`), `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID` (0 .. N-1), read by
  `keras.distribution.initialize()`;
- `KERAS_BACKEND=jax` (the only backend whose distribution spans processes);
- with `--devices-per-process D`: D simulated CPU devices
  (`--xla_force_host_platform_device_count` in `XLA_FLAGS`, `JAX_PLATFORMS=cpu`)
  and gloo for collectives between the processes
  (`JAX_CPU_COLLECTIVES_IMPLEMENTATION`).

Output lines are prefixed with the process id. When one process fails the
others are stopped (they would wait in a collective for ever) and its exit
code is returned.

Example:

>>> import sys
>>> launch([sys.executable, "-c", "import os; print(os.environ['KERAS_DISTRIBUTION_PROCESS_ID'])"],
...        processes=2, prefix=False, timeout=60)  # doctest: +SKIP
0
1
0
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from zoo.cli_args import CommandError

#: seconds the other processes get to exit after one failed, before they are killed
GRACE_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_environment(process_id: int, processes: int, coordinator: str,
                      devices_per_process: int | None = None,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of process `process_id` of a launched job.

    Example:

    >>> env = child_environment(1, 2, "127.0.0.1:1234", devices_per_process=4, base={})
    >>> env["KERAS_DISTRIBUTION_PROCESS_ID"], env["XLA_FLAGS"]
    ('1', '--xla_force_host_platform_device_count=4')
    """
    env = dict(os.environ if base is None else base)
    backend = env.get("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise CommandError(
            f"zoo launch starts jax processes (Keras' distribution spans processes on jax "
            f"only), but KERAS_BACKEND={backend!r}. Fix: unset KERAS_BACKEND or set it to jax.")
    env.update({
        "KERAS_BACKEND": "jax",
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": coordinator,
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
        "KERAS_DISTRIBUTION_PROCESS_ID": str(process_id),
    })
    if devices_per_process is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(
            flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
        env["JAX_PLATFORMS"] = "cpu"
        env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
    return env


def _relay(stream: IO[bytes], label: bytes, out: IO[bytes], lock: threading.Lock) -> None:
    """Copy a child's output line by line, labelled. Bytes are copied as they
    are and a failing write is dropped: the pipe must keep draining, or a
    child that fills it blocks, and the job with it."""
    for line in iter(stream.readline, b""):
        try:
            with lock:
                out.write(label + line)
                out.flush()
        except (OSError, ValueError):
            pass


class _TextOut:
    """A text stream (pytest's captured stdout) taking bytes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        self.stream.flush()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: Sequence[str], processes: int, devices_per_process: int | None = None,
           host: str = "127.0.0.1", port: int | None = None, timeout: float | None = None,
           prefix: bool = True) -> int:
    """Run `command` as processes 0 .. `processes`-1 of one jax job; return the exit code.

    Args:
        command: the program and its arguments, run once per process
            (`python` means the interpreter running zoo, so a virtual
            environment need not be activated).
        processes: how many processes (>= 1).
        devices_per_process: simulate this many CPU devices in each process
            (None: the devices jax finds, e.g. the host's GPUs).
        host, port: the coordinator's address (process 0 listens there);
            port None picks a free one.
        timeout: seconds before every process is stopped (exit code 124).
        prefix: start each output line with `[i] `.

    Returns:
        0 when every process succeeded, else the first failure's exit code.
    """
    if not command:
        raise CommandError("zoo launch needs a command. Fix: zoo launch --processes 2 -- "
                           "python train.py")
    if processes < 1 or (devices_per_process is not None and devices_per_process < 1):
        raise CommandError(f"--processes ({processes}) and --devices-per-process "
                           f"({devices_per_process}) must be at least 1.")
    if command[0] in ("python", "python3"):  # the interpreter zoo runs in (its venv)
        command = [sys.executable, *command[1:]]
    coordinator = f"{host}:{port or free_port(host)}"
    envs = [child_environment(i, processes, coordinator, devices_per_process)
            for i in range(processes)]
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    try:
        for i, env in enumerate(envs):
            try:
                p = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
            except OSError as e:
                raise CommandError(f"cannot start {command[0]!r}: {e.strerror or e}. Fix: "
                                   "give a program on PATH, e.g. -- python train.py") from None
            procs.append(p)
            label = f"[{i}] ".encode() if prefix else b""
            out = getattr(sys.stdout, "buffer", None)
            t = threading.Thread(target=_relay, daemon=True, args=(
                p.stdout, label, out if out is not None else _TextOut(sys.stdout), lock))
            t.start()
            relays.append(t)
        deadline = None if timeout is None else time.monotonic() + timeout
        code = 0
        while [p.poll() for p in procs].count(None):  # (polls every one)
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"zoo launch: stopping after {timeout:g} s", file=sys.stderr)
                code = 124
                break
            time.sleep(0.05)
        _stop(procs)
        for t in relays:
            t.join(timeout=5)
        return code or next((p.returncode for p in procs if p.returncode), 0)
    finally:
        _stop(procs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=int, required=True, help="how many processes")
    parser.add_argument("--devices-per-process", type=int, default=None,
                        help="simulate this many CPU devices per process (trying multi-host "
                             "on one machine); default: the devices jax finds")
    parser.add_argument("--port", type=int, default=None,
                        help="the coordinator's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop every process after this many seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the program to run in every process")


def cmd_launch(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    return launch(command, args.processes, args.devices_per_process, port=args.port,
                  timeout=args.timeout)
