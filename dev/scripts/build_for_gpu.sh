#!/usr/bin/env bash
# Builds, on a machine with Rust and nvcc, what dev/scripts/gpu_check.sh runs on a GPU machine that may have no
# Rust: the kernel test binaries (fp32, bf16, tensor-core attention) and the trainer, built with --features cuda,
# copied to target/gpu_check/.
# Archs: CUDA_COMPUTE_CAP (default 89,90: RTX 4070 and H100/H200). Then carry target/gpu_check to the GPU machine
# and run `bash dev/scripts/gpu_check.sh` there.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-89,90}
out=target/gpu_check
mkdir -p "$out"
for tests in gpu_kernels gpu_bf16 gpu_flash_tc; do
    test_bin=$(cargo test --release --features cuda --test "$tests" --no-run --message-format=json \
        | grep -o "\"executable\":\"[^\"]*$tests[^\"]*\"" | tail -n 1 | cut -d'"' -f4)
    cp "$test_bin" "$out/$tests"
done
cargo build --release --features cuda --bin train_gpt2
cp target/release/train_gpt2 "$out/train_gpt2"
bench_bin=$(cargo bench --features cuda --bench kernels --no-run --message-format=json \
    | grep -o '"executable":"[^"]*kernels[^"]*"' | tail -n 1 | cut -d'"' -f4)
cp "$bench_bin" "$out/kernels"
# Debug info is 90% of each binary (310 MB in all); without it they are about 29 MB, small enough to carry to the
# GPU machine (the device tool carries at most 64 MiB), and panics still name their functions.
strip --strip-debug "$out"/*
ls -la "$out"
du -sh "$out"
