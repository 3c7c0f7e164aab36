"""What committed results record about the machine that produced them."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine_info(torch_threads: int | None = None) -> dict:
    """CPU model, the ISA level torch dispatches to (e.g. AVX512), torch version, threads and cores. `torch_threads`:
    the threads the work ran with, where it ran in worker processes (default: this process's)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor() or platform.machine())
    return {"cpu": cpu, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "cores": os.cpu_count(), "torch_threads": torch_threads or torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
