"""What the benchmark scripts share: :class:`OtherLoad`, the CPU share other processes took
during a timing (on a small machine any other process ruins a measurement), and
:func:`print_table`, the markdown table every script prints.

The scripts run as ``python benchmarks/NAME.py``, so this folder is first on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import time


class OtherLoad:
    """Share of all cores used by *other* processes (and hypervisor steal) during a block.

    Read from ``/proc/stat`` minus this process's own CPU time; ``None`` where there is no
    ``/proc/stat``. Two threads on two cores slow down several-fold when anything else runs, so
    each timing records this and noisy runs can be repeated.
    """

    share: float | None = None

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = ticks[3] + ticks[4]  # idle + iowait
        return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> OtherLoad:
        self._start = (self._busy(), sum(os.times()[:4]), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = self._busy(), sum(os.times()[:4]), time.perf_counter()
        busy0, own0, wall0 = self._start
        if busy is None or busy0 is None:
            return
        other = (busy - busy0) - (own - own0)
        # clamped: /proc/stat counts whole clock ticks, which over-counts very short blocks
        self.share = min(1.0, max(0.0, other / ((wall - wall0) * (os.cpu_count() or 1))))


def print_table(rows: list[dict[str, str]]) -> None:
    """Rows of equal keys as a markdown table, columns padded to their widest cell."""
    header = list(rows[0])
    widths = [max(len(h), *(len(row[h]) for row in rows)) for h in header]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(row[h].ljust(w) for h, w in zip(header, widths)) + " |")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the machine type: what the rates are of."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
