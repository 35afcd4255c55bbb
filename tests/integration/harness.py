"""Real processes on loopback: a coordinator and native workers, started and killed by tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "server"), str(ROOT / "tests")])
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())  # quiets wgpu's warning
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Coordinator:
    """`tabgrid serve` in its own process, so a test can SIGKILL it and start it again."""

    def __init__(self, db: str, data: Path, *extra: str) -> None:
        self.db, self.data, self.extra = db, data, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data / "coordinator.log"

    def start(self, timeout: float = 30) -> Coordinator:
        args = ["serve", "--db", self.db, "--data", str(self.data), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tabgrid.cli", *args, *self.extra],
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coordinator exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"coordinator did not come up: {self.log.read_text()[-2000:]}")

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets open and reads nothing (SIGKILL still ends
        it); what workers send meanwhile waits in the kernel's buffers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess:
    """A native worker process (`tabgrid worker`), or a test saboteur with the same code."""

    def __init__(self, url: str, log: Path, *, concurrency: int = 2) -> None:
        args = ["tabgrid.cli", "worker", "--url", url, "--concurrency", str(concurrency)]
        self._spawn(args, log)

    @classmethod
    def module(cls, module: str, args: list[str], log: Path) -> WorkerProcess:
        self = cls.__new__(cls)
        self._spawn([module, *args], log)
        return self

    def _spawn(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args], env=_env(), stdout=f, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
