"""Shared-memory state for the multi-process proxy (see docs/cache.md).

- ``shm.DecisionCache``: cacheable decisions keyed by policy hash, identity
  class, method, target and canonical arguments;
- ``ratelimit.RateLimiter``: per-client, per-session and per-tool token buckets;
- ``backend``: the native C extension (``_shmcache``) or the pure-Python
  fallback (``_pyshm``), same API and semantics, chosen at run time;
- ``layout`` and ``tokens``: the region layout and the token arithmetic both
  backends share.

No sockets, no event loop: time is passed in by the caller.
"""
