"""Compile CUDA C with NVRTC through ctypes: checks kernel sources on machines with no GPU.

NVRTC is a library, not a driver: it compiles to PTX without a device. It comes with
the CUDA toolkit or the ``nvidia-cuda-nvrtc-cu12`` / ``nvidia-cuda-nvrtc`` wheels.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys


def find_nvrtc() -> str | None:
    """Path of a loadable libnvrtc, or None."""
    candidates = []
    for base in sys.path:
        candidates += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")))
        candidates += sorted(glob.glob(os.path.join(base, "nvidia", "*", "*", "lib", "libnvrtc.so*")))
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for path in candidates:
        if "builtins" in os.path.basename(path) or ".alt." in os.path.basename(path):
            continue
        try:
            ctypes.CDLL(path)
        except OSError:
            continue
        return path
    return None


def compile_ptx(source: str, path: str, arch: str = "compute_90") -> tuple[bool, str, str]:
    """Compile `source`; return (ok, log, ptx)."""
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    src = source.encode()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"kernels.cu", 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram returned {rc}"
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace"), ptx.decode(errors="replace")


def find_ptxas() -> str | None:
    """Path of ptxas (the PTX to machine-code assembler of the CUDA toolkit), or None."""
    import shutil

    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", "ptxas")):
            return os.path.join(root, "bin", "ptxas")
    return shutil.which("ptxas")


def resource_usage(ptx: str, ptxas: str, arch: str = "sm_90") -> dict[str, dict[str, int]]:
    """Registers and spill bytes per kernel, from ``ptxas -v`` on `ptx`."""
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True, check=True)
    usage, current = {}, None
    for line in proc.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = usage.setdefault(m.group(1), {})
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current is not None:
            current["spill_bytes"] = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and current is not None:
            current["registers"] = int(m.group(1))
    return usage
