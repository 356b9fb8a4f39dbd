#!/bin/bash
# One call for a lent GPU machine: the CUDA tests, then what is still unmeasured there.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [WHEELS_DIR] [SECTIONS]
#
# The lent machines reach no package registry: WHEELS_DIR may hold wheels they lack
# (pycocotools for gpu_bench's evaluation; nvidia-nvimgcodec-cu13 and nvidia-nvjpeg for
# --jpeg-decoder nvimgcodec), installed with --no-index into /tmp/site. ../shared/data
# must exist (tests read the COCO sample there). SECTIONS (default "tests,labeling") may
# add "training" and "mps" (8 labelers under a private CUDA MPS daemon, if the machine has
# nvidia-cuda-mps-control: do several labelers time-slice the GPU without it?) and
# "tensorrt" (needs `tensorrt` importable, or its tensorrt-cuNN, -libs and -bindings wheels
# in WHEELS_DIR: the TensorRT tests, then benchmarks/tensorrt_bench.py: FP16 and INT8
# engines built from the fp32 ONNX and its QDQ quantisation, parity with torch fp32,
# crops/s at batch 1/32/256, `posemum label --backend tensorrt`; about 5 minutes). Writes
# gpu_tests.txt, gpu_label.* (gpu_train.*, gpu_mps.*, gpu_trt.*) to OUT_DIR; the default
# sections are sized for at most 9.5 minutes (a call's limit is 10): add a section by
# dropping another, e.g. SECTIONS=tests,tensorrt.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [WHEELS_DIR] [SECTIONS]}
sections=${3:-tests,labeling}
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -n "${2:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$2"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode,mig.mode.current \
  --format=csv | tee "$out/gpu.txt"
python3 -c "from posemum_deploy.data.jpeg_decoders import nvimgcodec_installed as i; print('nvimgcodec installed:', i())"
if [[ $sections == *tests* ]]; then
  # Every test that needs CUDA (they skip elsewhere), and their CPU neighbours.
  timeout 170 python3 -m pytest -q -p no:cacheprovider -rfEs --tb=short \
    tests/data/test_jpeg_decoders.py tests/models/test_cuda_graph.py \
    tests/label/test_device_crops.py tests/label/test_crop_upload.py \
    tests/benchmarks/test_ssl_benchmarks.py tests/data/test_device.py \
    tests/inference/test_fast_torch.py tests/training/test_ssl_train.py \
    tests/training/test_optimizer.py tests/data/test_strong.py \
    tests/training/test_device_batches.py tests/training/test_trainer.py::test_resume_on_cuda \
    > "$out/gpu_tests.txt" 2>&1
  tail -25 "$out/gpu_tests.txt"
fi
if [[ $sections == *tensorrt* ]]; then
  # TensorRT has never run in this project before this section: every line counts.
  { python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1
    python3 -c "from posemum_deploy.doctor import check_tensorrt as c; print(c())" 2>&1
  } | tee "$out/gpu_trt.txt"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -rfEs --tb=short \
    tests/inference/test_trt_backend.py tests/inference/test_trt_backend_fake.py \
    tests/export/test_tensorrt.py tests/export/test_tensorrt_api.py \
    tests/inference/test_ort_backend.py >> "$out/gpu_trt.txt" 2>&1
  tail -15 "$out/gpu_trt.txt"
  timeout 330 python3 benchmarks/tensorrt_bench.py --json-out "$out/gpu_trt.json" 2>&1 \
    | grep -v Warning | tee -a "$out/gpu_trt.txt"
fi
if [[ $sections == *training* ]]; then  # host-bound step: compare runs within one machine
  timeout 120 python3 benchmarks/gpu_bench.py --images 300 --sections training \
    --json-out "$out/gpu_train.json" 2>&1 | grep -v Warning | tee "$out/gpu_train.txt"
fi
if [[ $sections == *labeling* ]]; then
  # Which processes hold a CUDA context, every 5 s, while the labelers run.
  (while true; do date +%s; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
     nvidia-smi dmon -c 1 -s u | tail -2   # sm, mem, enc, dec, jpg (JPEG engines), ofa %
     sleep 4; done) > "$out/gpu_apps.txt" 2>&1 &
  watcher=$!
  # Labeling 80,000 images (hard links). Session 5: 8 device-decode processes ran no
  # faster than one, their shards did not overlap. Here: 8 processes with device decode,
  # with host (cv2) decode (no GPU JPEG engine involved), with one shard per task
  # (session 4's design), then 4 processes; the per-labeler ready / first / last times,
  # stage clocks and the wait_for_read / sync stages say where the time goes.
  timeout 330 python3 benchmarks/gpu_bench.py --images 2000 --label-repeat 40 \
    --label-runs 8:device,8:host,8:device:1,4:device --label-jpeg torchvision \
    --no-label-host --sections labeling --reps 10 \
    --json-out "$out/gpu_label.json" 2>&1 | grep -v Warning | tee "$out/gpu_label.txt"
  kill $watcher 2>/dev/null
fi
if [[ $sections == *mps* ]]; then
  if command -v nvidia-cuda-mps-control >/dev/null; then
    # A private daemon (its own pipe/log folders); the GPU's compute mode is left as is.
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    nvidia-cuda-mps-control -d && echo "MPS daemon started" | tee "$out/gpu_mps.txt"
    timeout 150 python3 benchmarks/gpu_bench.py --images 2000 --label-repeat 20 \
      --label-runs 8:device --label-jpeg torchvision --no-label-host --sections labeling \
      --reps 10 --json-out "$out/gpu_mps.json" 2>&1 | grep -v Warning | tee -a "$out/gpu_mps.txt"
    echo quit | nvidia-cuda-mps-control
    tail -20 $CUDA_MPS_LOG_DIRECTORY/control.log >> "$out/gpu_mps.txt" 2>/dev/null
  else
    echo "no nvidia-cuda-mps-control on this machine: mps section skipped" | tee "$out/gpu_mps.txt"
  fi
fi
