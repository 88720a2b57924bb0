"""Run CUDA C kernels on the CPU: a test harness for machines without a GPU.

The kernel source is compiled as C++20 with a small prelude that maps CUDA's names onto
threads: each block runs as ``blockDim.x`` OS threads (blocks one after another, so a
``__shared__`` array can be a function-static one), ``__syncthreads`` is a
``std::barrier`` over the block, ``__shfl_xor_sync`` an exchange through a per-warp
slot array between two warp barriers, and atomics take a mutex. Every kernel gets an
``extern "C"`` wrapper taking ``void** args`` like ``cuLaunchKernel``, generated from
the kernel's parameter list, so launches are described exactly as for CuPy: a grid,
a block and a tuple of arrays and NumPy scalars.

It checks logic (indexing, bounds, barriers, reductions, the arithmetic), not speed
or the GPU's memory model.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PRELUDE = r"""
#include <atomic>
#include <barrier>
#include <cmath>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <algorithm>
using std::min; using std::max; using std::exp; using std::log; using std::tanh;
struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static std::barrier<>* emu_block_barrier = nullptr;
struct emu_warp { std::barrier<>* bar; double slot[32]; };
static std::vector<emu_warp> emu_warps;
static std::mutex emu_atomic_mutex;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static
static inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int o) {
    emu_warp& w = emu_warps[threadIdx.x / 32];
    unsigned lane = threadIdx.x % 32;
    w.slot[lane] = (double)v;
    w.bar->arrive_and_wait();
    T r = (T)w.slot[lane ^ (unsigned)o];
    w.bar->arrive_and_wait();
    return r;
}
template <class T> static inline T atomicAdd(T* p, T v) {
    std::lock_guard<std::mutex> g(emu_atomic_mutex);
    T old = *p; *p = old + v; return old;
}
static void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       const std::function<void()>& body) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, 1, 1};
    for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y)
    for (unsigned x = 0; x < gx; ++x) {
        std::barrier<> block_bar(bx);
        emu_block_barrier = &block_bar;
        std::vector<std::barrier<>*> bars;
        emu_warps.assign((bx + 31) / 32, emu_warp{});
        for (auto& w : emu_warps) { w.bar = new std::barrier<>(32); }
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < bx; ++t)
            threads.emplace_back([=, &body] {
                threadIdx = {t, 0, 0};
                blockIdx = {x, y, z};
                body();
            });
        for (auto& th : threads) th.join();
        for (auto& w : emu_warps) delete w.bar;
    }
}
"""

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?'
                        r"(\w+)\s*\(([^)]*)\)", re.DOTALL)


def _wrappers(source: str) -> tuple[str, dict[str, int]]:
    """C++ launch wrappers for every kernel of `source`, and each kernel's arity."""
    out, arity = [], {}
    for name, params in _KERNEL_RE.findall(source):
        decls = [" ".join(p.replace("__restrict__", "").split()) for p in params.split(",")]
        types = [d.rsplit(" ", 1)[0] if "*" not in d.rsplit(" ", 1)[1] else d for d in decls]
        casts = ", ".join(f"*({t}*)args[{i}]" for i, t in enumerate(types))
        out.append(f'extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned gz, '
                   f"unsigned bx, void** args) {{ emu_launch(gx, gy, gz, bx, [&] {{ "
                   f"{name}({casts}); }}); }}")
        arity[name] = len(decls)
    return "\n".join(out), arity


def compiler_available() -> str | None:
    """The C++ compiler's path, or None."""
    return shutil.which("g++")


class EmulatedModule:
    """A CUDA source compiled for the CPU; call `launch` as a CuPy kernel would be called."""

    def __init__(self, source: str, build_dir: Path | None = None):
        wrappers, self.arity = _wrappers(source)
        code = PRELUDE + source + "\n" + wrappers
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        build_dir = Path(build_dir or tempfile.gettempdir()) / "mnist_xp_cuda_emu"
        build_dir.mkdir(parents=True, exist_ok=True)
        lib = build_dir / f"emu_{digest}.so"
        if not lib.exists():
            src = build_dir / f"emu_{digest}.cpp"
            src.write_text(code)
            tmp = build_dir / f"emu_{digest}.{id(self)}.so"
            subprocess.run(["g++", "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread",
                            "-o", str(tmp), str(src)], check=True, capture_output=True, text=True)
            tmp.replace(lib)
        self.lib = ctypes.CDLL(str(lib))

    def launch(self, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        """Run kernel `name` over `grid` blocks of ``block[0]`` threads with `args`."""
        assert len(args) == self.arity[name], f"{name} takes {self.arity[name]} arguments"
        keep, slots = [], (ctypes.c_void_p * len(args))()
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                holder = ctypes.c_void_p(a.ctypes.data)
            elif isinstance(a, np.generic):
                holder = np.array(a)  # the value's bytes, as cuLaunchKernel reads them
                holder = ctypes.create_string_buffer(holder.tobytes(), holder.nbytes)
            else:
                raise TypeError(f"argument {i} of {name}: {type(a).__name__}")
            keep.append(holder)
            slots[i] = ctypes.cast(ctypes.pointer(holder) if isinstance(holder, ctypes.c_void_p)
                                   else holder, ctypes.c_void_p)
        g = tuple(grid) + (1,) * (3 - len(grid))
        getattr(self.lib, f"emu_{name}")(ctypes.c_uint(g[0]), ctypes.c_uint(g[1]),
                                         ctypes.c_uint(g[2]), ctypes.c_uint(block[0]), slots)
