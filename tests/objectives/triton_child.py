"""Run a check function in a child process under Triton's CPU interpreter: triton.jit reads TRITON_INTERPRET when
triton and a kernel are first imported, so the flag cannot be switched on inside the test process."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_under_triton_interpreter(module: str, function: str) -> None:
    """Imports `module`, calls `function()` with TRITON_INTERPRET=1; it must print 'check passed' and exit 0."""
    code = f"from {module} import {function}; {function}()"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and "check passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
