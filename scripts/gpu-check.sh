#!/usr/bin/env bash
# GPU check for a lent CUDA machine (see README, "GPU check"). Runs from the repo root
# with PYTHONPATH=src and no install; needs cupy, numpy, pytest (and torch for the
# PyTorch peers) on the machine and the full MNIST in data-local/mnist (copy
# ../shared/data/mnist there and carry it; JAX with its CUDA plugin for the JAX
# peers). Writes at most 7 files under $OUT (default ./gpu-out): info.txt,
# gpu-tests.txt, train-cpu.jsonl, train-cuda.jsonl, parity.json,
# gpu_epoch_time-*.json (gpu_epoch_time-partial.json if the benchmark ran out of
# time: what it measured, batch size by batch size) and log.txt (everything printed).
# The whole run is meant to take at most 8 minutes; the benchmark gets 330 s of it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
DATA="${DATA:-data-local/mnist}"
TMP="$(mktemp -d)"

main() {
  { nvidia-smi || true; python -m mnist_xp info --json; python -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)"; python -c "import jax; print('jax', jax.__version__, jax.devices())"; } \
    > "$OUT/info.txt" 2>&1
  echo "== gpu tests"
  python -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -25
  echo "== cpu vs cuda training (default settings, full MNIST)"
  for dev in cpu cuda; do
    python -m mnist_xp train --device "$dev" --require-device --data-dir "$DATA" --quiet \
      --metrics "$OUT/train-$dev.jsonl" --save "$TMP/model-$dev.npz" 2>&1 | tail -3
  done
  python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {d: [json.loads(l) for l in open(f"{out}/train-{d}.jsonl")] for d in ("cpu", "cuda")}
acc = {d: r[-1]["test_accuracy"] for d, r in rows.items()}
secs = {d: sum(x["seconds"] for x in r) for d, r in rows.items()}
diff = abs(acc["cpu"] - acc["cuda"]) * 100
engines = {d: r[-1].get("engine") for d, r in rows.items()}
print(f"engines: {engines} ({'OK' if engines == {'cpu': 'numpy', 'cuda': 'cuda'} else 'WRONG'})")
print(f"test accuracy cpu {acc['cpu']:.4f} ({secs['cpu']:.2f} s) cuda {acc['cuda']:.4f} "
      f"({secs['cuda']:.3f} s): {diff:.2f} points apart ({'OK' if diff <= 0.3 else 'TOO FAR'}: limit 0.3)")
json.dump({"accuracy": acc, "training_seconds": secs, "difference_points": diff,
           "engines": engines},
          open(f"{out}/parity.json", "w"), indent=1)
PY
  echo "== GPU benchmark (ours and the peers, batch 128 then 512)"
  timeout 330 python benchmarks/gpu_epoch_time.py --data-dir "$DATA" --out "$OUT" 2>&1 | tail -45
}

main 2>&1 | tee "$OUT/log.txt"
rm -rf "$TMP"
