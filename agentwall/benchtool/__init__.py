"""The benchmark harness behind ``agentwall bench``, ``bench/`` and ``scripts/bench-gate``.

- ``workload``: the request mix (allowed, denied, ``tools/list``; tiny to 64 KiB).
- ``channels``: one client connection each, HTTP/1.1 keep-alive over a raw
  socket or newline-delimited JSON-RPC over a subprocess's pipes.
- ``loadgen``: several load processes, one request in flight per connection,
  exact latencies merged in the parent.
- ``stats``, ``procstat``, ``metrics``: percentiles, CPU from ``/proc``, and
  the proxy's Prometheus ``/metrics``.
- ``runner``: starts the upstream and the proxy as real processes and measures
  direct and proxied in the same run; ``report`` prints the table and JSON.
- ``gate``: the CI regression gate over pytest-benchmark results.
"""
