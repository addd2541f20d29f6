#!/usr/bin/env bash
# GPU throughput of the SageMaker CLIP handler, in one go (about 3-5 minutes).
#
# For a session with a device: fp16, forward batches up to 1024, every CPU
# core decoding. It builds the random-weight ViT-B/32 itself (no model hub),
# then measures forward-only and end-to-end (JSON and JSON Lines) throughput:
#   1. 256 px JPEGs (ABO's small images), exact preprocessing;
#   2. the same at 1024 with forward chunks of 256 overlapping the decoding;
#   3. 512 px JPEGs, exact preprocessing;
#   4. 512 px JPEGs with CLIPSEARCH_JPEG_DRAFT (reduced-scale JPEG decoding);
#   5. fp32 at 256 and 1024 for comparison with the fp16 figures.
# Reports land in $OUT (the device runner's folder) or .benchmarks/, as
# Markdown tables for docs/benchmarks.md and JSON.
#
# Needs a Python with CUDA torch, transformers>=4.56, pillow and numpy
# (orjson optional): $PYTHON, else .venv/bin/python, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEST=${OUT:-.benchmarks}
mkdir -p "$DEST"
WORK=${WORK_DIR:-/tmp/clipsearch-gpu-bench}

"$PY" - <<'EOF'
import sys
try:
    import numpy, PIL, torch, transformers  # noqa: F401
except ImportError as exc:
    sys.exit(f"missing dependency: {exc.name}; install torch (CUDA), transformers, pillow, numpy")
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch; this benchmark is for a GPU machine")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name(0)}")
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
echo "cpus: $(nproc)"

run() {  # name, then benchmark arguments
  local name=$1; shift
  echo "==> $name"
  "$PY" -m benchmarks.sagemaker_handler --device cuda --work-dir "$WORK" \
    --decode-workers "$(nproc)" --repeats 5 --min-time 1 --json "$DEST/$name.json" "$@" \
    | tee "$DEST/$name.md"
}

run gpu-fp16-256px --dtype float16 --batch-sizes 1,8,32,256,1024 --image-size 256
# Same, but the handler forwards in chunks of 256 while the pool decodes the next.
run gpu-fp16-256px-pipelined --dtype float16 --batch-sizes 1024 --image-size 256 \
  --forward-batch 256
run gpu-fp16-512px --dtype float16 --batch-sizes 32,256,1024 --image-size 512
run gpu-fp16-512px-draft --dtype float16 --batch-sizes 32,256,1024 --image-size 512 --jpeg-draft
run gpu-fp32-256px --dtype float32 --batch-sizes 256,1024 --image-size 256
echo "reports in $DEST"
