"""Reading the proxy's ``GET /metrics`` (Prometheus text format 0.0.4).

The bench scrapes before and after each proxied run and reports deltas: the
mean audit fsync batch size and the decision-cache hit rate.  When the proxy
does not export a series, the figure is ``None`` ("n/a" in the table): a
number we did not measure is never invented.
"""

from __future__ import annotations

import http.client
import math
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


@dataclass
class Scrape:
    samples: list[Sample] = field(default_factory=list)
    ok: bool = True
    error: str | None = None

    def total(self, name: str, **match: str) -> float | None:
        """Sum of every sample called ``name`` whose labels include ``match``."""
        found = False
        total = 0.0
        for s in self.samples:
            if s.name != name:
                continue
            labels = dict(s.labels)
            if all(labels.get(k) == v for k, v in match.items()):
                found = True
                total += s.value
        return total if found else None

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def parse(text: str) -> list[Sample]:
    out: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: Labels = ()
        if "{" in line:
            name, _, rest = line.partition("{")
            body, _, tail = rest.rpartition("}")
            labels = _labels(body)
            value_text = tail.split()[0]
        else:
            parts = line.split()
            name, value_text = parts[0], parts[1]
        try:
            value = float(value_text)
        except ValueError:
            continue
        if math.isnan(value):
            continue
        out.append(Sample(name.strip(), labels, value))
    return out


def _labels(body: str) -> Labels:
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        eq = body.find("=", i)
        if eq < 0:
            break
        key = body[i:eq].strip().lstrip(",").strip()
        j = eq + 1
        if j >= len(body) or body[j] != '"':
            break
        j += 1
        value_chars: list[str] = []
        while j < len(body) and body[j] != '"':
            if body[j] == "\\" and j + 1 < len(body):
                j += 1
                value_chars.append({"n": "\n"}.get(body[j], body[j]))
            else:
                value_chars.append(body[j])
            j += 1
        pairs.append((key, "".join(value_chars)))
        i = j + 1
    return tuple(pairs)


def scrape(host: str, port: int, path: str = "/metrics", timeout: float = 5.0) -> Scrape:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        if response.status != 200:
            return Scrape(ok=False, error=f"HTTP {response.status}")
        return Scrape(parse(body))
    except OSError as exc:
        return Scrape(ok=False, error=str(exc))
    finally:
        conn.close()


# The series names the proxy exports, as (entries, batches) pairs for the
# fsync batch size and (hits, misses) for the decision cache.  The first pair
# present wins; a rename on the proxy side shows up as "n/a" here rather than
# as a wrong number.  Audit: agentwall.io.audit_writer.render_metrics (the
# agentwall_audit_batch_entries histogram: sum = entries, count = fsyncs).
# Cache: agentwall.io.pool.EvaluatorPool.prometheus, which the supervisor
# exports with the prefix agentwall_pool.
FSYNC_PAIRS = (
    ("agentwall_audit_batch_entries_sum", "agentwall_audit_batch_entries_count"),
    ("agentwall_audit_fsync_batch_size_sum", "agentwall_audit_fsync_batch_size_count"),
    ("agentwall_audit_batch_size_sum", "agentwall_audit_batch_size_count"),
    ("agentwall_audit_entries_total", "agentwall_audit_batches_total"),
    ("agentwall_audit_entries_total", "agentwall_audit_fsyncs_total"),
)
CACHE_PAIRS = (
    ("agentwall_pool_decision_cache_hits_total", "agentwall_pool_decision_cache_misses_total"),
    ("agentwall_decision_cache_hits_total", "agentwall_decision_cache_misses_total"),
)


def _pair_delta(
    before: Scrape, after: Scrape, pairs: tuple[tuple[str, str], ...]
) -> tuple[float, float] | None:
    for first, second in pairs:
        values = [s.total(n) for s in (before, after) for n in (first, second)]
        b1, b2, a1, a2 = values
        if b1 is not None and b2 is not None and a1 is not None and a2 is not None:
            return a1 - b1, a2 - b2
    return None


@dataclass(frozen=True)
class ProxyFigures:
    fsync_batches: float | None
    fsync_batch_mean: float | None
    cache_hit_rate: float | None
    cache_lookups: float | None
    # Mean time per observation of each agentwall_*_seconds histogram the
    # proxy exports (e.g. evaluate, audit, upstream), in microseconds, and how
    # many observations it had over the run.
    stages_us: dict[str, tuple[float, float]] = field(default_factory=dict)


def stage_means(before: Scrape, after: Scrape) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name in sorted(after.names()):
        if not (name.startswith("agentwall_") and name.endswith("_seconds_sum")):
            continue
        base = name[: -len("_sum")]
        pair = _pair_delta(before, after, ((name, base + "_count"),))
        if pair is None or pair[1] <= 0:
            continue
        total, count = pair
        out[base[len("agentwall_") : -len("_seconds")]] = (total / count * 1e6, count)
    return out


def figures(before: Scrape, after: Scrape) -> ProxyFigures:
    fsync = _pair_delta(before, after, FSYNC_PAIRS)
    cache = _pair_delta(before, after, CACHE_PAIRS)
    batches = mean = rate = lookups = None
    if fsync is not None:
        entries, batches = fsync
        mean = entries / batches if batches else None
    if cache is not None:
        hits, misses = cache
        lookups = hits + misses
        rate = hits / lookups if lookups else None
    return ProxyFigures(batches, mean, rate, lookups, stage_means(before, after))
