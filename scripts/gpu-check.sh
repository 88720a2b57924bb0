#!/usr/bin/env bash
# GPU check for a lent CUDA machine (see README, "GPU check"). Runs from the repo root
# with PYTHONPATH=src and no install; needs cupy, numpy and pytest on the machine and
# the full MNIST in data-local/mnist (copy ../shared/data/mnist there and carry it).
# Writes everything under $OUT (default: ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH=src
DATA="${DATA:-data-local/mnist}"

{ nvidia-smi || true; python -m mnist_xp info --json; } > "$OUT/info.txt" 2>&1
echo "== gpu tests"
python -m pytest -m gpu -q -rs --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.txt" | tail -15
echo "== cpu vs cuda training (default settings, full MNIST)"
for dev in cpu cuda; do
  python -m mnist_xp train --device "$dev" --require-device --data-dir "$DATA" --quiet \
    --metrics "$OUT/train-$dev.jsonl" --save "$OUT/model-$dev.npz" 2>&1 | tee "$OUT/train-$dev.txt" | tail -2
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
acc = {d: json.loads(open(f"{out}/train-{d}.jsonl").read().splitlines()[-1])["test_accuracy"]
       for d in ("cpu", "cuda")}
diff = abs(acc["cpu"] - acc["cuda"]) * 100
print(f"test accuracy cpu {acc['cpu']:.4f} cuda {acc['cuda']:.4f}: {diff:.2f} points apart "
      f"({'OK' if diff <= 0.3 else 'TOO FAR'}: limit 0.3)")
json.dump({"accuracy": acc, "difference_points": diff}, open(f"{out}/parity.json", "w"))
PY
if ls benchmarks/*gpu*.py >/dev/null 2>&1; then
  for b in benchmarks/*gpu*.py; do
    echo "== $b"; python "$b" --data-dir "$DATA" --out "$OUT" 2>&1 | tail -20
  done
fi
