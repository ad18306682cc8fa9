"""Extra Redis servers that a test starts and stops itself, on 127.0.0.1."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from collections.abc import Iterator

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from redisched.embedded.valkey import EmbeddedValkey

    return str(EmbeddedValkey.binary())  # pragma: no cover - only where redis-server is absent


@contextmanager
def private_redis(*extra: str, port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on a free port, with no persistence unless asked."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="redisched-redis-")
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", workdir, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_redis(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def private_cluster(masters: int = 3) -> Iterator[list[str]]:
    """A throwaway Redis Cluster of `masters` primaries (no replicas) on free ports."""
    ports = [free_cluster_port() for _ in range(masters)]
    workdir = tempfile.mkdtemp(prefix="redisched-cluster-")
    procs = []
    try:
        for port in ports:
            args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--dir", workdir]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for_redis(f"redis://127.0.0.1:{port}/0")
        _assign_slots(ports)
        yield [f"redis://127.0.0.1:{port}/0" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _assign_slots(ports: list[int]) -> None:
    """Split the 16384 slots evenly, join the nodes, and wait until the cluster says ok."""
    clients = [redis.Redis(port=port) for port in ports]
    per_node = 16384 // len(ports)
    for i, client in enumerate(clients):
        last = 16383 if i == len(ports) - 1 else (i + 1) * per_node - 1
        client.execute_command("CLUSTER ADDSLOTSRANGE", i * per_node, last)
    for client in clients[1:]:
        client.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
    deadline = time.monotonic() + 20
    while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster did not become ok")
        time.sleep(0.05)
    for client in clients:
        client.close()
