"""Cleaning up after a test or benchmark run on a shared Redis."""

from __future__ import annotations


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (a Django cache's ``KEY_PREFIX``) and count them.

    Never ``FLUSHDB``: the Redis may be shared with other runs, or with a developer's own data.
    Needs the ``redis`` package (it comes with Django's Redis cache).
    """
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()
