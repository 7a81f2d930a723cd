"""A Redis master, a replica and a sentinel of the test's own on free ports of 127.0.0.1 (never the
machine's shared Redis): the test can kill the master and watch the sentinel promote the replica."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from bench.chaos import RedisServer, free_port

#: The name the sentinel knows the master by (CERTCTL_BROKER_SENTINEL_MASTER).
MASTER_NAME = "certctl"


class SentinelCluster:
    def __init__(self, root: Path):
        self.root = root
        self.master = RedisServer(root / "master")
        self.replica: RedisServer | None = None
        self.sentinel_port = free_port()
        self.sentinel_proc: subprocess.Popen | None = None

    @property
    def broker_url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def start(self, timeout: float = 30) -> SentinelCluster:
        self.master.start()
        self.replica = RedisServer(self.root / "replica", "--replicaof", "127.0.0.1", str(self.master.port)).start()
        config = self.root / "sentinel.conf"
        config.write_text("\n".join([
            f"port {self.sentinel_port}", "bind 127.0.0.1", f"dir {self.root}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} 500",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
            f"sentinel parallel-syncs {MASTER_NAME} 1", ""]))
        self.sentinel_proc = subprocess.Popen(
            ["redis-server", str(config), "--sentinel", "--logfile", str(self.root / "sentinel.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.sentinel_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sentinel cluster not ready:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        with contextlib.suppress(redis.RedisError):
            sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1)
            replicas = sentinel.sentinel_slaves(MASTER_NAME)
            link_up = self.replica.client().info("replication").get("master_link_status") == "up"
            return link_up and any(r.get("port") == self.replica.port and not r.get("is_odown") for r in replicas)
        return False

    def master_port(self) -> int | None:
        """The port of the server the sentinel names master now."""
        with contextlib.suppress(redis.RedisError):
            _host, port = redis.Redis(port=self.sentinel_port, socket_timeout=1).sentinel_get_master_addr_by_name(
                MASTER_NAME)
            return int(port)
        return None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.root / "sentinel.log"
        return (path.read_text(errors="replace")[-chars:] if path.exists() else "") + self.master.log_tail(1000)

    def stop(self) -> None:
        if self.sentinel_proc is not None and self.sentinel_proc.poll() is None:
            self.sentinel_proc.kill()
            self.sentinel_proc.wait(10)
        for server in (self.master, self.replica):
            if server is not None:
                server.kill()
