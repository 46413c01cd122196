#!/usr/bin/env bash
# Everything a session with a GPU should check, in one device call (device time is short,
# and each call starts a bare machine): build, environment, the GPU-only tests first, the
# whole suite, then the GPU benchmark rows of bench/README.md. Every step runs even if an
# earlier one failed; each writes one file into OUT (the device returns at most 8), and
# its exit status goes to OUT/status.txt.
#
#   bash bench/gpu_checks.sh DATA_DIR [OUT]      # DATA_DIR holds MNIST/raw/
#
# The device gets only this repository: copy ../shared/data/MNIST and tinyshakespeare into
# an ignored folder first (e.g. `mkdir -p .gpudata && cp -r ../shared/data/{MNIST,
# tinyshakespeare} .gpudata/ && echo .gpudata/ >> .git/info/exclude`), carry it, and pass
# it as DATA_DIR; on the device, OUT=$OUT.
set -u
data=${1:?usage: bash bench/gpu_checks.sh DATA_DIR [OUT]}
out=${2:-${OUT:-gpu-checks}}
mkdir -p "$out"
out=$(cd "$out" && pwd) data=$(cd "$data" && pwd)  # absolute: the steps run from the root
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD BINGO_DATA=$data OMP_NUM_THREADS=4  # 16 threads per xdist worker timed out

step() {  # step NAME FILE COMMAND...: run, keep its output and exit status
    local name=$1 file=$2
    shift 2
    "$@" >"$out/$file" 2>&1
    echo "$name: exit $?" >>"$out/status.txt"
}

# The C++ extension (optional: without it the CPU tests fall back or skip) and the
# bingo.kernels package that an installed bingo maps from kernels/.
if ! python -c "import bingo._cpu" 2>/dev/null; then
    { pip install --no-build-isolation --no-deps -e . || python setup.py build_ext --inplace; } \
        >"$out/install.log" 2>&1
fi
python -c "import bingo.kernels" 2>/dev/null || ln -sfn ../kernels bingo/kernels

step env env.txt sh -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
    python -c "import torch, triton, bingo; print(torch.__version__, triton.__version__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA\",
    bingo.available_backends())"; lscpu | grep "Model name"'
step gpu-only-tests gpu_tests.txt timeout 300 python -m pytest tests/test_proxies.py \
    tests/test_kernels.py --data-dir "$data" -q -rs -p no:benchmark -k "capture or graphs or gpu or cuda"
# --device cuda through the CLI (tests/test_device.py). CIFAR-10's pickles (~180 MB) exceed
# what a device call carries (64 MiB), so its rows run only where DATA_DIR holds them.
cifar=()
[ -d "$data/cifar-10-batches-py" ] || cifar=(-k "not cifar10 and not resnet20")
step device-tests device_tests.txt timeout 400 python -m pytest tests/test_device.py \
    --data-dir "$data" -q -rs -p no:benchmark "${cifar[@]}"
workers=()  # pytest-xdist where installed (the suite took 61-94 s on an H100 machine with 6)
python -c "import xdist" 2>/dev/null && workers=(-n 6 --dist loadfile)
step tests tests.txt timeout 420 python -m pytest tests --data-dir "$data" -q -rs -p no:benchmark \
    "${workers[@]}"
step bench-proxies bench_proxies.txt timeout 300 python -m pytest bench/bench_proxies.py \
    --benchmark-only --benchmark-columns=median,mean,iqr,rounds
step proxies-in-loop proxies_in_loop.txt timeout 300 python bench/proxies_in_loop.py \
    --data-dir "$data" --device cuda --steps 500
cat "$out/status.txt"
