#!/bin/bash
# One call for a lent GPU machine: the CUDA tests, then what is still unmeasured there.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [WHEELS_DIR]
#
# The lent machines reach no package registry: WHEELS_DIR may hold wheels they lack
# (pycocotools, for the evaluation in gpu_bench), installed with --no-index into /tmp/site.
# ../shared/data must exist (tests read the COCO sample there). Writes gpu_tests.txt,
# gpu_train.* and gpu_label.* to OUT_DIR; sized for at most 9 minutes (call limit: 10).
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [WHEELS_DIR]}
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -n "${2:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$2"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# Every test that needs CUDA (they skip elsewhere), and their CPU neighbours.
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfEs --tb=short \
  tests/benchmarks/test_ssl_benchmarks.py tests/data/test_device.py \
  tests/label/test_crop_upload.py tests/label/test_device_crops.py \
  tests/inference/test_fast_torch.py tests/training/test_ssl_train.py \
  tests/training/test_optimizer.py tests/data/test_strong.py tests/models/test_cuda_graph.py \
  > "$out/gpu_tests.txt" 2>&1
tail -20 "$out/gpu_tests.txt"
# Training first (the step is host-bound: compare runs only within one machine), then
# device-decode labeling on 40,000 images with 4 and 8 processes (8 has never finished
# inside a call's limit; 4 gave 0.33x model-only on an H200).
timeout 120 python3 benchmarks/gpu_bench.py --images 300 --sections training \
  --json-out "$out/gpu_train.json" 2>&1 | grep -v Warning | tee "$out/gpu_train.txt"
timeout 260 python3 benchmarks/gpu_bench.py --images 2000 --label-repeat 20 \
  --label-processes 4,8 --no-label-host --sections labeling --reps 10 \
  --json-out "$out/gpu_label.json" 2>&1 | grep -v Warning | tee "$out/gpu_label.txt"
