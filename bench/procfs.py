"""Figures of running processes from /proc (Linux): RSS now and at peak, CPU time, children.

Peak RSS is the kernel's `VmHWM`, which `reset_peak_rss` sets back to the current RSS (writing
5 to `/proc/PID/clear_refs`, Linux >= 4.0), so a peak can be taken around one operation.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` now."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size of `pid` since it started, or since `reset_peak_rss(pid)`."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset `pid`'s VmHWM to its current RSS (Linux >= 4.0, own or root processes)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no {field_name}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _every_stat() -> Iterator[tuple[int, str]]:
    """(pid, /proc/PID/stat text) of every process now; those that vanish meanwhile are skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text()
        except OSError:
            continue


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/*/stat)."""
    # Field 4 is the parent pid; the command (field 2) may hold spaces, so split after its `)`.
    return [child for child, stat in _every_stat() if int(stat.rsplit(")", 1)[1].split()[1]) == pid]


class ChildPeakSampler:
    """Samples the RSS of `pid`'s children every `interval_s` in a thread; `peak` is the largest seen.

    The dataset inspector is a short-lived child of the API process: its own VmHWM vanishes
    with it, so it is sampled while it lives (a sampled peak can only under-read).
    """

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.first_seen: float | None = None  # time.perf_counter() when a child was first seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for child in children(self.pid):
                if self.first_seen is None:
                    self.first_seen = time.perf_counter()
                try:
                    self.peak = max(self.peak, peak_rss_bytes(child))
                except (OSError, ValueError):
                    pass  # it exited between the listing and the read
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ChildPeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process now (those that vanish are skipped)."""
    out: dict[int, tuple[str, float]] = {}
    for pid, stat in _every_stat():
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[pid] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def cpu_split(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], groups: dict[str, set[int] | str]
) -> dict[str, float]:
    """CPU seconds used between two `cpu_by_process` snapshots, per group: a group is a set of pids
    or a command name; everything else is `other` (on a shared machine: the noise)."""
    totals = dict.fromkeys([*groups, "other"], 0.0)
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        group = next((g for g, m in groups.items() if (pid in m if isinstance(m, set) else name == m)), "other")
        totals[group] += max(used, 0.0)
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent not idle since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")
