"""Joining a Ray cluster, with a one-line refusal when nothing answers at the address (``ray.init``
itself waits minutes for a cluster that is not there)."""

from __future__ import annotations

import logging
import os
import socket

from AttentionSegLib.errors import AttentionSegError

__all__ = ["connect"]

_CHECK_TIMEOUT_S = 5.0


def connect(address: str, namespace: str | None = None) -> None:
    """``ray.init(address)`` unless already connected.

    Raises:
        AttentionSegError: nothing listens at ``address`` (``HOST:PORT``; ``auto`` is not checked).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address != "auto":
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), _CHECK_TIMEOUT_S):
                pass
        except ValueError:
            raise AttentionSegError(
                f"--cluster {address}: give HOST:PORT of the cluster's head (ray start --head)"
            ) from None
        except OSError as error:
            raise AttentionSegError(f"--cluster {address}: no Ray cluster there ({error.strerror or error})") from None
    try:
        # Ray's own "connecting" lines stay out of the command's output (errors are one line).
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise AttentionSegError(f"--cluster {address}: no Ray cluster there ({error})") from None
