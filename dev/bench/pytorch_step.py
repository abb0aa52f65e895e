"""One GPT-2 training step in PyTorch eager on the CPU, fp32: the step llmrs's benches/train_step.rs measures.

The step: optimizer.zero_grad, forward (GPT2LMHeadModel, tied lm_head) with cross-entropy against the targets,
backward, clip_grad_norm_ to 1.0, AdamW step with weight decay on the weight matrices only (as llmrs). The model
is transformers' GPT2LMHeadModel built from a GPT2Config with random init, never pretrained weights, and every
dropout 0. Tokens are seeded random ids below V (50257, or 256 for bytes6); targets are the inputs shifted by one.

Prints one line per timed step, then one JSON line:
  {"framework": "pytorch", "config": "d12", "B": 4, "T": 64, "threads": 2, "median_ms": ..., ...}
gflop_per_step uses llmrs's formula (config.rs flops_per_token): 6 per parameter, counted as llm.c does with the
token table padded to Vp rows (50304 for GPT-2's vocabulary), plus 6 * L * C * T for attention, times B * T tokens.

Usage: python dev/bench/pytorch_step.py --preset d12 -b 4 -t 64 --warmup 2 --steps 8
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

# (L, C, NH, V) of llmrs's presets (src/config.rs PRESETS) with GPT-2's vocabulary, and "bytes6": d6's shape with
# a byte-level vocabulary of 256 (issue 6's third config; compare.sh trains llmrs on byte-tokenized text for it).
PRESETS = {
    "d4": (4, 256, 4, 50257),
    "d6": (6, 384, 6, 50257),
    "d12": (12, 768, 12, 50257),
    "bytes6": (6, 384, 6, 256),
}


def padded_vocab(v):
    """Vp: llm.c's token table padded to a multiple of 128 rows, only used to count FLOPs as llmrs does."""
    return (v + 127) // 128 * 128


MAX_SEQ_LEN = 1024  # maxT
# The step costs the same for any values, except that weight decay must be nonzero: torch skips the decay pass
# at 0, llmrs always runs it (compare.sh passes -c 0.1 to the trainer).
LR = 1e-4
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0


def build_model(preset):
    n_layer, n_embd, n_head, vocab_size = PRESETS[preset]
    config = GPT2Config(
        vocab_size=vocab_size,
        # GPT-2's end-of-text id (50256) is outside a byte vocabulary: use the last token, as llmrs's bytes tokenizer.
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        n_positions=MAX_SEQ_LEN,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def gflop_per_step(preset, b, t):
    """llmrs's GPT2Config::flops_per_token(T) * B * T / 1e9, with llm.c's parameter count."""
    L, C, _, V = PRESETS[preset]
    params = (padded_vocab(V) + MAX_SEQ_LEN) * C + L * (12 * C * C + 13 * C) + 2 * C
    return (6 * params + 6 * L * C * t) * b * t / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="d12", choices=sorted(PRESETS))
    parser.add_argument("-b", "--batch-size", type=int, default=4, help="B: sequences per batch")
    parser.add_argument("-t", "--seq-len", type=int, default=64, help="T: tokens per sequence")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocations, AdamW state)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    b, t = args.batch_size, args.seq_len

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(args.preset).train()
    # Weight decay on the 2-D tensors (wte, wpe and the four weight matrices per layer), as llmrs's
    # ParamTensors::is_matrix; biases and LayerNorm parameters get none. lm_head.weight is wte (tied).
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
    )
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, PRESETS[args.preset][3], (b * t + 1,), generator=generator)
    inputs = tokens[:-1].view(b, t)  # (B, T)
    targets = tokens[1:].view(b, t)  # (B, T)

    gflop = gflop_per_step(args.preset, b, t)
    num_params = sum(p.numel() for p in params)
    print(
        f"pytorch {torch.__version__} | {args.preset} B={b} T={t} | {num_params / 1e6:.2f}M parameters | "
        f"{gflop:.2f} GFLOP per step | {torch.get_num_threads()} threads | "
        f"attention: {model.config._attn_implementation}",
        flush=True,
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs).logits  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        return loss.item(), norm.item()

    times_ms = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss, norm = step()
        ms = (time.perf_counter() - start) * 1e3
        timed = i >= args.warmup
        if timed:
            times_ms.append(ms)
        print(
            f"step {i + 1:>3}/{args.warmup + args.steps}{'' if timed else ' (warm-up)'} | loss {loss:.4f} | "
            f"norm {norm:.3f} | {ms:.1f} ms | {b * t / ms * 1e3:.0f} tok/s",
            flush=True,
        )

    median_ms = statistics.median(times_ms)
    print(
        json.dumps(
            {
                "framework": "pytorch",
                "config": args.preset,
                "B": b,
                "T": t,
                "threads": torch.get_num_threads(),
                "steps": len(times_ms),
                "median_ms": round(median_ms, 3),
                "min_ms": round(min(times_ms), 3),
                "tokens_per_sec": round(b * t / median_ms * 1e3, 1),
                "gflop_per_step": round(gflop, 4),
                "gflops": round(gflop / median_ms * 1e3, 2),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
