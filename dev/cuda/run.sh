#!/usr/bin/env bash
# run.sh [emu|nvcc|all] [extra g++ flags for emu...]: build and run the dev/cuda studies.
#   emu   build every study with g++ against the CPU emulator dev/emu (-DLLMRS_EMU) and run it: each checks every
#         kernel version against its CPU reference at small shapes. Extra flags go to g++, e.g.
#         `run.sh emu -fsanitize=address` to catch out-of-bounds accesses.
#   nvcc  build every study with nvcc for sm_89 and sm_90 (compile and link); when nvidia-smi sees a GPU, run them
#         there: every version validated, then timed at GPT-2 124M shapes. nvcc: $NVCC, else PATH, else the pinned
#         PyPI wheels .ci/run installs in ~/.cache/llmrs/cuda13-venv.
#   all   both (the default).
# Binaries go to target/dev-cuda/. Exits non-zero if any build, launch or comparison fails.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-all}
[ $# -gt 0 ] && shift
extra=("$@")
case $mode in
emu | nvcc | all) ;;
*)
    echo "usage: $0 [emu|nvcc|all] [extra g++ flags for emu...]" >&2
    exit 2
    ;;
esac
studies=(layernorm_forward attention_forward classifier)
out="$root/target/dev-cuda"
mkdir -p "$out"
failed=0

# Builds every study at once (the builds are the slow part) with $1, a function taking the study's name; its output
# goes to $out/<name>.$2.log, shown when the build fails.
build_all() {
    local fn=$1 suffix=$2 pids=() name i
    for name in "${studies[@]}"; do
        "$fn" "$name" >"$out/$name.$suffix.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!studies[@]}"; do
        if ! wait "${pids[$i]}"; then
            echo "FAIL build ${studies[$i]} ($suffix):"
            sed 's/^/    /' "$out/${studies[$i]}.$suffix.log" | head -30
            failed=1
        fi
    done
}

# Runs one built study, prints its output, and records a failure.
run_study() {
    local bin=$1 start secs
    start=$(date +%s.%N)
    if "$bin"; then
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        printf -- '-- %s: ok, %.1f s\n' "$(basename "$bin")" "$secs"
    else
        echo "-- $(basename "$bin"): FAILED"
        failed=1
    fi
}

emu_build() {
    rm -f "$out/$1.emu"
    g++ -std=c++17 -O2 -g -Wall -Wno-unknown-pragmas -x c++ -DLLMRS_EMU \
        -I "$root/dev/emu/include" -I "$root/dev/emu" -I "$root/kernels" "${extra[@]}" \
        "$root/dev/cuda/$1.cu" -o "$out/$1.emu" -lpthread
}

find_nvcc() {
    if [ -n "${NVCC:-}" ]; then
        echo "$NVCC"
    elif command -v nvcc >/dev/null; then
        command -v nvcc
    else
        ls "$HOME"/.cache/llmrs/cuda13-venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -n 1
    fi
}

nvcc_build() {
    local libs=()
    rm -f "$out/$1"
    # The PyPI wheels keep libcudart_static.a next to bin/, where nvcc does not look; a toolkit install needs nothing.
    [ -d "$(dirname "$nvcc")/../lib" ] && libs=(-L "$(dirname "$nvcc")/../lib")
    "$nvcc" -O3 -std=c++17 -lineinfo -Xcompiler -Wall -gencode arch=compute_89,code=sm_89 \
        -gencode arch=compute_90,code=sm_90 -I "$root/kernels" "$root/dev/cuda/$1.cu" -o "$out/$1" "${libs[@]}"
}

if [ "$mode" = emu ] || [ "$mode" = all ]; then
    echo "== dev/cuda on the emulator (g++ ${extra[*]})"
    build_all emu_build emu
    for name in "${studies[@]}"; do
        [ -x "$out/$name.emu" ] && run_study "$out/$name.emu"
    done
fi

if [ "$mode" = nvcc ] || [ "$mode" = all ]; then
    nvcc=$(find_nvcc)
    if [ -z "$nvcc" ]; then
        echo "run.sh: no nvcc (looked at \$NVCC, PATH, ~/.cache/llmrs/cuda13-venv); .ci/run shows how to get one" >&2
        exit 1
    fi
    echo "== dev/cuda with nvcc ($("$nvcc" --version | tail -n 1)), sm_89 and sm_90"
    build_all nvcc_build nvcc
    if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        for name in "${studies[@]}"; do
            [ -x "$out/$name" ] && run_study "$out/$name"
        done
    else
        echo "-- no GPU (nvidia-smi sees none): compiled and linked only"
    fi
fi

[ $failed -eq 0 ] && echo "dev/cuda: all ok" || echo "dev/cuda: FAILED"
exit $failed
