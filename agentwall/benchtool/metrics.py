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


# The series names the proxy exports.  Each entry lists the names we accept,
# first match wins, so a rename on the proxy side shows up as "n/a" here
# rather than as a wrong number.
FSYNC_BATCH_SUM = ("agentwall_audit_fsync_batch_size_sum",)
FSYNC_BATCH_COUNT = ("agentwall_audit_fsync_batch_size_count",)
CACHE_HITS = ("agentwall_decision_cache_hits_total",)
CACHE_MISSES = ("agentwall_decision_cache_misses_total",)


def _first(scrape: Scrape, names: tuple[str, ...]) -> float | None:
    for name in names:
        value = scrape.total(name)
        if value is not None:
            return value
    return None


def _delta(before: Scrape, after: Scrape, names: tuple[str, ...]) -> float | None:
    a, b = _first(after, names), _first(before, names)
    if a is None or b is None:
        return None
    return a - b


@dataclass(frozen=True)
class ProxyFigures:
    fsync_batches: float | None
    fsync_batch_mean: float | None
    cache_hit_rate: float | None
    cache_lookups: float | None


def figures(before: Scrape, after: Scrape) -> ProxyFigures:
    batches = _delta(before, after, FSYNC_BATCH_COUNT)
    entries = _delta(before, after, FSYNC_BATCH_SUM)
    hits = _delta(before, after, CACHE_HITS)
    misses = _delta(before, after, CACHE_MISSES)
    mean = entries / batches if batches and entries is not None else None
    lookups = hits + misses if hits is not None and misses is not None else None
    rate = hits / lookups if lookups and hits is not None else None
    return ProxyFigures(batches, mean, rate, lookups)
