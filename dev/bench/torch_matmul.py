"""PyTorch's fp32 CPU matmul speed at the GEMM shapes of issue 6's configs, for comparison with llmrs's matmul layer
at the same shapes (`cargo bench --bench gemm_shapes`, which prints the same per-step sum; `compare.sh --gemm` runs
the two alternately). Same thread count.

Each row is one product as the layer computes it: forward out += inp . W^T, backward dinp += dout . W and
dW += dout^T . inp, timed with addmm_ (accumulating, like llmrs), median of 7 calls after 2 warm-up calls. The
last lines per config sum them as a training step calls them (L x every layer shape + the LM head once), also as
JSON: {"framework": "pytorch", "config": "bytes6", "threads": 2, "step_ms": ...}
Usage: PYTHON=~/.cache/llmrs/torch-venv/bin/python; $PYTHON dev/bench/torch_matmul.py [--threads 2] [bytes6 ...]
"""
import argparse
import json
import time

import torch

WARMUP = 2
TIMED = 7


def bench(name, m, n, k, lhs_transposed, rhs_transposed):
    """Median seconds of one addmm_ of (m, k) x (k, n); prints a row."""
    a = torch.full((k, m) if lhs_transposed else (m, k), 0.01)
    b = torch.full((n, k) if rhs_transposed else (k, n), 0.02)
    lhs = a.t() if lhs_transposed else a
    rhs = b.t() if rhs_transposed else b
    out = torch.zeros(m, n)
    for _ in range(WARMUP):
        out.addmm_(lhs, rhs)
    times = []
    for _ in range(TIMED):
        start = time.perf_counter()
        out.addmm_(lhs, rhs)
        times.append(time.perf_counter() - start)
    t = sorted(times)[TIMED // 2]
    print(f"{name:34} {m:6}x{n:6}x{k:6} {t * 1e3:8.2f} ms {2 * m * n * k / t / 1e9:7.1f} GFLOP/s")
    return t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("configs", nargs="*", help="only the configs whose name contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    # (name, L, B*T, C, Vp): the LM head is C -> Vp (llm.c's padded vocabulary), once per step.
    configs = [
        ("d12", 12, 4 * 64, 768, 50304),
        ("d4", 4, 8 * 256, 256, 50304),
        ("bytes6", 6, 16 * 256, 384, 256),
    ]
    for config, layers, bt, c, vp in configs:
        if args.configs and not any(f in config for f in args.configs):
            continue
        print(f"{config} B*T={bt} C={c} L={layers}")
        step_s = 0.0
        for cin, oc, count in [(c, 3 * c, layers), (c, c, layers), (c, 4 * c, layers), (4 * c, c, layers), (c, vp, 1)]:
            forward = bench(f"  forward {bt}x{cin} -> {oc}", bt, oc, cin, False, True)
            dinp = bench(f"  backward dinp {bt}x{cin} -> {oc}", bt, cin, oc, False, False)
            dweight = bench(f"  backward dweight {bt}x{cin} -> {oc}", oc, cin, bt, True, False)
            step_s += count * (forward + dinp + dweight)
        print(f"  per training step: {step_s * 1e3:.1f} ms")
        print(json.dumps({"framework": "pytorch", "config": config, "threads": args.threads,
                          "step_ms": round(step_s * 1e3, 2)}))


if __name__ == "__main__":
    main()
