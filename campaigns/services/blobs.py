"""Content-addressed bytes (kernels' code, campaigns' static data)."""

from __future__ import annotations

import hashlib

from campaigns.models import Blob


def blob_put(data: bytes) -> Blob:
    """Store bytes once, by content."""
    digest = hashlib.sha256(data).hexdigest()
    blob, _ = Blob.objects.get_or_create(sha256=digest, defaults={"data": data, "size": len(data)})
    return blob
