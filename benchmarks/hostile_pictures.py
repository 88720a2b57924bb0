"""Hostile pictures: peak memory above the process's baseline and time, per picture.

Issue 18's bound: any accepted picture costs at most 256 MB above the process's
baseline and 1 s on this machine. The pictures: the two of tests/data/cases/hostile/
(a 40,000,000 x 1 PNG of 39 kB, refused before decoding; a 40-megapixel RGBA PNG of
177 kB with a 7 in its alpha channel), and, generated here at about 40 megapixels with
a 7 on them, a 16-bit greyscale PNG, a 16-bit RGBA PNG (refused from its header: 320
MB of samples to inflate, over the 160 MB budget) and one of 20 megapixels (read), a
float32 TIFF (deflate), an 8-bit RGB JPEG, and a 200,000 x 200 greyscale PNG (a
sliver within the aspect limit, which is decoded and block-averaged), and a 1581 x
1581 PNG of one solid bar (a 1 drawn with a broad brush: 4 kB, once 30 s).

Each picture is read in a fresh process per repeat: the process imports mnist_xp,
loads the shipped model and reads a small picture first (so imports and first-call
costs are in the baseline), then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) and reads the picture as ``predict`` does
(`read_digits_file`, then the model). Reported: the baseline RSS, the peak RSS above
it (VmHWM after the read minus VmRSS before it), and the time of the read (median of
the repeats; the peak is the largest), with its CPU time (all threads), which other
work on a shared machine inflates less. The whole ``mnist-xp predict FILE`` command is
also run once per picture (wall time and peak RSS of the process, start-up and model
load included), for comparison with the issue's numbers.

    python benchmarks/hostile_pictures.py [--repeat 3] [--out benchmarks/results]

Results go to benchmarks/results/hostile_pictures-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import machine_info, write_result  # noqa: E402

HOSTILE = ROOT / "tests" / "data" / "cases" / "hostile"
WARM_UP = ROOT / "tests" / "data" / "cases" / "cropped-to-ink" / "d7.png"
SIDE = 6324  # 6324 x 6324 = 39,992,976 pixels, under the 40-megapixel cap
HALF = 4472  # 4472 x 4472 = 19,998,784 pixels: 16-bit RGBA within the sample budget
LIMIT_MB, LIMIT_S = 256, 1.0

# Runs ``mnist-xp ARGS`` and says its peak RSS (VmHWM) on stderr at exit. The process's
# own mark, not the rusage of a child, which Linux starts from the parent's peak.
COMMAND = r"""
import atexit, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(f"VmHWM {kb}", file=sys.stderr)
atexit.register(peak)
sys.argv = ["mnist-xp", *sys.argv[1:]]
runpy.run_module("mnist_xp", run_name="__main__", alter_sys=True)
"""

# Runs in a fresh interpreter: argv = picture, warm-up picture. Prints one JSON line.
CHILD = r"""
import json, resource, sys, time
import numpy as np
from mnist_xp.errors import ImageError
from mnist_xp.images import read_digits_file
from mnist_xp.model_files import default_model_path, load

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

def read(path):
    digits = read_digits_file(path, classify=model.predict_proba)
    proba = np.asarray(model.predict_proba(np.stack([d.image.reshape(-1) for d in digits])))
    return "".join(str(model.classes_[i]) for i in proba.argmax(axis=1))

model = load(default_model_path(), device="cpu")
read(sys.argv[2])
base = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak-RSS mark (VmHWM) restarts from the current RSS
    method = "VmHWM after clear_refs"
except OSError:
    method = "ru_maxrss (peak since start; an underestimate if the warm-up was larger)"
start, cpu = time.perf_counter(), time.process_time()
try:
    answer = read(sys.argv[1])
except ImageError as exc:
    answer = "refused: " + str(exc)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = status("VmHWM") if method.startswith("VmHWM") else (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"answer": answer, "seconds": seconds, "cpu_seconds": cpu,
                  "baseline_bytes": base,
                  "peak_bytes": peak, "method": method}))
"""


def _seven(side_y: int, side_x: int, height: int) -> np.ndarray:
    """A bool mask (side_y, side_x) of a thick 7 about `height` pixels tall, centred."""
    import cv2

    mask = np.zeros((side_y, side_x), np.uint8)
    cy, cx, h = side_y // 2, side_x // 2, height
    pen = max(1, h // 10)
    top = (cx - h // 3, cy - h // 2), (cx + h // 3, cy - h // 2)
    foot = (cx - h // 10, cy + h // 2)
    cv2.line(mask, top[0], top[1], 1, pen)
    cv2.line(mask, top[1], foot, 1, pen)
    return mask.astype(bool)


def make_pictures(directory: Path) -> dict[str, Path]:
    """The pictures to measure: the two hostile ones and the generated variants."""
    import cv2
    from PIL import Image

    pictures = {
        "sliver 40,000,000x1 PNG (hostile)": HOSTILE / "sliver_40000000x1.png",
        "RGBA 6324x6324 PNG (hostile)": HOSTILE / "rgba_6324x6324.png",
    }
    seven = _seven(SIDE, SIDE, SIDE // 2)
    deep = np.where(seven, 0, 65535).astype(np.uint16)
    path = directory / "gray16_6324x6324.png"
    cv2.imwrite(str(path), deep)
    pictures["16-bit grey 6324x6324 PNG"] = path
    for side in (SIDE, HALF):  # refused: 320 MB of samples; read: 160 MB
        bgra = np.zeros((side, side, 4), np.uint16)
        bgra[..., 3] = np.where(_seven(side, side, side // 2), 65535, 0)  # black ink
        path = directory / f"rgba16_{side}x{side}.png"
        cv2.imwrite(str(path), bgra)
        pictures[f"16-bit RGBA {side}x{side} PNG"] = path
        del bgra
    path = directory / "float32_6324x6324.tif"
    Image.fromarray(np.where(seven, 0.0, 1.0).astype(np.float32)).save(
        path, compression="tiff_deflate")
    pictures["float32 6324x6324 TIFF (deflate)"] = path
    del deep
    rgb = np.where(seven[..., None], 20, 235).astype(np.uint8).repeat(3, axis=2)
    path = directory / "rgb_6324x6324.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    pictures["RGB 6324x6324 JPEG"] = path
    del rgb, seven
    strip = np.where(_seven(200, 200_000, 150), 0, 255).astype(np.uint8)
    path = directory / "sliver_200000x200.png"
    Image.fromarray(strip).save(path)
    pictures["sliver 200,000x200 PNG"] = path
    # A 4 kB PNG: a solid bar, which once measured as a stroke 8000 px wide (no
    # outline inside its own box) and cost a 7977-px erosion kernel, 30 s and 1.2 GB.
    bar = np.zeros((1581, 1581), np.uint8)
    bar[250:1250, 750:850] = 255
    path = directory / "bar_1581x1581.png"
    Image.fromarray(bar).save(path)
    pictures["solid bar 1581x1581 PNG (a 1)"] = path
    return pictures


def _environment() -> dict:
    """The children's environment: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH"))
                                        if p)
    return env


def measure(path: Path) -> dict:
    """One fresh process reading `path` after its warm-up: the child's JSON."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(WARM_UP)],
                         env=_environment(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def whole_command(path: Path) -> dict:
    """``mnist-xp predict PATH``: wall time, peak RSS of the process, exit status, output."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", COMMAND, "predict", "--device", "cpu",
                           str(path)], env=_environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = proc.stderr.splitlines()
    peak = [int(line.split()[1]) for line in lines if line.startswith("VmHWM ")]
    output = [line for line in (proc.stdout + proc.stderr).splitlines()
              if not line.startswith("VmHWM ")]
    return {"seconds": round(seconds, 3),
            "peak_rss_mb": round(peak[-1] / 1024, 1) if peak else None,
            "exit_status": proc.returncode, "output": "\n".join(output)}


def main(argv=None) -> int:
    """Measure every picture; print a table; write the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per picture (3)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile_pictures_") as tmp:
        print("generating the pictures...", flush=True)
        pictures = make_pictures(Path(tmp))
        for name, path in pictures.items():
            runs = [measure(path) for _ in range(args.repeat)]
            seconds = statistics.median(r["seconds"] for r in runs)
            above = max(r["peak_bytes"] - r["baseline_bytes"] for r in runs) / 2**20
            baseline = statistics.median(r["baseline_bytes"] for r in runs) / 2**20
            from PIL import Image

            with Image.open(path) as im:
                size, mode = im.size, im.mode
            row = {"picture": name, "file_bytes": path.stat().st_size,
                   "size": list(size), "mode": mode, "answer": runs[0]["answer"],
                   "seconds_median": round(seconds, 3),
                   "seconds_all": [round(r["seconds"], 3) for r in runs],
                   "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
                   "baseline_rss_mb": round(baseline, 1),
                   "peak_above_baseline_mb": round(above, 1),
                   "peak_method": runs[0]["method"],
                   "within_bounds": above <= LIMIT_MB and seconds <= LIMIT_S,
                   "command": whole_command(path)}
            rows.append(row)
            print(f"{name:36s} {row['peak_above_baseline_mb']:7.1f} MB above "
                  f"{row['baseline_rss_mb']:.0f} MB, {seconds:6.3f} s "
                  f"(CPU {row['cpu_seconds_median']:.3f} s)  "
                  f"(whole command {row['command']['seconds']:.2f} s, "
                  f"{row['command']['peak_rss_mb']:.0f} MB)  {row['answer'][:70]}",
                  flush=True)
    payload = {"benchmark": "hostile_pictures", "machine": machine_info(),
               "limits": {"peak_above_baseline_mb": LIMIT_MB, "seconds": LIMIT_S},
               "repeat": args.repeat, "rows": rows}
    print("wrote", write_result(args.out, "hostile_pictures", payload))
    return 0 if all(r["within_bounds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
