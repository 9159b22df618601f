"""A server process's memory over time, from /proc, sampled off the load's hot path.

``VmRSS`` is everything resident; ``RssAnon`` leaves out file-backed pages — SQLite's memory
map of the store file (``mmap_size``), which grows as more of a growing file is read and is
given back by the kernel under pressure. A leak shows in ``RssAnon``.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


class RssSampler:
    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []  # (monotonic s, VmRSS KiB, RssAnon KiB)
        self._task: asyncio.Task | None = None

    def sample(self) -> None:
        m = memory_kb(self.pid)
        self.samples.append((time.monotonic(), m["VmRSS"], m["RssAnon"]))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> "RssSampler":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.sample()

    def max_mb(self, since: float = 0.0) -> float:
        return max((s[1] for s in self.samples if s[0] >= since), default=0) / 1024

    def max_anon_mb(self, since: float = 0.0) -> float:
        return max((s[2] for s in self.samples if s[0] >= since), default=0) / 1024


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var if var else float("nan")
