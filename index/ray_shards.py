"""Shards on Ray actors: each actor opens one shard folder (`LocalShard`, every check) and answers the shard
methods (sparse and dense top k, feedback rows, dense rows); the process that serves the API keeps the doc ids
and documents and merges the actors' top k (`ShardSet`). The shard folders must be readable where the actors
run (one machine, or a shared file system on a cluster).

Ray is started here when no cluster address is given (`ray.init` on 127.0.0.1 with the machine's cores, no
dashboard), or joined at `address`. Actors ask for a fraction of a CPU each, so a 4-shard index fits a 2-core
machine, and are restarted by Ray if their process dies (`max_restarts`), re-opening their shard.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import EngineUnavailable, LsrError
from .search import SearchOptions

ACTOR_CPUS = 0.25  # per shard actor: search is short and latency-bound; Ray only uses this for placement


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the Ray cluster at `address`, or start a local one on loopback; the cluster's resources. A second
    call in one process reuses the running connection."""
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise LsrError("--engine ray needs the ray package: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
        try:
            with _kept_fault_handlers():
                _init(ray, address, num_cpus)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineUnavailable(f"cannot reach the Ray cluster at {address or 'a new local Ray'}: {first}") from None
    return dict(ray.cluster_resources())


def _init(ray, address: str | None, num_cpus: int | None) -> None:
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, logging_level="ERROR", configure_logging=True)


@contextlib.contextmanager
def _kept_fault_handlers():
    """Ray's core worker installs its own SIGSEGV/SIGBUS handlers (to print stack traces) over the ones already
    there. A JVM in the same process (pyserini: BM25, the Lucene backend) raises SIGSEGV on purpose and needs
    its own handler, or the process dies; so the handlers in place before `ray.init` are put back after it."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    signals = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)
    saved = {}
    for sig in signals:
        buf = ctypes.create_string_buffer(256)  # struct sigaction (152 bytes on x86-64 glibc), kept opaque
        if libc.sigaction(int(sig), None, buf) == 0:
            saved[sig] = buf
    try:
        yield
    finally:
        for sig, buf in saved.items():
            libc.sigaction(int(sig), buf, None)


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connect to HOST:PORT (or ray://HOST:PORT) first: `ray.init` waits minutes on an address that does
    not answer. "auto" (the cluster this machine belongs to) is left to Ray."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LsrError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise EngineUnavailable(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


class _RayFuture:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> Any:
        import ray
        from ray.exceptions import RayActorError, RayError

        try:
            return ray.get(self.ref)
        except RayActorError as e:
            raise EngineUnavailable(f"a shard actor died ({type(e).__name__}); Ray restarts it, retry") from None
        except RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, LsrError):
                raise cause from None
            raise EngineUnavailable(f"shard actor failed: {str(e).splitlines()[0]}") from None


class RayShard:
    """A handle to one shard actor: `submit(method, *args)` returns a future like `LocalShard.submit`."""

    def __init__(self, actor: Any, path: Path) -> None:
        self.actor = actor
        self.path = path

    def submit(self, method: str, *args: Any) -> _RayFuture:
        return _RayFuture(self.actor.call.remote(method, *args))


def _shard_actor_class():
    import ray

    @ray.remote(num_cpus=ACTOR_CPUS, max_restarts=3, max_task_retries=1)
    class ShardActor:
        def __init__(self, path: str, dense_backend: str, verify_checksums: bool,
                     search_options: SearchOptions) -> None:
            from lsr.index.shard import LocalShard

            self.shard = LocalShard(path, dense_backend=dense_backend, verify_checksums=verify_checksums,
                                    search_options=search_options)

        def ready(self) -> int:
            return self.shard.reader.num_docs

        def call(self, method: str, *args: Any) -> Any:
            return getattr(self.shard, method)(*args)

    return ShardActor


def ray_handles(paths: Sequence[Path], *, address: str | None = None, dense_backend: str = "auto",
                verify_checksums: bool = True, search_options: SearchOptions = SearchOptions()) -> list[RayShard]:
    """One actor per shard folder, each opened (and checked) before this returns."""
    import ray

    start_ray(address)
    actor_class = _shard_actor_class()
    actors = [actor_class.remote(str(p), dense_backend, verify_checksums, search_options) for p in paths]
    try:
        ray.get([a.ready.remote() for a in actors], timeout=600)
    except ray.exceptions.RayActorError as e:
        cause = getattr(e, "cause", None) or e
        raise LsrError(f"a shard actor could not open its shard: {str(cause).splitlines()[-1]}") from None
    return [RayShard(a, p) for a, p in zip(actors, paths)]
