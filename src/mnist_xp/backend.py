"""Backends: which array module (`xp`) and device the math runs on.

This is the only module that imports CuPy, and it does so lazily, inside functions: a
plain ``import mnist_xp`` never pulls CuPy in. Everything else receives a `Backend` and
uses ``backend.xp`` for math, ``backend.asarray`` to move data in and
``backend.to_numpy`` to move results out.

Device strings
--------------
``"auto"``
    CUDA device 0 when CuPy imports and a device answers, else the CPU.
``"cpu"``
    NumPy.
``"cuda"`` / ``"cuda:N"``
    CuPy on device 0 / N. When it cannot be used, the CPU is used instead and the
    reason is reported once (or `DeviceError` is raised with ``require=True``).
``"array_api_strict"``
    The generic code path on `array_api_strict`, a NumPy wrapper that refuses anything
    outside the Python array API standard. For tests; slow.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import DeviceError, DeviceFallbackWarning, exception_line

__all__ = [
    "Backend",
    "get_backend",
    "parse_device",
    "cuda_status",
    "cuda_devices",
    "backend_name_of",
    "to_numpy",
    "numpy_dtype",
    "as_array_of",
    "blas_threads",
    "DEVICE_FORMS",
]

DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N a device number, e.g. cuda:0)"

# [0-9], not \d: \d also matches other scripts' digits ("cuda:٣"), which int() accepts.
# \Z, not $: $ also matches before a trailing newline.
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|array_api_strict)(?::([0-9]+))?\Z")


@dataclass(frozen=True)
class Backend:
    """An array module and the device it computes on.

    Attributes
    ----------
    name : {"numpy", "cupy", "array_api_strict"}
        Which array library `xp` is.
    xp : module
        The array namespace the generic math is written against.
    device : str
        ``"cpu"`` or ``"cuda:N"``.
    reason : str
        Why this backend was chosen when it is not the one asked for (empty otherwise).
    """

    name: str
    xp: Any = field(repr=False)
    device: str
    reason: str = ""

    @property
    def spec(self) -> str:
        """The device string that resolves to this backend (``cpu``, ``cuda:N``, ...)."""
        return "array_api_strict" if self.name == "array_api_strict" else self.device

    def __reduce__(self):
        # Modules do not pickle: a backend travels as its device string and is
        # resolved again on arrival (falling back there if that device is unusable).
        return get_backend, (self.spec,)

    def asarray(self, a, dtype=None):
        """Copy `a` (a NumPy array or anything NumPy accepts) onto this backend's device.

        Parameters
        ----------
        a : array_like
            Host data, or an array already on this backend (then no copy is made
            unless `dtype` differs).
        dtype : numpy dtype or str, optional
            Target dtype; by default the input's.

        Returns
        -------
        array of `xp`, on this backend's device.
        """
        if self.name == "numpy":
            return np.asarray(a, dtype=dtype)
        if self.name == "cupy":
            with self.activate():
                return self.xp.asarray(a, dtype=dtype)
        # array_api_strict: convert on the host; its dtype objects wrap NumPy's.
        host = np.asarray(to_numpy(a), dtype=None if dtype is None else numpy_dtype(dtype))
        return self.xp.asarray(host)

    def to_numpy(self, a) -> np.ndarray:
        """Copy an array of this (or any known) backend to a NumPy array on the host.

        On CUDA this waits for the work that produces `a`: it is a sync point.
        """
        return to_numpy(a)

    @property
    def is_async(self) -> bool:
        """True when work is queued on a device and runs while the host goes on (CUDA)."""
        return self.name == "cupy"

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work (no-op on the CPU)."""
        if self.name == "cupy":
            self.xp.cuda.Device(self.device_index).synchronize()

    @property
    def device_index(self) -> int:
        """The CUDA device number (0 on the CPU, where it means nothing)."""
        return int(self.device.partition(":")[2] or 0)

    def activate(self):
        """Context manager making this backend's device current (CuPy only).

        CuPy allocates on the *current* device, so every block that creates device
        arrays runs under this; it nests and restores the previous device on exit.
        """
        if self.name == "cupy":
            return self.xp.cuda.Device(self.device_index)
        return contextlib.nullcontext()

    def owns(self, a) -> bool:
        """True when `a` is an array of this backend (and, on CUDA, on its device)."""
        if backend_name_of(a) != self.name:
            return False
        if self.name == "cupy":
            return a.device.id == self.device_index
        return True

    def describe(self) -> str:
        """One human line: library, version and device (with the GPU's name on CUDA)."""
        version = getattr(self.xp, "__version__", "")
        if self.name == "cupy":
            gpu = _device_name(self.xp.cuda.runtime, self.device_index)
            return f"{self.device} ({gpu}, CuPy {version})"
        if self.name == "array_api_strict":
            return f"cpu (array_api_strict {version})"
        return f"cpu (NumPy {version})"


def parse_device(spec: str) -> tuple[str, int | None]:
    """Split a device string into its kind and index.

    Parameters
    ----------
    spec : str
        One of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``array_api_strict``.

    Returns
    -------
    kind : str
    index : int or None
        The ``N`` of ``cuda:N``; None where none was given.

    Raises
    ------
    DeviceError
        When `spec` is not one of the accepted forms.
    """
    m = _DEVICE_RE.match(spec.strip().lower()) if isinstance(spec, str) else None
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise DeviceError(f"device {spec!r} is not understood; use {DEVICE_FORMS}")
    kind, index = m.group(1), m.group(2)
    return kind, None if index is None else int(index)


def _import_cupy():
    """Import CuPy (a separate function so tests can simulate its absence or failure)."""
    import cupy

    return cupy


def cuda_status(index: int = 0) -> tuple[Any, str]:
    """Check whether CUDA device `index` is usable through CuPy.

    Parameters
    ----------
    index : int
        CUDA device number.

    Returns
    -------
    cupy : module or None
        The CuPy module when the device answers, else None.
    reason : str
        Empty when usable, else one line with the real reason (the original
        exception's text is kept).
    """
    try:
        cupy = _import_cupy()
    except ImportError as exc:
        if getattr(exc, "name", None) == "cupy":
            return None, (
                "CuPy is not installed (pip install 'mnist-xp[cuda12]' or "
                "'mnist-xp[cuda13]', matching your CUDA driver)"
            )
        return None, f"CuPy failed to import: {exception_line(exc, with_type=True)}"
    except Exception as exc:  # a broken CuPy install raises all sorts
        return None, f"CuPy failed to import: {exception_line(exc, with_type=True)}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            return None, "no CUDA device found"
        if index >= count:
            return None, f"there is no CUDA device {index} (this machine has {count})"
        with cupy.cuda.Device(index):
            # Creating the context is what fails on a broken driver or a busy GPU.
            cupy.cuda.runtime.memGetInfo()
    except Exception as exc:  # CUDARuntimeError, driver errors, ...
        return None, f"CUDA is not usable: {exception_line(exc, with_type=True)}"
    return cupy, ""


def cuda_devices() -> dict:
    """What CUDA looks like on this machine, for ``mnist-xp info``.

    Returns
    -------
    dict
        ``cupy`` (its version or None), ``runtime`` and ``driver`` (CUDA version
        numbers or None), ``devices`` (a list of ``{"device": "cuda:N", "name": str,
        "memory_bytes": int}``) and ``unavailable`` (the reason CUDA cannot be used, or
        None).
    """
    cupy, reason = cuda_status(0)
    info = {"cupy": None, "runtime": None, "driver": None, "devices": [],
            "unavailable": reason or None}
    if cupy is None:
        return info
    rt = cupy.cuda.runtime
    info.update(cupy=cupy.__version__, runtime=rt.runtimeGetVersion(),
                driver=rt.driverGetVersion())
    for n in range(rt.getDeviceCount()):
        info["devices"].append({"device": f"cuda:{n}", "name": _device_name(rt, n),
                                "memory_bytes": int(rt.getDeviceProperties(n)["totalGlobalMem"])})
    return info


def _device_name(runtime, index: int) -> str:
    """The GPU's marketing name (CuPy returns bytes on some versions)."""
    name = runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else name


def _numpy_backend(reason: str = "") -> Backend:
    return Backend("numpy", np, "cpu", reason)


def get_backend(
    device: str | Backend = "auto",
    *,
    require: bool = False,
    on_fallback: Callable[[str], None] | None = None,
) -> Backend:
    """Resolve a device string to a `Backend`.

    Parameters
    ----------
    device : str or Backend
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``array_api_strict``; a `Backend`
        is returned as it is.
    require : bool
        When True, an explicit CUDA device that cannot be used raises `DeviceError`
        instead of falling back to the CPU.
    on_fallback : callable, optional
        Called with one line (``"cuda unavailable (<reason>); using cpu"``) when an
        explicitly requested CUDA device falls back to the CPU. By default the line
        is issued as a `DeviceFallbackWarning`.

    Returns
    -------
    Backend

    Raises
    ------
    DeviceError
        `device` does not parse, or it cannot be used and `require` is True.
    """
    if isinstance(device, Backend):
        return device
    kind, index = parse_device(device)
    if kind == "cpu":
        return _numpy_backend()
    if kind == "array_api_strict":
        import array_api_strict

        return Backend("array_api_strict", array_api_strict, "cpu")
    index = index or 0
    cupy, reason = cuda_status(index)
    if cupy is not None:
        return Backend("cupy", cupy, f"cuda:{index}")
    if kind == "auto":
        return _numpy_backend(f"cuda unavailable ({reason})")
    if require:
        raise DeviceError(f"device {device!r} cannot be used: {reason}")
    line = f"{device} unavailable ({reason}); using cpu"
    if on_fallback is None:
        warnings.warn(line, DeviceFallbackWarning, stacklevel=2)
    else:
        on_fallback(line)
    return _numpy_backend(line)


def backend_name_of(a) -> str | None:
    """The backend name of array `a` (``numpy``, ``cupy``, ``array_api_strict``), or None.

    Looks at ``sys.modules`` rather than importing anything, so asking never imports
    CuPy.
    """
    if isinstance(a, (np.ndarray, np.generic)):
        return "numpy"
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    strict = sys.modules.get("array_api_strict")
    if strict is not None and isinstance(a, strict._array_object.Array):
        return "array_api_strict"
    return None


def numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype equal to a NumPy, CuPy or array_api_strict dtype."""
    # array_api_strict's dtype objects wrap a NumPy dtype; CuPy uses NumPy's.
    return np.dtype(getattr(dtype, "_np_dtype", dtype))


def to_numpy(a) -> np.ndarray:
    """Copy an array of any known backend to a NumPy array (CuPy: a device sync).

    Parameters
    ----------
    a : array
        NumPy, CuPy or array_api_strict array, or anything NumPy accepts.

    Returns
    -------
    numpy.ndarray
    """
    name = backend_name_of(a)
    if name == "cupy":
        return a.get()  # sync point: device -> host copy
    if name == "array_api_strict":
        return np.from_dlpack(a)
    return np.asarray(a)


def as_array_of(result, template):
    """`result` as an array of the same library (and CUDA device) as `template`.

    Lets functions hand results back on the caller's side: NumPy in, NumPy out;
    CuPy in, CuPy out. Copies only when the libraries differ.

    Parameters
    ----------
    result : array
        NumPy, CuPy or array_api_strict array.
    template : array
        Any array; anything that is not CuPy or array_api_strict counts as NumPy.

    Returns
    -------
    array
    """
    target = backend_name_of(template) or "numpy"
    if backend_name_of(result) == target and (
        target != "cupy" or result.device.id == template.device.id
    ):
        return result
    host = to_numpy(result)
    if target == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(template.device.id):
            return cupy.asarray(host)
    if target == "array_api_strict":
        return sys.modules["array_api_strict"].asarray(host)
    return host


def blas_threads(limit: int | None):
    """A context manager limiting NumPy's BLAS to `limit` threads; None changes nothing.

    Small matrix products (a training batch below 128 rows, a server's few rows) lose
    more to handing arrays between cores than a second thread gains; threadpoolctl
    finds and limits OpenBLAS, MKL, BLIS or Accelerate, whichever NumPy uses.
    """
    if limit is None:
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=limit, user_api="blas")


_BLAS_CONTROLLER = None


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, built once (it scans them)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER
