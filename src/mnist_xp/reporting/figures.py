"""Figures of a model and its training, as PNG files: needs matplotlib (``[plot]`` extra).

matplotlib is optional and imported only inside these functions, so ``import mnist_xp``
never pays for it; without it every function raises a one-line `ReportError` saying
``pip install 'mnist-xp[plot]'``. Figures are drawn on matplotlib's Agg canvas (no
display, no global pyplot state), rendered to memory, and only then written with
`atomic_write`, so a failure never leaves a half-written PNG. `write_report` renders
every figure before it writes the first file.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from ..fileio.writing import atomic_write
from ..errors import ReportError
from .metrics import check_output_dir

__all__ = [
    "FILES",
    "check_matplotlib",
    "plot_confusion_matrix",
    "plot_mistakes",
    "plot_training_curves",
    "plot_weights",
    "write_report",
    "write_training_plots",
]

#: The files `write_report` and `write_training_plots` write, by role.
FILES = {
    "report": "report.json",
    "confusion_matrix": "confusion_matrix.png",
    "mistakes": "mistakes.png",
    "weights": "weights.png",
    "training_curves": "training_curves.png",
}

INSTALL_HINT = "pip install 'mnist-xp[plot]'"
DPI = 120
GALLERY_MAX = 25
GALLERY_COLUMNS = 5

# Settings every figure is drawn with, whatever the user's matplotlibrc says about
# sizes; colours and fonts still follow it.
_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "figure.titlesize": 13,
    "legend.fontsize": 9,
    "savefig.facecolor": "white",
}


def check_matplotlib() -> None:
    """Raise a one-line `ReportError` with the install command when matplotlib is missing.

    Call it before long work whose result is to be plotted, so that a missing
    optional dependency is reported at once, not after training or scoring.
    """
    _mpl()


def _mpl():
    """The matplotlib module, imported on first use; a ReportError if it is missing."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise ReportError("figures need matplotlib, which is not installed; "
                          f"install it with: {INSTALL_HINT}") from None
    return matplotlib


def _figure(**kwargs):
    """A new Figure on its own Agg canvas (never pyplot, so no display and no global state)."""
    _mpl()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    """The figure as PNG bytes (the Software tag dropped, so equal figures give equal bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; an OSError becomes a one-line ReportError."""
    try:
        with atomic_write(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise ReportError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    return path


@functools.cache
def _arrow() -> str:
    """'→' when the default font has it, else '->' (a missing glyph would draw as a box)."""
    from matplotlib import font_manager, ft2font

    try:
        font = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
        has_arrow = bool(ft2font.FT2Font(font).get_char_index(0x2192))
    except (OSError, RuntimeError, ValueError):  # an unreadable font: ASCII always renders
        has_arrow = False
    return "\u2192" if has_arrow else "->"


def _percent(p: float) -> str:
    """'97.3%', rounded down, so a probability below 1 never reads '100.0%'."""
    return f"{math.floor(p * 1000) / 10:.1f}%"


# -- training curves --------------------------------------------------------------------

def plot_training_curves(history, path: str | os.PathLike) -> Path:
    """Draw loss and accuracy per epoch to a PNG file.

    Parameters
    ----------
    history : list of dict
        Per-epoch records, as `MLPClassifier.history_`, `read_metrics` or
        ``--metrics`` give: ``epoch`` (int), ``train_loss``, ``train_accuracy``
        (float in [0, 1]), and optionally ``test_accuracy`` and ``val_accuracy``
        (float or None; a series that is None throughout is left out).
    path : str or path-like
        The PNG to write (atomically); its directory must exist.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ReportError
        matplotlib is missing, or `path` cannot be written.
    ValueError
        `history` is empty.
    """
    return _write_bytes(Path(path), _render_training_curves(history))


def _render_training_curves(history) -> bytes:
    """PNG bytes: loss (left) and accuracy (right) against the epoch."""
    history = list(history)
    if not history:
        raise ValueError("history is empty: there are no epochs to plot")
    mpl = _mpl()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = [r["epoch"] for r in history]
    marker = "o" if len(epochs) <= 30 else None  # dots make a 1- or 2-epoch run visible
    with mpl.rc_context(_RC):
        fig = _figure(figsize=(10, 4.2), layout="constrained")
        loss_ax, acc_ax = fig.subplots(1, 2)
        loss = np.array([r["train_loss"] for r in history], dtype=float)
        loss_ax.plot(epochs, loss, marker=marker, ms=4, label=f"train (last {loss[-1]:.4f})")
        finite = loss[np.isfinite(loss)]
        # Loss falls by orders of magnitude; on a linear axis the later epochs are a flat line.
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
            loss_ax.set_yscale("log")
        loss_ax.set(title="Training loss", xlabel="epoch", ylabel="mean loss per image")

        series = (("train_accuracy", "train"), ("test_accuracy", "test"),
                  ("val_accuracy", "validation"))
        for key, name in series:
            values = [r.get(key) for r in history]
            if all(v is None for v in values):
                continue
            y = np.array([np.nan if v is None else 100 * v for v in values], dtype=float)
            last = y[np.isfinite(y)]
            label = f"{name} (last {last[-1]:.2f}%)" if last.size else name
            acc_ax.plot(epochs, y, marker=marker, ms=4, label=label)
        acc_ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
        # Room of half an epoch either side, or matplotlib spreads a single epoch over
        # fractional ticks (0.95 .. 1.05).
        pad = max(0.5, 0.02 * (max(epochs) - min(epochs)))
        for ax in (loss_ax, acc_ax):
            ax.set_xlim(min(epochs) - pad, max(epochs) + pad)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(loc="best")
        n = len(epochs)
        fig.suptitle(f"Training curves ({n} epoch{'s' if n != 1 else ''})")
        return _png(fig)


# -- confusion matrix -------------------------------------------------------------------

def plot_confusion_matrix(cm, classes, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw an annotated confusion matrix to a PNG file.

    The off-diagonal cells (the errors) get a colour scale of their own, from white
    for none to dark red for the most frequent confusion, so a handful of errors is
    visible beside diagonals in the thousands; the diagonal (correct predictions) is
    drawn in a flat green with its counts in bold.

    Parameters
    ----------
    cm : array-like of int, shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted ones (as
        `evaluation_report` gives under ``"confusion_matrix"``).
    classes : sequence, length n_classes
        Labels of the rows and columns.
    path : str or path-like
        The PNG to write (atomically); its directory must exist.
    title : str, optional
        Default: the number of errors and the accuracy.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ReportError
        matplotlib is missing, or `path` cannot be written.
    ValueError
        `cm` is not square, does not match `classes`, or holds negative counts.
    """
    return _write_bytes(Path(path), _render_confusion_matrix(cm, classes, title=title))


def _render_confusion_matrix(cm, classes, *, title=None) -> bytes:
    """PNG bytes of the annotated confusion matrix."""
    cm = np.asarray(cm)
    classes = list(np.asarray(classes).tolist())
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"cm must have shape ({k}, {k}) for {k} classes, got {cm.shape}")
    if cm.dtype.kind not in "iuf" or np.any(cm < 0) or not np.array_equal(cm, np.round(cm)):
        raise ValueError("cm must hold non-negative whole counts")
    cm = cm.astype(np.int64)
    mpl = _mpl()
    from matplotlib.colors import ListedColormap, Normalize

    diagonal = np.eye(k, dtype=bool)
    errors = np.where(diagonal, 0, cm)
    worst = int(errors.max()) if k else 0
    total, n_errors = int(cm.sum()), int(errors.sum())
    if title is None:
        accuracy = (total - n_errors) / total if total else 0.0
        title = (f"Confusion matrix: {n_errors:,} of {total:,} wrong "
                 f"({accuracy:.2%} correct)")
    side = min(9.0, max(4.5, 0.62 * k + 1.6))  # cells stay readable from 2 to ~20 classes
    with mpl.rc_context(_RC):
        fig = _figure(figsize=(side + 1.3, side), layout="constrained")
        ax = fig.add_subplot()
        # Reds without its near-white end: a single error is visibly pink, and only
        # cells with no error at all (masked, so the white background) are white.
        err_map = ListedColormap(mpl.colormaps["Reds"](np.linspace(0.15, 1.0, 256)))
        # A floor of 1 keeps the scale defined when there is no error at all.
        err_norm = Normalize(vmin=0, vmax=max(worst, 1))
        image = ax.imshow(np.ma.masked_array(errors, diagonal | (errors == 0)), cmap=err_map,
                          norm=err_norm)
        ax.set_facecolor("white")
        ax.imshow(np.ma.masked_array(np.ones((k, k)), ~diagonal),
                  cmap=ListedColormap(["#d8ecd3"]), vmin=0, vmax=1)
        size = 9 if k <= 12 else 7
        for i in range(k):
            for j in range(k):
                count = int(cm[i, j])
                if i == j:
                    ax.text(j, i, f"{count}", ha="center", va="center", fontsize=size,
                            fontweight="bold", color="#1d5e20")
                elif count == 0:
                    ax.text(j, i, "0", ha="center", va="center", fontsize=size - 1,
                            color="0.75")
                else:
                    dark = err_norm(count) > 0.5  # white text on the darker reds
                    ax.text(j, i, f"{count}", ha="center", va="center", fontsize=size,
                            color="white" if dark else "black")
        ax.set_xticks(range(k), [str(c) for c in classes])
        ax.set_yticks(range(k), [str(c) for c in classes])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        # Thin white lines between cells so neighbouring reds stay apart.
        ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_title(title)
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label("misclassified images (off-diagonal cells)")
        if worst <= 10:
            bar.set_ticks(range(max(worst, 1) + 1))
        return _png(fig)


# -- mistakes gallery -------------------------------------------------------------------

def plot_mistakes(images, mistakes, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw a gallery of misclassified images, each titled with its true and predicted label.

    Parameters
    ----------
    images : array, shape (n, side, side) or (n, side * side)
        The test images the mistakes index into: uint8 pixels (0..255) or floats in
        [0, 1]; MNIST's white ink on black is drawn as dark ink on white.
    mistakes : list of dict
        ``index``, ``true``, ``predicted`` and ``probability`` of each mistake, as in
        ``evaluation_report(...)["mistakes"]``; the first 25 are drawn, 5 to a row.
        An empty list draws a note that there were none.
    path : str or path-like
        The PNG to write (atomically); its directory must exist.
    title : str, optional
        Default: how many mistakes are shown.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ReportError
        matplotlib is missing, or `path` cannot be written.
    ValueError
        `images` is not a stack of square images, or a mistake's index is out of range.
    """
    return _write_bytes(Path(path), _render_mistakes(images, mistakes, title=title))


def _square_images(images) -> np.ndarray:
    """`images` as (n, side, side), from (n, side, side) or flattened (n, side * side) rows."""
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[1] == images.shape[2]:
        return images
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side == images.shape[1]:
            return images.reshape(images.shape[0], side, side)
    raise ValueError(f"images must have shape (n, side, side) or (n, side*side), got {images.shape}")


def _render_mistakes(images, mistakes, *, title=None) -> bytes:
    """PNG bytes of the mistakes gallery."""
    images = _square_images(images)
    shown = list(mistakes)[:GALLERY_MAX]
    for m in shown:
        if not 0 <= int(m["index"]) < images.shape[0]:
            raise ValueError(f"mistake index {m['index']} is outside the {images.shape[0]} images")
    mpl = _mpl()
    with mpl.rc_context(_RC):
        if not shown:
            fig = _figure(figsize=(6, 2.2), layout="constrained")
            ax = fig.add_subplot()
            ax.axis("off")
            ax.text(0.5, 0.5, "No mistakes: every test image was classified correctly.",
                    ha="center", va="center", fontsize=12)
            fig.suptitle(title or "Most confident mistakes")
            return _png(fig)
        ncols = min(GALLERY_COLUMNS, len(shown))
        nrows = math.ceil(len(shown) / ncols)
        fig = _figure(figsize=(2.25 * ncols, 2.3 * nrows + 0.5), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        vmax = 255 if images.dtype == np.uint8 else 1.0
        arrow = _arrow()
        for ax, m in zip(axes.flat, shown):
            ax.imshow(images[int(m["index"])], cmap="gray_r", vmin=0, vmax=vmax,
                      interpolation="nearest")
            ax.set_title(f"true {m['true']} {arrow} pred {m['predicted']} "
                         f"({_percent(float(m['probability']))})", fontsize=9.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"test image #{int(m['index'])}", fontsize=8, color="0.4")
        for ax in axes.flat[len(shown):]:
            ax.axis("off")
        if title is None:
            title = ("The most confident mistake" if len(shown) == 1 else
                     f"The {len(shown)} most confident mistakes") + " (probability of the prediction)"
        fig.suptitle(title)
        return _png(fig)


# -- first-layer weights ----------------------------------------------------------------

def plot_weights(W1, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw each hidden unit's input weights as an image tile, in a grid.

    Parameters
    ----------
    W1 : array, shape (n_inputs, n_hidden), float
        First-layer weights as in ``MLPClassifier.params_["W1"]`` (a NumPy array;
        use `mnist_xp.to_numpy` for one on a GPU). Column ``j`` is drawn as a
        ``sqrt(n_inputs)``-square tile, so n_inputs must be a perfect square (784:
        28x28). Tiles fill a near-square grid (100 units: 10x10).
    path : str or path-like
        The PNG to write (atomically); its directory must exist.
    title : str, optional
        Default: says what a tile is.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ReportError
        matplotlib is missing, or `path` cannot be written.
    ValueError
        `W1` is not 2-D or n_inputs is not a perfect square.

    Notes
    -----
    Each tile is divided by its own largest absolute weight and drawn on a
    diverging colour map centred on 0 (red positive, blue negative, white 0), so
    every unit's pattern is visible whatever its overall scale.
    """
    return _write_bytes(Path(path), _render_weights(W1, title=title))


def _weight_mosaic(W1: np.ndarray, gap: int = 2) -> tuple[np.ndarray, int, int]:
    """The tiles laid out in one array, NaN between tiles, 2 in unused cells; also (rows, columns)."""
    n_inputs, n_hidden = W1.shape
    side = math.isqrt(n_inputs)
    ncols = math.ceil(math.sqrt(n_hidden))
    nrows = math.ceil(n_hidden / ncols)
    step = side + gap
    mosaic = np.full((nrows * step + gap, ncols * step + gap), np.nan)
    scale = np.abs(W1).max(axis=0)
    scale[scale == 0] = 1.0  # an all-zero unit stays 0 rather than dividing by zero
    tiles = (W1 / scale).T.reshape(n_hidden, side, side)
    for j, tile in enumerate(tiles):
        r, c = divmod(j, ncols)
        mosaic[gap + r * step: gap + r * step + side, gap + c * step: gap + c * step + side] = tile
    for j in range(n_hidden, nrows * ncols):
        # Above the colour scale's top, so drawn as its "over" colour: blank, not a grey block.
        r, c = divmod(j, ncols)
        mosaic[gap + r * step: gap + (r + 1) * step, gap + c * step: gap + (c + 1) * step] = 2.0
    return mosaic, nrows, ncols


def _render_weights(W1, *, title=None) -> bytes:
    """PNG bytes of the first-layer weight tiles."""
    W1 = np.asarray(W1, dtype=np.float64)
    if W1.ndim != 2 or W1.shape[1] == 0:
        raise ValueError(f"W1 must have shape (n_inputs, n_hidden), got {W1.shape}")
    side = math.isqrt(W1.shape[0])
    if side * side != W1.shape[0] or side == 0:
        raise ValueError(f"W1 has {W1.shape[0]} inputs, not a square image's pixel count; "
                         "weight tiles need square images")
    if not np.all(np.isfinite(W1)):
        raise ValueError("W1 holds NaN or infinite values")
    mpl = _mpl()
    # One image of all tiles rather than one axes per unit: a single imshow is quick
    # and keeps the gaps between tiles even.
    mosaic, _, ncols = _weight_mosaic(W1)
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="#c8c8c8", over="white")
    # At least 6.5 in, or the title and the colour bar's label are clipped for few units.
    width = min(8.5, max(6.5, 0.75 * ncols + 1.6))
    # The colour bar takes ~1.6 in of the width; the tiles get the rest, at their aspect.
    height = (width - 1.6) * mosaic.shape[0] / mosaic.shape[1] + 0.6
    n_hidden = W1.shape[1]
    if title is None:
        title = (f"First-layer weights: one {side}\u00d7{side} tile per hidden unit "
                 f"({n_hidden} unit{'s' if n_hidden != 1 else ''})")
    with mpl.rc_context(_RC):
        fig = _figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title)
        bar = fig.colorbar(image, ax=ax, shrink=0.6, ticks=[-1, 0, 1])
        bar.ax.set_yticklabels(["\u2212max", "0", "+max"])
        bar.set_label("weight, scaled by its tile's largest |weight|")
        return _png(fig)


# -- whole reports ----------------------------------------------------------------------

def _write_files(directory: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Create `directory` (not its parents) and write each rendered file into it atomically."""
    try:
        directory.mkdir(exist_ok=True)
    except FileExistsError:
        raise ReportError(f"{directory}: is a file, not a directory") from None
    except FileNotFoundError:
        raise ReportError(f"{directory}: directory {directory.parent} does not exist") from None
    except OSError as exc:
        raise ReportError(f"{directory}: cannot create the directory ({exc.strerror or exc})") from None
    return {name: _write_bytes(directory / name, data) for name, data in files.items()}


def _json_text(value, indent: int = 0) -> str:
    """JSON, nested containers indented, but a container of plain values on one line."""
    # json.dumps(indent=2) would give every confusion-matrix count a line of its own.
    children = value.values() if isinstance(value, dict) else value
    if not isinstance(value, (list, dict)) or not any(isinstance(v, (list, dict)) for v in children):
        return json.dumps(value)
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(str(k))}: {_json_text(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _json_text(v, indent + 2) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def write_report(directory: str | os.PathLike, report: dict, *, images=None, W1=None,
                 history=None) -> dict[str, Path]:
    """Write ``report.json`` and the report's figures into a directory.

    Every figure is rendered in memory first; only then is the directory created
    and each file written atomically, so a failure (a bad argument, matplotlib
    missing) writes nothing and no file is ever half-written. Existing files of
    the same names are replaced; other files in the directory are left alone.

    Parameters
    ----------
    directory : str or path-like
        Created if missing; its parent must exist. An existing file is refused.
    report : dict
        As returned by `mnist_xp.reporting.metrics.evaluation_report`, possibly with extra
        JSON-serialisable keys (model, data); written as ``report.json``, with a
        ``"figures"`` key added: the names of the PNG files written with it.
    images : array, shape (n, side, side) or (n, side * side), optional
        The test images the report's mistakes index into: adds ``mistakes.png``.
    W1 : array, shape (n_inputs, n_hidden), optional
        First-layer weights (NumPy): adds ``weights.png``.
    history : list of dict, optional
        Per-epoch records (see `plot_training_curves`): adds ``training_curves.png``.

    Returns
    -------
    dict of str to pathlib.Path
        Role (keys of `FILES`: ``"report"``, ``"confusion_matrix"``, ...) to the
        written file, in writing order; ``report.json`` comes last.

    Raises
    ------
    ReportError
        `directory` is unusable, matplotlib is missing, or a file cannot be written.
    ValueError
        A malformed argument (e.g. images the mistakes do not index into).
    """
    directory = check_output_dir(directory)
    rendered = {"confusion_matrix": _render_confusion_matrix(report["confusion_matrix"],
                                                             report["classes"])}
    if images is not None:
        title = None
        shown = min(len(report["mistakes"]), GALLERY_MAX)
        if report.get("n_errors", 0) > shown > 0:
            title = (f"The {shown} most confident of {report['n_errors']:,} mistakes "
                     "(probability of the prediction)")
        rendered["mistakes"] = _render_mistakes(images, report["mistakes"], title=title)
    if W1 is not None:
        rendered["weights"] = _render_weights(W1)
    if history is not None:
        rendered["training_curves"] = _render_training_curves(history)
    # report.json last: its presence means the figures beside it are complete. It lists
    # them, as a figure left in the directory by an earlier run is not replaced.
    figures = [FILES[role] for role in rendered]
    rendered["report"] = (_json_text({**report, "figures": figures}) + "\n").encode("utf-8")
    written = _write_files(directory, {FILES[role]: data for role, data in rendered.items()})
    return dict(zip(rendered, written.values()))


def write_training_plots(directory: str | os.PathLike, history, *, W1=None) -> dict[str, Path]:
    """Write ``training_curves.png`` (and ``weights.png`` given `W1`) into a directory.

    Parameters
    ----------
    directory : str or path-like
        Created if missing; its parent must exist. An existing file is refused.
    history : list of dict
        Per-epoch records (see `plot_training_curves`).
    W1 : array, shape (n_inputs, n_hidden), optional
        First-layer weights (NumPy); their figure is skipped when n_inputs is not
        a perfect square (not image data).

    Returns
    -------
    dict of str to pathlib.Path
        Role (``"training_curves"``, ``"weights"``) to the written file.

    Raises
    ------
    ReportError
        `directory` is unusable, matplotlib is missing, or a file cannot be written.
    """
    directory = check_output_dir(directory)
    rendered = {"training_curves": _render_training_curves(history)}
    if W1 is not None:
        W1 = np.asarray(W1)
        if W1.ndim == 2 and math.isqrt(W1.shape[0]) ** 2 == W1.shape[0]:
            rendered["weights"] = _render_weights(W1)
    written = _write_files(directory, {FILES[role]: data for role, data in rendered.items()})
    return dict(zip(rendered, written.values()))
