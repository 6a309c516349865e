"""The test harness: `window-node serve --listen 127.0.0.1:0 --data-dir DIR ...` as a child
process, its address read from the `listening ... address=` line it logs, SIGKILLed at the end.

The binary is `target/debug/window-node` under the repository root (what `cargo build` and
`cargo test --workspace` leave there), or the path in `WINDOW_NODE_BIN`. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, List, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
#: How long a daemon may take to log its address, and the bound of every wait in the tests.
WAIT = 30.0

T = TypeVar("T")

_ADDRESS = re.compile(r"address=(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def binary() -> str:
    path = Path(os.environ.get("WINDOW_NODE_BIN") or REPO_ROOT / "target" / "debug" / "window-node")
    if not path.is_file():
        pytest.fail(
            f"no window-node binary at {path}: build it with `cargo build -p window-node` at the "
            "repository root, or set WINDOW_NODE_BIN to its path"
        )
    return str(path)


class Daemon:
    """One `window-node serve` process."""

    def __init__(self, args: List[str]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WINDOW_NODE_")}
        env["RUST_LOG"] = "info"
        env["NO_COLOR"] = "1"
        self.args = args
        self.process = subprocess.Popen(
            [binary(), "serve", "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.addr = self._wait_for_address()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in self.lines:
                    match = _ADDRESS.search(line) if "listening" in line else None
                    if match:
                        return match.group(1)
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"window-node exited first:\n{self.log()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise AssertionError(f"window-node logged no address in {WAIT}s:\n{self.log()}")
                self._changed.wait(min(left, 0.5))

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)

    def log(self, tail: int = 40) -> str:
        with self._changed:
            return "\n".join(self.lines[-tail:])


class Daemons:
    """The daemons one test started."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: List[Daemon] = []

    def data_dir(self, name: str = "data") -> Path:
        path = self.tmp_path / name
        path.mkdir(exist_ok=True)
        return path

    def start(self, data_dir: Path, *options: str) -> Daemon:
        """A daemon keeping its state in ``data_dir``."""
        return self.start_with("--data-dir", str(data_dir), *options)

    def start_with(self, *options: str) -> Daemon:
        """A daemon with just ``options`` (``--store redis://...``, say)."""
        daemon = Daemon(list(options))
        self.started.append(daemon)
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.kill()
        for daemon in self.started:
            print(f"--- window-node serve at {daemon.addr} ({' '.join(daemon.args)}):")
            print(daemon.log(20))


async def within(awaitable: Awaitable[T], what: str, seconds: float = WAIT) -> T:
    """``awaitable``'s result, or a test failure naming ``what`` after ``seconds``."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for {what}") from None


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = WAIT) -> Any:
    """Polls ``check`` (every 20 ms) until it returns something truthy; bounded by ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = await check()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A loopback port free a moment ago (for redis-server, which cannot be given port 0)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real `redis-server` without persistence on a free loopback port, for `--store redis://`.

    ``start`` skips the test when redis-server is not installed, except under CI (``CI`` set),
    which must run it (as the daemon's own Redis tests require).
    """

    def __init__(self, tmp_path: Path):
        import shutil

        if shutil.which("redis-server") is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server not found on PATH, and CI must run the Redis tests")
            pytest.skip("redis-server not installed (apt-get install -y redis-server)")
        last = ""
        for _ in range(5):  # the free port may be taken before redis-server binds it
            self.port = free_port()
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            if self._ready():
                return
            self.kill()
            assert self.process.stdout is not None
            last = self.process.stdout.read().decode("utf-8", "replace")[-2000:]
        raise AssertionError(f"redis-server did not start:\n{last}")

    def _ready(self) -> bool:
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # polling a starting server, bounded by the deadline
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)
