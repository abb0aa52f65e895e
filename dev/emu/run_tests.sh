#!/usr/bin/env bash
# run_tests.sh [CXX] [extra flags...]: build every dev/emu/tests/*.cu against the emulator and run it.
#   dev/emu/run_tests.sh                        # g++, plain
#   dev/emu/run_tests.sh g++ -fsanitize=address # the sanitizer mode
#   dev/emu/run_tests.sh clang++
# One line per test, then "N passed, M failed"; exits non-zero if any test failed (a build failure counts).
set -u
here=$(cd "$(dirname "$0")" && pwd)
CXX=${1:-${CXX:-g++}}
[ $# -gt 0 ] && shift
extra=("$@")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Build in parallel (the header makes each build ~1 s), then run one by one so the timings mean something.
build() {
    local src=$1 name
    name=$(basename "$src" .cu)
    if ! "$CXX" -std=c++17 -O1 -g -x c++ -I "$here/include" -I "$here" -I "$here/tests" -DLLMRS_EMU "${extra[@]}" \
        "$src" -o "$out/$name" -lpthread >"$out/$name.build.log" 2>&1; then
        touch "$out/$name.build-failed"
    fi
}
export -f build
export CXX here out
jobs=$(nproc 2>/dev/null || echo 2)
for src in "$here"/tests/*.cu; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.05; done
    build "$src" &
done
wait

passed=0 failed=0
for src in "$here"/tests/*.cu; do
    name=$(basename "$src" .cu)
    if [ -e "$out/$name.build-failed" ]; then
        printf 'FAIL %-28s (build)\n' "$name"
        sed 's/^/    /' "$out/$name.build.log" | head -20
        failed=$((failed + 1))
        continue
    fi
    start=$(date +%s.%N)
    # each test starts from the default environment, whatever the caller has set
    env -u EMU_THREADS -u EMU_SCHED -u EMU_POISON timeout 60 "$out/$name" >"$out/$name.log" 2>&1
    rc=$?
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    if [ $rc -eq 0 ]; then
        printf 'ok   %-28s %6.2f s\n' "$name" "$secs"
        passed=$((passed + 1))
    else
        printf 'FAIL %-28s %6.2f s (exit %d)\n' "$name" "$secs" "$rc"
        sed 's/^/    /' "$out/$name.log" | tail -30
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
