"""Whether a buffer fits in its device's memory, checked before anything is allocated.

A replay buffer that does not fit fails late and badly (the OOM killer mid-run, or swapping
that slows a run to a crawl), so its size is checked against the memory available up front.
Where the available memory cannot be read, the check passes: it is a guard, not a gate.
"""

from __future__ import annotations

import torch

from qnorm import QnormError

MEMINFO = "/proc/meminfo"


def available_bytes(device: torch.device | str) -> int | None:
    """Bytes available for a new allocation on ``device``, or None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _mem_available(MEMINFO)
    return None


def _mem_available(path: str) -> int | None:
    """Linux's MemAvailable (what can be allocated without swapping), in bytes."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(nbytes: int, device: torch.device | str, what: str) -> None:
    """Raise QnormError when ``what`` (``nbytes`` large) exceeds the memory free on ``device``."""
    available = available_bytes(device)
    if available is not None and nbytes > available:
        raise QnormError(
            f"{what} needs {_readable(nbytes)} ({nbytes:,} bytes) but only {_readable(available)} "
            f"({available:,} bytes) is available on {torch.device(device)}; lower its capacity"
        )


def _readable(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
