"""Uploaded images, cached by user and SHA-256 in Ray's object store.

One named, detached actor holds the references: it puts each image into the object store itself,
so the image's owner is the actor, not the replica that received the upload, and a replica that
dies loses nothing. Any replica on any node reads an image by reference (zero-copy on its node).
The cache is bounded in bytes and forgets the least recently used images first; a client whose
image was forgotten (or whose server restarted) is told so and uploads it again.

Entries are keyed by (user, digest): one user never reaches another's images, even with the same
bytes.
"""

from __future__ import annotations

from collections import OrderedDict

import ray

__all__ = ["STORE_NAME", "ImageStore", "image_store"]

STORE_NAME = "attentionseg-images"


@ray.remote(num_cpus=0)
class ImageStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[tuple[str, str], tuple[ray.ObjectRef, int]] = OrderedDict()
        self.total = 0

    def put(self, user: str, digest: str, image: dict) -> None:
        key = (user, digest)
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        size = int(image["array"].nbytes)
        self.entries[key] = (ray.put(image), size)  # owned by this actor: outlives the uploading replica
        self.total += size
        while self.total > self.max_bytes and len(self.entries) > 1:
            _, (_, evicted) = self.entries.popitem(last=False)
            self.total -= evicted

    def get(self, user: str, digest: str) -> list | None:
        """``[reference]`` (wrapped, so that Ray passes the reference, not the image), or None."""
        entry = self.entries.get((user, digest))
        if entry is None:
            return None
        self.entries.move_to_end((user, digest))
        return [entry[0]]

    def stats(self) -> dict:
        return {"images": len(self.entries), "bytes": self.total, "max_bytes": self.max_bytes}


def image_store(namespace: str, max_bytes: int | None = None):
    """The cluster's store (created on first use when ``max_bytes`` is given)."""
    if max_bytes is None:
        return ray.get_actor(STORE_NAME, namespace=namespace)
    return ImageStore.options(name=STORE_NAME, namespace=namespace, lifetime="detached", get_if_exists=True).remote(
        max_bytes
    )
