#!/usr/bin/env bash
# Builds `tailor` with `--features cuda`, also on a machine without a GPU or a CUDA install:
# nvcc 13.0 and the CUDA libraries come from PyPI, and a stub libcuda.so (the driver API symbols
# cudarc references, as empty functions) satisfies the linker. The binary then needs the real
# driver (libcuda.so.1) at run time, as every CUDA program does.
#
#   tools/cuda/build.sh [COMPUTE_CAP]      # default 90 (H100/H200); target dir target-cuda/
#
# nvcc must not be newer than the CUDA version of the driver that will run the binary (PTX from a
# newer nvcc does not load): 13.0 here, for the CUDA 13.0 drivers of our GPU machines.
set -euo pipefail
cap=${1:-90}
root=$(cd "$(dirname "$0")/../.." && pwd)
kit=${CUDA_KIT:-$root/target-cuda/kit}
python=${PYTHON:-python3}
if [ ! -x "$kit/nvidia/cu13/bin/nvcc" ]; then
  "$python" -m pip install -q --no-deps --target "$kit" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
fi
cu=$kit/nvidia/cu13
stubs=$kit/stubs
mkdir -p "$stubs"
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13; do
  ln -sf "$cu/lib/$lib" "$stubs/${lib%%.so*}.so"
done
export PATH=$cu/bin:$PATH CUDA_ROOT=$cu CUDA_PATH=$cu CUDA_TOOLKIT_ROOT_DIR=$cu \
  CUDA_COMPUTE_CAP=$cap LIBRARY_PATH=$stubs CARGO_TARGET_DIR=$root/target-cuda
if [ ! -e /usr/lib/x86_64-linux-gnu/libcuda.so ] && [ ! -e "$stubs/libcuda.so" ]; then
  # Link once without the driver to learn which driver symbols cudarc needs, then stub them.
  cargo build --release --features tailor-model/cuda --locked --manifest-path "$root/Cargo.toml" -p tailor-model
  nm "$root"/target-cuda/release/deps/libcudarc-*.rlib 2>/dev/null | awk '/ U cu[A-Z]/ {print $2}' |
    grep -Ev '^(cublas|curand|cudart|cuda[A-Z])' | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
fi
cargo build --release --features cuda --locked --manifest-path "$root/Cargo.toml"
echo "built $root/target-cuda/release/tailor (run it with --device cuda on a machine with the driver)"
