"""``attentionseg serve`` in a child process for the tests: start, wait for it, find its replicas, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One ``attentionseg serve`` on loopback; ``start()`` returns once it prints ``ready``."""

    def __init__(self, *arguments, port: int | None = None, env: dict | None = None, log: Path) -> None:
        self.arguments, self.port, self.env, self.log = [str(a) for a in arguments], port or free_port(), env, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        environment = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg"), "RAY_USAGE_STATS_ENABLED": "0"}
        environment.update(self.env or {})
        command = [sys.executable, "-m", "AttentionSegLib", "serve", *self.arguments, "--port", str(self.port)]
        stream = open(self.log, "a")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stream, text=True, env=environment)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == "ready":
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the server did not start; see {self.log}:\n{self.log.read_text()[-3000:]}")

    def replica_pids(self) -> list[int]:
        """The Ray Serve replicas of this server (its descendant processes of that name)."""
        children: dict[int, list[int]] = {}
        titles: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        found, stack = [], [self.process.pid]
        while stack:
            pid = stack.pop()
            for child in children.get(pid, []):
                stack.append(child)
                if "ServeReplica:attentionseg" in titles.get(child, ""):
                    found.append(child)
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
