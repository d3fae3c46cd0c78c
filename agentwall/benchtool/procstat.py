"""CPU time of process trees, from ``/proc/<pid>/stat``.

The proxy is several processes (supervisor, evaluator workers, audit writer),
so its CPU cost is the sum over its whole tree.  A child that exits during
the window and is reaped by a parent in the tree moves its CPU into that
parent's ``cutime``/``cstime``; counting those deltas (and subtracting what
the dead child had already used before the window) keeps the total exact to
the kernel's clock tick.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    start_ticks: int  # disambiguates a reused PID
    state: str  # R, S, D, Z (exited, not reaped yet), ...
    self_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime (reaped children)
    rss_pages: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0].decode("ascii", "replace"),
        start_ticks=int(fields[19]),
        self_ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
        rss_pages=int(fields[21]),
    )


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def survivors(seen: dict[int, int]) -> list[int]:
    """Of the processes seen (pid -> start time), those still running: not
    exited (a zombie waiting to be reaped has exited), not a reused PID.  An
    orphan that init adopted still counts: that is what a leak looks like."""
    alive = []
    for pid, start in seen.items():
        stat = read_stat(pid)
        if stat is not None and stat.start_ticks == start and stat.state != "Z":
            alive.append(pid)
    return alive


def survivors_after(seen: dict[int, int], timeout: float) -> list[int]:
    """``survivors(seen)`` once they are gone or ``timeout`` has passed: a
    bound on how long a failure takes to show, not a measurement."""
    deadline = time.monotonic() + timeout
    while (alive := survivors(seen)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def kill_survivors(seen: dict[int, int]) -> None:
    """SIGKILL what is left of the processes seen, by PID (and start time)."""
    for pid in survivors(seen):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> dict[int, int]:
    """pid -> start time of each live descendant of ``pid`` (the start time
    tells the same process from a later one that reuses its PID)."""
    return {p: s.start_ticks for p, s in tree([pid]).items() if p != pid}


def all_stats() -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                out[stat.pid] = stat
    return out


def tree(
    roots: Iterable[int],
    stats: dict[int, ProcStat] | None = None,
    exclude: Callable[[int], bool] | None = None,
) -> dict[int, ProcStat]:
    """The roots and all their live descendants (minus excluded subtrees)."""
    stats = all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    out: dict[int, ProcStat] = {}
    todo = [p for p in roots if p in stats]
    while todo:
        pid = todo.pop()
        if pid in out or (exclude is not None and exclude(pid)):
            continue
        out[pid] = stats[pid]
        todo.extend(children.get(pid, ()))
    return out


def cpu_ticks_by_pid(before: dict[int, ProcStat], after: dict[int, ProcStat]) -> dict[int, int]:
    """Clock ticks each process of the tree used between two snapshots.

    A process that died during the window counts negatively (its share from
    before the window), since its whole total moved into its reaper's
    ``cutime``; summed over a role that holds both, that nets out exactly."""
    ticks: dict[int, int] = {}
    for pid, a in after.items():
        b = before.get(pid)
        if b is not None and b.start_ticks == a.start_ticks:
            ticks[pid] = (a.self_ticks - b.self_ticks) + (a.child_ticks - b.child_ticks)
        else:
            ticks[pid] = a.self_ticks  # born during the window
    for pid, b in before.items():
        now = after.get(pid)
        if now is None or now.start_ticks != b.start_ticks:
            # Died during the window: its total moved into a reaper's child_ticks
            # (counted above if the reaper is in the tree); its share before the
            # window does not belong to us.  (A reused PID keeps the newcomer's
            # ticks from above.)
            ticks[pid] = ticks.get(pid, 0) - (b.self_ticks + b.child_ticks)
    return ticks


class TreeProbe:
    """Snapshot a process tree now and later; report CPU used in between.

    With ``role`` (a pid's part in the tree, asked while it lives), the CPU is
    also split by role: where a proxy's time goes, process by process."""

    def __init__(
        self,
        roots: Callable[[], Iterable[int]],
        exclude: Callable[[int], bool] | None = None,
        role: Callable[[int], str] | None = None,
    ) -> None:
        self._roots = roots
        self._exclude = exclude
        self._role = role
        self._before: dict[int, ProcStat] = {}
        self._roles: dict[int, str] = {}
        self.cpu_s = 0.0
        self.cpu_by_role_s: dict[str, float] = {}
        self.rss_bytes = 0
        self.processes = 0

    def _learn_roles(self, snapshot: dict[int, ProcStat]) -> None:
        if self._role is not None:
            for pid in snapshot:
                if pid not in self._roles:
                    self._roles[pid] = self._role(pid)

    def start(self) -> None:
        self._roles = {}
        self._before = tree(self._roots(), exclude=self._exclude)
        self._learn_roles(self._before)

    def stop(self) -> None:
        after = tree(self._roots(), exclude=self._exclude)
        ticks = cpu_ticks_by_pid(self._before, after)
        self.cpu_s = max(sum(ticks.values()), 0) / CLK_TCK
        if self._role is not None:
            # A pid dead and reused within the window keeps its first role:
            # rare enough not to matter for a breakdown.
            self._learn_roles(after)
            by_role: dict[str, int] = {}
            for pid, n in ticks.items():
                role = self._roles.get(pid, "other")
                by_role[role] = by_role.get(role, 0) + n
            self.cpu_by_role_s = {r: max(n, 0) / CLK_TCK for r, n in by_role.items()}
        self.rss_bytes = sum(s.rss_pages for s in after.values()) * os.sysconf("SC_PAGE_SIZE")
        self.processes = len(after)


def proxy_role(root: int) -> Callable[[int], str]:
    """The parts of an ``agentwall start`` process tree: the root (supervisor
    and front-end), the audit writer process, and the rest (the evaluator
    zygote and its workers, which are forks of the root and so share its
    command line)."""

    def role(pid: int) -> str:
        if pid == root:
            return "front-end"
        argv = cmdline(pid)
        if argv[1:3] == ["-m", "agentwall.io.audit_writer"]:
            return "audit writer"
        return "evaluators" if argv else "other"

    return role


def fdatasync_probe(directory: str, count: int = 200) -> tuple[float, float]:
    """p50 and p99 (microseconds) of appending 256 bytes and fdatasync-ing.

    The durable audit pays one of these per batch, so a run's latency at one
    client cannot beat this disk's figure; the bench prints it next to the
    table to say what the machine allowed at that moment.
    """
    import time

    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[int] = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 255 + b"\n")
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            times.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return times[len(times) // 2] / 1000, times[
        min(len(times) - 1, (len(times) * 99) // 100)
    ] / 1000


@dataclass(frozen=True, slots=True)
class MachineCores:
    """The whole machine over a window, in cores (ticks per second of wall time).

    ``steal`` is time the hypervisor ran something else while a vCPU of ours
    wanted to run: on a shared host it is the noise that moves every figure, so
    a report shows it beside them."""

    busy: float
    idle: float  # idle + iowait
    steal: float


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, idle, steal) ticks since boot, from /proc/stat's "cpu" line."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, idle + iowait, steal


class MachineProbe:
    """/proc/stat now and later: how the machine's cores were spent in between."""

    def __init__(self) -> None:
        self._before: tuple[int, int, int] | None = None
        self._t0 = 0.0
        self.cores: MachineCores | None = None
        self.wall_s = 0.0  # the window ``cores`` covers

    def start(self) -> None:
        self._before = _cpu_ticks()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        after = _cpu_ticks()
        wall = time.monotonic() - self._t0
        if self._before is None or after is None or wall <= 0:
            self.cores = None
            return
        self.wall_s = wall
        busy, idle, steal = (
            (b - a) / CLK_TCK / wall for a, b in zip(self._before, after, strict=True)
        )
        self.cores = MachineCores(busy=busy, idle=idle, steal=steal)

    def describe(self) -> str:
        """One line for a report: the host's steal moves every figure beside it."""
        m = self.cores
        if m is None:
            return "machine: /proc/stat not readable"
        return (
            f"machine during the measured runs (cores of {os.cpu_count()}): busy {m.busy:.2f}, "
            f"idle {m.idle:.2f}, stolen by the host {m.steal:.2f}"
        )
