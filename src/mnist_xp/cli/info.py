"""``mnist-xp info``: versions, backends, CUDA devices, and which engine trains on each."""

from __future__ import annotations

import json
import platform

import numpy as np

from .. import __version__
from ..backend import cuda_devices
from ..training.engines import engine_summary

__all__ = ["cmd_info"]


def cmd_info(args) -> int:
    """Print version, library versions, what CUDA looks like here, and the engines."""
    cuda = cuda_devices()
    info = {"mnist_xp": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "cupy": cuda["cupy"], "devices": cuda["devices"],
            "cuda": None if cuda["cupy"] is None else {"runtime": cuda["runtime"],
                                                       "driver": cuda["driver"]},
            "cuda_unavailable": cuda["unavailable"],
            "engines": {"cpu": engine_summary("numpy"),
                        "cuda": engine_summary("cupy") if cuda["cupy"] is not None else None}}
    try:
        import array_api_strict
        info["array_api_strict"] = array_api_strict.__version__
    except ImportError:
        info["array_api_strict"] = None
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"mnist-xp {info['mnist_xp']} (Python {info['python']}, {info['platform']})")
    print(f"numpy {info['numpy']}: cpu")
    print(f"array_api_strict {info['array_api_strict'] or 'not installed'}")
    if cuda["cupy"] is None:
        print(f"cupy: unavailable ({cuda['unavailable']})")
    else:
        print(f"cupy {cuda['cupy']}: CUDA runtime {cuda['runtime']}, driver {cuda['driver']}")
        for d in cuda["devices"]:
            print(f"  {d['device']}: {d['name']}, {d['memory_bytes'] / 2**30:.1f} GiB")
    print(f"engine on cpu: {info['engines']['cpu']}")
    if info["engines"]["cuda"] is not None:
        print(f"engine on cuda: {info['engines']['cuda']}")
    return 0
