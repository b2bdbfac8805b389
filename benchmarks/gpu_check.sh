#!/usr/bin/env bash
# GPU readiness in one prepared script: run it first whenever a CUDA machine is lent.
#   1. tests/test_gpu.py — the quick study on CUDA in bf16 reaches the CPU's verdicts within their CIs;
#   2. `"$PY" -m stageprobe bench --model qwen2.5-vl-7b-random --device cuda` — extraction throughput against a plain
#      forward (goal: overhead ≤ 1.11×, i.e. ≥ 0.9× the plain forward's throughput) and peak GPU memory;
#   3. `stageprobe plan` of the 7B architecture — the stores and memory a real run would need.
# Results go to $OUT (default /tmp/stageprobe-gpu-check). Without a CUDA GPU it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/stageprobe-gpu-check}"
PY="${PYTHON:-python}"
# a Python without torch fails here, loudly: only a missing GPU counts as "skipped"
cuda=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$cuda" != 1 ]; then
  echo "gpu_check: skipped: no CUDA GPU on this machine (torch.cuda.is_available() is False)"
  exit 0
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.txt"
"$PY" -m stageprobe bench --model qwen2.5-vl-7b-random --device cuda --json > "$OUT/bench-7b.json"
"$PY" -m stageprobe plan --model qwen2.5-vl-7b-random --json > "$OUT/plan-7b.json"
"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
bench = json.load(open(f"{out}/bench-7b.json"))
plan = json.load(open(f"{out}/plan-7b.json"))
print(f"gpu_check: extraction throughput {1 / bench['overhead_ratio']:.2f}x the plain forward (goal >= 0.9); "
      f"a default 7B study stores {plan['total_bytes'] / 2**30:.1f} GiB of features")
for key in ("plain_forward_s", "extract_all_s", "overhead_ratio", "peak_gpu_mb"):
    if key in bench:
        print(f"  {key}: {bench[key]}")
PY
