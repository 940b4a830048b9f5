"""Percentiles and formatting for benchmark figures, and a process's CPU as /proc counts it."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


def pids() -> list[int]:
    """Every process's id, as /proc lists them now."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def proc_stat(pid: int) -> list[str]:
    """The fields of `/proc/<pid>/stat` after the command's name (the state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """Seconds of CPU the process has used so far, user and system."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(values: Sequence[float]) -> str:
    return " / ".join(ms(percentile(values, p)) for p in (50, 95, 99))
