"""mnist_xp: a 784-100-10 digit recogniser written once against an array module.

The same code trains and predicts on NumPy (CPU) and CuPy (CUDA)::

    import mnist_xp
    data = mnist_xp.load_mnist()                      # full MNIST, or the bundled subset
    clf = mnist_xp.MLPClassifier(device="auto", random_state=0)
    clf.fit(data.x_train.reshape(-1, 784), data.y_train)
    clf.score(data.x_test.reshape(-1, 784), data.y_test)
    mnist_xp.save(clf, "model.npz")
    clf = mnist_xp.load("model.npz", device="cpu")

Importing this package never imports CuPy; `get_backend` does, when asked for CUDA.
"""

__version__ = "0.1.0"

from .backend import Backend, get_backend, to_numpy  # noqa: E402
from .data import MNIST, load_mnist, read_idx, write_idx  # noqa: E402
from .errors import (  # noqa: E402
    DataError,
    DeviceError,
    DeviceFallbackWarning,
    DownloadError,
    ImageError,
    BlankImageError,
    MnistXPError,
    ModelFileError,
    NotFittedError,
    PixelScaleWarning,
    ReportError,
    SettingError,
)
from .ensemble import Ensemble  # noqa: E402
from .estimator import PRESETS, MLPClassifier  # noqa: E402
from .model_files import load, read_metadata, save  # noqa: E402
from .settings import SETTINGS  # noqa: E402
from .training.engines import EngineChoice  # noqa: E402
from .tuning import TuneResult, tune  # noqa: E402

__all__ = [
    "__version__",
    "Backend",
    "get_backend",
    "to_numpy",
    "MLPClassifier",
    "Ensemble",
    "PRESETS",
    "SETTINGS",
    "EngineChoice",
    "tune",
    "TuneResult",
    "MNIST",
    "load_mnist",
    "read_idx",
    "write_idx",
    "save",
    "load",
    "read_metadata",
    "MnistXPError",
    "DataError",
    "DownloadError",
    "ModelFileError",
    "DeviceError",
    "DeviceFallbackWarning",
    "PixelScaleWarning",
    "NotFittedError",
    "ReportError",
    "ImageError",
    "BlankImageError",
    "SettingError",
]
