"""PyTorch's fp32 CPU matmul speed at the GEMM shapes of issue 6's configs, for comparison with the matmul rows of
`cargo bench --bench cpu_layers` (the gemm crate through llmrs's matmul layer). Same thread count, run back to back.

Each row is one product as the layer computes it: forward out += inp . W^T, backward dinp += dout . W and
dW += dout^T . inp, timed with addmm_ (accumulating, like llmrs), median of 7 after no warm-up beyond the first.
Usage: PYTHON=~/.cache/llmrs/torch-venv/bin/python; $PYTHON dev/bench/torch_matmul.py [--threads 2]
"""
import argparse
import time

import torch


def bench(name, m, n, k, lhs_transposed, rhs_transposed):
    a = torch.full((k, m) if lhs_transposed else (m, k), 0.01)
    b = torch.full((n, k) if rhs_transposed else (k, n), 0.02)
    lhs = a.t() if lhs_transposed else a
    rhs = b.t() if rhs_transposed else b
    out = torch.zeros(m, n)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        out.addmm_(lhs, rhs)
        times.append(time.perf_counter() - start)
    t = sorted(times)[3]
    print(f"{name:34} {m:6}x{n:6}x{k:6} {t * 1e3:8.2f} ms {2 * m * n * k / t / 1e9:7.1f} GFLOP/s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    # (name, B*T, C, [OC of each layer's matmul])
    configs = [
        ("d12 B=4 T=64", 256, 768, [3 * 768, 768, 4 * 768, 50304]),
        ("d4 B=8 T=256", 2048, 256, [3 * 256, 256, 4 * 256, 50304]),
        ("bytes6 B=16 T=256", 4096, 384, [3 * 384, 384, 4 * 384, 256]),
    ]
    for config, bt, c, ocs in configs:
        print(config)
        shapes = [(c, oc) for oc in ocs] + [(4 * c, c)]
        for cin, oc in shapes:
            bench(f"  forward {bt}x{cin} -> {oc}", bt, oc, cin, False, True)
            bench(f"  backward dinp {bt}x{cin} -> {oc}", bt, cin, oc, False, False)
            bench(f"  backward dweight {bt}x{cin} -> {oc}", oc, cin, bt, True, False)


if __name__ == "__main__":
    main()
