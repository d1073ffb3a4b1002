#!/usr/bin/env bash
# The CUDA measurements of benchmarks/README.md in one go, for a single-GPU machine.
#
#   bash benchmarks/gpu.sh                  # numbers to benchmarks/results/gpu/
#   OUT=/some/dir bash benchmarks/gpu.sh
#   PARTS="eval_cache eval_cache_tiny" bash benchmarks/gpu.sh   # only these parts (names below)
#
# Where the machine has torch but no open_clip (and cannot reach PyPI), put the wheels of
# open_clip_torch, ftfy and wcwidth in .whl/ first; they are installed into /tmp/site. Each part has
# its own time limit and a failing part does not stop the others.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ! python3 -c "import open_clip" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'open_clip', open_clip.__version__)"
    nproc
} 2>&1 | tee "$OUT/machine.txt"

PARTS=${PARTS:-"smoke main classes1000 compile eval_cache eval_cache_tiny"}
want() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

step() {  # name, limit in seconds, step.py arguments
    local name=$1 limit=$2
    shift 2
    want "$name" || return 0
    echo "== $name: python benchmarks/step.py --device cuda $*" | tee "$OUT/$name.txt"
    timeout "$limit" python3 benchmarks/step.py --device cuda "$@" --json "$OUT/$name.json" 2>&1 | tee -a "$OUT/$name.txt"
}
step smoke 60 --smoke
# ViT-B/16, batch 32, 100 classes: clipfit (bf16 autocast) against the released way (fp32), full, forward; eval
step main 180 --repeats 20 --warmup 3
# 1000 classes: the released way fits on this GPU; clipfit with the text tower checkpointed too
step classes1000 120 --classes 1000 --grad-checkpointing text --variants clipfit reference forward \
    --repeats 10 --warmup 2 --skip-eval
step compile 180 --variants clipfit --compile --repeats 20 --warmup 3 --skip-eval

bench() {  # name, limit in seconds, script, its arguments (a lent GPU is not shared: no waiting for a quiet machine)
    local name=$1 limit=$2 script=$3
    shift 3
    want "$name" || return 0
    echo "== $name: python $script $*" | tee "$OUT/$name.txt"
    timeout "$limit" python3 "$script" "$@" --max-wait 0 --json "$OUT/$name.json" 2>&1 | tee -a "$OUT/$name.txt"
}
# The test-set cache: ViT-B/16 on 2,000 JPEGs of 500x375 from JPEG (DataLoader workers), building the cache,
# from it (target: >= 2,000 images/s), the nvjpeg first pass, a plain open_clip loop and CLIP_benchmark's loader
bench eval_cache 300 benchmarks/eval_cache.py --device cuda --model ViT-B-16 --images 2000 --repeats 3 --warmup 1
# the same with the 32 px model: what decoding alone costs against the cache
bench eval_cache_tiny 150 benchmarks/eval_cache.py --device cuda --images 2000 --repeats 3 --warmup 1
