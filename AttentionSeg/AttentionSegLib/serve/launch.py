"""Start the server on Ray Serve: a local Ray instance, or an existing cluster (``--cluster``).

``start_server`` returns once the deployment answers; ``attentionseg serve`` then waits until it
is stopped (Ctrl-C or SIGTERM) and shuts the application down. Replicas take one GPU each where
the cluster has GPUs (Ray places them on any node), else ``replica_cpus`` CPUs; with
``max_replicas`` above ``replicas`` Ray Serve scales between the two by the requests in flight.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError

__all__ = ["ServerSettings", "start_server", "stop_server", "LOOPBACK"]

LOOPBACK = "127.0.0.1"
APPLICATION = "attentionseg"


@dataclass
class ServerSettings:
    models: Path
    tokens: dict[str, str]  # {sha256: user}
    host: str = LOOPBACK
    port: int = 8765
    cluster: str | None = None  # a Ray address ("auto", "HOST:6379"); None: a local instance
    replicas: int = 1
    max_replicas: int | None = None
    replica_cpus: float = 1.0
    replica_gpus: float | None = None  # None: 1 where the cluster has GPUs, else 0
    max_upload_mb: int = 2048
    cache_mb: int = 4096


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_settings(settings: ServerSettings, warn=None) -> None:
    warn = warn or (lambda message: print(message, file=sys.stderr))
    if not settings.models.is_dir():
        raise AttentionSegError(f"{settings.models}: models folder not found")
    if not list(settings.models.glob("*.pt")):
        raise AttentionSegError(f"{settings.models}: no model file (NAME.pt) to serve")
    if settings.replicas < 1 or (settings.max_replicas is not None and settings.max_replicas < settings.replicas):
        raise AttentionSegError("--replicas must be at least 1 and --max-replicas at least --replicas")
    if not _is_loopback(settings.host):
        warn(
            f"warning: serving on {settings.host}, reachable from other machines; tokens travel in clear text "
            "unless a reverse proxy adds TLS in front (README: The server)"
        )


def start_server(settings: ServerSettings, warn=None) -> str:
    """Start (or update) the application; returns its base URL once it answers.

    Raises:
        AttentionSegError: bad settings, or no Ray cluster at ``settings.cluster``.
    """
    check_settings(settings, warn)  # refused in one line before Ray is imported or started
    import ray
    from ray import serve

    from AttentionSegLib.serve.app import NAMESPACE, SegmentationServer
    from AttentionSegLib.serve.image_store import image_store

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if settings.cluster:
        from AttentionSegLib.serve.cluster import connect

        connect(settings.cluster, NAMESPACE)
    elif not ray.is_initialized():
        # "local": a new instance, never one that `ray start` left running on this machine
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    gpus = settings.replica_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    image_store(NAMESPACE, settings.cache_mb << 20)
    options = {
        "ray_actor_options": {"num_cpus": settings.replica_cpus, "num_gpus": gpus},
        "max_ongoing_requests": 8,
    }
    if settings.max_replicas and settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": 2,
        }
    else:
        options["num_replicas"] = settings.replicas
    # One HTTP entry on the head node: the address readers are given (and two nodes on one machine
    # would otherwise both take the port).
    serve.start(http_options={"host": settings.host, "port": settings.port}, proxy_location="HeadOnly")
    threads = max(1, int(settings.replica_cpus))
    deployment = SegmentationServer.options(**options).bind(
        str(settings.models.resolve()), settings.tokens, settings.max_upload_mb << 20, threads
    )
    serve.run(deployment, name=APPLICATION, route_prefix="/", blocking=False)
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def stop_server() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
