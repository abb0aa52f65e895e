#!/usr/bin/env bash
# Times one GPT-2 training step of llmrs (target/release/train_gpt2) against PyTorch eager (pytorch_step.py) on
# the CPU, fp32, same config and thread count, in alternating rounds: shared machines drift 2-7x between quiet and
# busy minutes, so only ratios taken within a round, side by side, mean anything. Odd rounds run llmrs first,
# even rounds PyTorch first, so a steady drift does not favour either.
#
# Each run takes WARMUP untimed steps (allocations, AdamW state) and then STEPS timed ones; a run's number is the
# median of its timed steps. The table gives, per config, the median over rounds of ms/step and of the per-round
# ratio llmrs/pytorch (< 1: llmrs is faster), and tokens/s and GFLOP/s derived from the median ms/step (GFLOP
# per step is llmrs's flops_per_token(T) * B * T, which pytorch_step.py computes the same way). The "best"
# columns are the fastest single step of all rounds: on a busy machine, the closest thing to a quiet-machine time.
#
# Usage: bash dev/bench/compare.sh [--rounds 3] [--configs "d4 d12"] [-b 4] [-t 64] [--threads 2]
#                                  [--warmup 2] [--steps 8]
#        bash dev/bench/compare.sh --issue6    # issue 6's three configs: d12:4:64 d4:8:256 bytes6:16:256
#        bash dev/bench/compare.sh --gemm [--configs "bytes6"] [--rounds 3]
#            only the matmuls: llmrs's matmul layer (`cargo bench --bench gemm_shapes`) against PyTorch's addmm_
#            (dev/bench/torch_matmul.py) at issue 6's shapes (d12, d4, bytes6 with their B and T), alternating, as
#            ms per training step (L x every layer's products + the LM head's). Says which part of a gap in the
#            step is the GEMM library.
# A config is a preset (d4, d6, d12) or bytes6 (d6's shape with a 256-token byte vocabulary, trained by llmrs on
# byte-tokenized text made here with `llmrs prepare --tokenizer bytes`), optionally with its own B and T as
# NAME:B:T (else -b and -t).
# Environment: PYTHON (default python3; it needs torch and transformers, e.g. a venv's bin/python).
set -euo pipefail

ROUNDS=3
CONFIGS="d4 d12"
B=4
T=64
THREADS=2
WARMUP=2
STEPS=8
PYTHON=${PYTHON:-python3}
GEMM=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        -b) B=$2; shift 2 ;;
        -t) T=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --issue6) CONFIGS="d12:4:64 d4:8:256 bytes6:16:256"; shift ;;
        --gemm) GEMM=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/../.."
# The machine in one line. Some VMs name their CPU by brand only ("AMD EPYC"), and the ratios differ a lot between
# CPUs (on AMD ones PyTorch's MKL takes its generic code path, as MKL_VERBOSE=1 shows), so the CPU family and
# model numbers go in too.
machine() {
    local name family model
    name=$(lscpu | sed -n 's/^Model name: *//p')
    family=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    model=$(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    echo "== $(date -u '+%Y-%m-%d %H:%M UTC') | $(nproc) cores | $name (family $family, model $model)"
}
HERE=dev/bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.jsonl

if (( GEMM )); then
    [[ $CONFIGS == "d4 d12" ]] && CONFIGS="d12 d4 bytes6"
    # The shapes are issue 6's, fixed in gemm_shapes.rs and torch_matmul.py: a config may name its B and T only
    # if they are those.
    for spec in $CONFIGS; do
        [[ $spec =~ ^(d12(:4:64)?|d4(:8:256)?|bytes6(:16:256)?)$ ]] || {
            echo "compare.sh --gemm: config '$spec' is not one of d12[:4:64], d4[:8:256], bytes6[:16:256]" >&2
            exit 2
        }
    done
    NAMES=$(for spec in $CONFIGS; do echo "${spec%%:*}"; done)
    echo "== building the gemm_shapes bench"
    cargo bench --bench gemm_shapes --no-run 2>&1 | tail -1
    machine
    echo "== matmuls only, threads=$THREADS | $ROUNDS rounds | configs: $(echo $NAMES)"
    llmrs() { RAYON_NUM_THREADS=$THREADS cargo bench -q --bench gemm_shapes -- $NAMES 2>/dev/null; }
    torch() { "$PYTHON" "$HERE/torch_matmul.py" --threads "$THREADS" $NAMES; }
    for round in $(seq 1 "$ROUNDS"); do
        echo "-- round $round/$ROUNDS | load: $(cut -d' ' -f1-3 /proc/loadavg)"
        if (( round % 2 == 1 )); then llmrs >"$WORK/l.txt"; torch >"$WORK/p.txt"; else torch >"$WORK/p.txt"; llmrs >"$WORK/l.txt"; fi
        cat "$WORK/l.txt" "$WORK/p.txt" | grep '^{' | sed "s/}\$/, \"round\": $round}/" >>"$RESULTS"
        "$PYTHON" - "$RESULTS" "$round" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if json.loads(line)["round"] == int(sys.argv[2])]
for config in dict.fromkeys(r["config"] for r in rows):
    ms = {r["framework"]: r["step_ms"] for r in rows if r["config"] == config}
    print(f"   {config:<7} llmrs {ms['llmrs']:8.1f} ms | pytorch {ms['pytorch']:8.1f} ms | ratio {ms['llmrs'] / ms['pytorch']:.2f}")
PY
    done
    echo
    "$PYTHON" - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'config':<7} {'rounds':>6} {'llmrs ms':>9} {'pytorch ms':>10} {'ratio':>6} | per-round ratios")
for config in dict.fromkeys(r["config"] for r in rows):
    by = {fw: {r["round"]: r["step_ms"] for r in rows if r["config"] == config and r["framework"] == fw}
          for fw in ("llmrs", "pytorch")}
    rounds = sorted(set(by["llmrs"]) & set(by["pytorch"]))
    ratios = [by["llmrs"][i] / by["pytorch"][i] for i in rounds]
    print(f"{config:<7} {len(rounds):>6} {statistics.median(by['llmrs'][i] for i in rounds):>9.1f} "
          f"{statistics.median(by['pytorch'][i] for i in rounds):>10.1f} {statistics.median(ratios):>6.2f} | "
          + " ".join(f"{r:.2f}" for r in ratios))
print("ms: a training step's matmuls (forward, dinp, dweight of every layer and the LM head), median over rounds;")
print("ratio: median over rounds of llmrs / pytorch in the same round (< 1: llmrs's products are faster).")
PY
    exit 0
fi

echo "== building the release trainer"
cargo build --release --bin train_gpt2 --bin llmrs 2>&1 | tail -1
# Byte-level shards for bytes6: the repository's own text, a few hundred KB, tokenized one byte per token.
if [[ " $CONFIGS " == *" bytes6"* ]]; then
    find . -path ./target -prune -o \( -name '*.md' -o -name '*.rs' -o -name '*.cu' \) -print | sort \
        | xargs cat >"$WORK/bytes.txt"
    target/release/llmrs prepare "$WORK/bytes.txt" --tokenizer bytes -o "$WORK/bytes" >/dev/null
fi
machine
echo "== B=$B T=$T (unless a config names its own) threads=$THREADS | $WARMUP warm-up + $STEPS timed steps per run | $ROUNDS rounds"

# llmrs: the trainer on its built-in data (no validation, no samples, constant lr, weight decay 0.1 as pytorch),
# per-step ms from metrics.jsonl. Appends one JSON line to $RESULTS.
run_llmrs() {
    local config=$1 round=$2 out=$WORK/llmrs_${config}_$round
    local model=(-e "$config")
    if [[ $config == bytes6 ]]; then
        model=(-e d6 --vocab-size 256 --train-data "$WORK/bytes/bytes_train_*.bin")
    fi
    target/release/train_gpt2 "${model[@]}" -b "$B" -t "$T" -x $((WARMUP + STEPS)) -u 0 -c 0.1 -v 0 -s 0 \
        --threads "$THREADS" --out "$out" >"$out.log"
    "$PYTHON" - "$out" "$config" "$round" "$WARMUP" "$B" "$T" >>"$RESULTS" <<'PY'
import json, re, statistics, sys
out, config, round_, warmup, b, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
steps = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
ms = [s["ms"] for s in steps if "ms" in s][warmup:]
gflop = float(re.search(r"([0-9.]+) GFLOP per step", open(f"{out}.log").read()).group(1))
print(json.dumps({"framework": "llmrs", "config": config, "round": round_, "median_ms": statistics.median(ms),
                  "min_ms": min(ms), "tokens": b * t, "gflop_per_step": gflop}))
PY
    rm -rf "$out"  # model.bin: 0.5 GB for d12
}

run_pytorch() {
    local config=$1 round=$2 log=$WORK/pytorch_${config}_$round.log
    "$PYTHON" "$HERE/pytorch_step.py" --preset "$config" -b "$B" -t "$T" --threads "$THREADS" \
        --warmup "$WARMUP" --steps "$STEPS" >"$log"
    tail -1 "$log" | "$PYTHON" -c "
import json, sys
r = json.load(sys.stdin)
print(json.dumps({'framework': 'pytorch', 'config': r['config'], 'round': $round, 'median_ms': r['median_ms'],
                  'min_ms': r['min_ms'], 'tokens': r['B'] * r['T'], 'gflop_per_step': r['gflop_per_step']}))
" >>"$RESULTS"
}

B_DEFAULT=$B T_DEFAULT=$T
for round in $(seq 1 "$ROUNDS"); do
    for spec in $CONFIGS; do
        IFS=: read -r config B T <<<"$spec"
        B=${B:-$B_DEFAULT} T=${T:-$T_DEFAULT}
        echo "-- round $round/$ROUNDS $config B=$B T=$T | load: $(cut -d' ' -f1-3 /proc/loadavg)"
        if (( round % 2 == 1 )); then
            run_llmrs "$config" "$round"; run_pytorch "$config" "$round"
        else
            run_pytorch "$config" "$round"; run_llmrs "$config" "$round"
        fi
        tail -2 "$RESULTS" | "$PYTHON" -c "
import json, sys
r = {x['framework']: x for x in map(json.loads, sys.stdin)}
print(f\"   llmrs {r['llmrs']['median_ms']:9.1f} ms | pytorch {r['pytorch']['median_ms']:9.1f} ms | \"
      f\"ratio {r['llmrs']['median_ms'] / r['pytorch']['median_ms']:.2f}\")"
    done
done

echo
"$PYTHON" - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
configs = list(dict.fromkeys(r["config"] for r in rows))
header = (f"{'config':<7} {'rounds':>6} {'llmrs ms':>9} {'pytorch ms':>10} {'ratio':>6} {'llmrs tok/s':>11} "
          f"{'pt tok/s':>8} {'llmrs GFLOP/s':>13} {'pt GFLOP/s':>10} | {'best llmrs ms':>13} {'best pt ms':>10} "
          f"{'ratio':>6}")
print(header)
print("-" * len(header))
for config in configs:
    by = {fw: {r["round"]: r for r in rows if r["config"] == config and r["framework"] == fw}
          for fw in ("llmrs", "pytorch")}
    rounds = sorted(set(by["llmrs"]) & set(by["pytorch"]))
    ratio = statistics.median(by["llmrs"][i]["median_ms"] / by["pytorch"][i]["median_ms"] for i in rounds)
    cols = []
    for fw in ("llmrs", "pytorch"):
        ms = statistics.median(by[fw][i]["median_ms"] for i in rounds)
        best = min(by[fw][i]["min_ms"] for i in rounds)
        first = by[fw][rounds[0]]
        cols.append((ms, first["tokens"] / ms * 1e3, first["gflop_per_step"] / ms * 1e3, best))
    (lm, lt, lg, lb), (pm, pt, pg, pb) = cols
    print(f"{config:<7} {len(rounds):>6} {lm:>9.1f} {pm:>10.1f} {ratio:>6.2f} {lt:>11.0f} {pt:>8.0f} "
          f"{lg:>13.1f} {pg:>10.1f} | {lb:>13.1f} {pb:>10.1f} {lb / pb:>6.2f}")
print("ms: median over rounds of each run's median step; ratio: median over rounds of llmrs ms / pytorch ms in")
print("the same round (< 1: llmrs is faster); best: the fastest single step of all rounds.")
PY
