"""Helpers for testing code that uses threadstore.

``RedisServer`` runs a real, throwaway ``redis-server`` (Debian/Ubuntu: ``apt-get install
redis-server``) on a free loopback port, with no persistence, for tests and benchmarks: start,
stop, restart on the same port, pause with SIGSTOP, kill with SIGKILL. ``SentinelSetup`` runs a
master, its replicas and three Sentinels; ``ClusterSetup`` a Redis Cluster of masters and
replicas. Everything waits for events (a port that answers, replication links up, the cluster
state ok), never for a fixed time. No fakes: the tests talk to the same servers users run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server process; ``url`` stays the same across stop()/start()."""

    def __init__(
        self, password: str | None = None, port: int | None = None, args: Sequence[str] = ()
    ) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="threadstore-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = list(args)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        args += self.args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # in case it was paused
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye to replicas."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client of this one server (redis-py needed)."""
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
            socket_timeout=5, **kwargs,
        )  # fmt: skip

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` (errors count as "not yet") until it is true; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


class SentinelSetup:
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels watching it as ``service``.

    ``url`` is the ``redis+sentinel://`` URL of the Sentinels. ``kill_master()`` SIGKILLs the
    current master; ``wait_for_failover()`` waits until the Sentinels name another master and
    it answers as one with its remaining replicas attached.
    """

    def __init__(
        self,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        service: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
    ) -> None:
        self.service = service
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisServer] = [RedisServer(password=password)]
        master_port = self.servers[0].port
        for _ in range(replicas):
            self.servers.append(
                RedisServer(password=password, args=["--replicaof", "127.0.0.1", str(master_port)])
            )
        self.sentinels = [RedisServer() for _ in range(sentinels)]
        self.quorum = sentinels // 2 + 1

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0"

    def start(self) -> SentinelSetup:
        try:
            for server in self.servers:
                server.start()
            self.wait_replication(self.servers[0], len(self.servers) - 1)
            for sentinel in self.sentinels:
                self._start_sentinel(sentinel, self.servers[0].port)
            others = len(self.sentinels) - 1
            for sentinel in self.sentinels:
                client = sentinel.client()
                wait_until(
                    "the Sentinels to know each other and the replicas",
                    lambda c=client: (  # type: ignore[misc]
                        int(c.sentinel_master(self.service)["num-other-sentinels"]) >= others
                        and int(c.sentinel_master(self.service)["num-slaves"])
                        >= len(self.servers) - 1
                    ),
                )
                client.close()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_sentinel(self, sentinel: RedisServer, master_port: int) -> None:
        conf = sentinel.dir / "sentinel.conf"
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f"dir {sentinel.dir}",
            f"sentinel monitor {self.service} 127.0.0.1 {master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 2",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        conf.write_text("\n".join(lines) + "\n")
        sentinel.proc = subprocess.Popen(
            [sentinel.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(f"sentinel on port {sentinel.port}", lambda: bool(sentinel.client().ping()))

    @staticmethod
    def wait_replication(master: RedisServer, replicas: int) -> None:
        client = master.client()

        def ready() -> bool:
            info = client.info("replication")
            links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return (
                info.get("role") == "master"
                and len(links) >= replicas
                and all(v.get("state") == "online" for v in links)
            )

        try:
            wait_until(f"{replicas} replicas online at port {master.port}", ready)
        finally:
            client.close()

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            client = sentinel.client()
            try:
                _, port = client.sentinel_get_master_addr_by_name(self.service)
                return int(port)
            except Exception:  # noqa: S112 - try the next Sentinel
                continue
            finally:
                client.close()
        raise RuntimeError("no Sentinel answers")

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def kill_master(self) -> RedisServer:
        master = self.server_on(self.master_port())
        master.kill()
        return master

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> RedisServer:
        """Wait until every running Sentinel names a new master that answers as master with
        its surviving replicas online."""

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                if sentinel.running:
                    c = sentinel.client()
                    try:
                        ports.add(int(c.sentinel_get_master_addr_by_name(self.service)[1]))
                    finally:
                        c.close()
            if len(ports) != 1 or old_port in ports:
                return False
            new = self.server_on(ports.pop())
            c = new.client()
            try:
                return bool(c.info("replication").get("role") == "master")
            finally:
                c.close()

        wait_until("the Sentinels to promote a replica", promoted, timeout)
        new = self.server_on(self.master_port())
        survivors = sum(1 for s in self.servers if s.running) - 1
        self.wait_replication(new, survivors)
        return new

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.cleanup()


class ClusterSetup:
    """A Redis Cluster: ``masters`` masters with ``replicas`` replicas each, on loopback.

    ``url`` is the ``redis+cluster://`` URL naming every node as a seed.
    """

    def __init__(self, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000):
        self.masters = masters
        self.replicas = replicas
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip
        # The bus port defaults to port + 10000, which may be taken or above 65535: pick one.
        self.servers = [
            RedisServer(args=[*args, "--cluster-port", str(free_port())])
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def start(self) -> ClusterSetup:
        try:
            for server in self.servers:
                server.start()
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is not installed")
            subprocess.run(
                [cli, "--cluster", "create", *self.addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Every running node says cluster_state:ok, knows every running node, and every
        replica's link to its master is up."""
        running = [s for s in self.servers if s.running]

        def ok() -> bool:
            for server in running:
                c = server.client()
                try:
                    info = c.cluster("INFO")
                    if info.get("cluster_state") != "ok":
                        return False
                    if int(info.get("cluster_slots_ok", 0)) != 16384:
                        return False
                    repl = c.info("replication")
                    if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        return False
                finally:
                    c.close()
            return True

        wait_until("the cluster to be ok", ok, timeout)

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run ``redis-cli --cluster ARGS`` and return its output."""
        cli = shutil.which("redis-cli")
        assert cli is not None
        done = subprocess.run(
            [cli, "--cluster", *args], check=True, capture_output=True, text=True, timeout=timeout
        )
        return done.stdout

    def masters_now(self) -> list[RedisServer]:
        out = []
        for server in self.servers:
            if server.running:
                c = server.client()
                try:
                    if c.info("replication").get("role") == "master":
                        out.append(server)
                finally:
                    c.close()
        return out

    def __enter__(self) -> ClusterSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()
