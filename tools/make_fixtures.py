#!/usr/bin/env python3
"""Write small PyTorch reference fixtures for llmrs's tests.

Run (from the repository root):

    python tools/make_fixtures.py [--out tests/fixtures]    (a python with torch and transformers)

For each fixture NAME in FIXTURES below it writes, into --out:

  NAME_model.bin        llm.c checkpoint, version 3 (fp32): 256 int32 header
                        [20240326, 3, maxT, V, L, NH, C, Vp, 0...], then the 16 parameter tensors in llm.c's order
                        (wte (Vp, C) with zero rows V..Vp, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w,
                        ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb), weights stored (out, in).
  NAME_train.bin        llm.c token shard: 256 int32 header [20240520, 1, ntok, 0...], then ntok uint16 tokens.
  NAME_val.bin          same format; the validation tokens.
  NAME_debug_state.bin  llm.c debug state: 256 int32 header [20240327, 2, B, T, 0...], then x (B*T int32),
                        y (B*T int32), logits (B*T*V f32, unpadded), loss (1 f32), then the gradients of all
                        parameters (f32, same order / shapes / layout as NAME_model.bin), all for the initial model
                        on the first training batch.
  NAME_losses.json      the model config, the training hyper-parameters, and the expected trajectory of a short
                        run: train loss, lr, grad norm (before clipping) per step, and [step, val loss] pairs.

Why: the Rust trainer is checked against these to float32 precision. The reference is Hugging Face's
GPT2LMHeadModel, evaluated in float64 (eager attention, no dropout, tanh GELU, tied lm_head), starting from
parameters that are exactly float32-representable (the values in NAME_model.bin), so the only difference
between this reference and the Rust engine is the Rust engine's own float32 rounding.

The model is GPT-2's default random initialisation, then perturbed (every bias and every LayerNorm weight/bias
gets N(0, 0.1) noise) so that a bug that mixes up, drops or transposes a bias or a LayerNorm parameter cannot
hide behind zeros and ones. No pretrained weights are used or downloaded.

The training semantics reproduced here (data loader, schedule, clipping, AdamW) are spelled out in `train()`
and in tools/README.md. Everything is seeded; a run takes a few seconds on a CPU. The script also verifies what
it wrote (see `verify()`): it reads every file back, rebuilds a fresh torch model from NAME_model.bin, checks
its logits, re-derives logits and gradients with an independent hand-written GPT-2 forward on the llm.c layout,
and re-runs the training with torch.optim.AdamW to check the hand-written optimizer.
"""

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

# ----------------------------------------------------------------------------------------------------------------
# What to write

# name -> (L layers, NH heads, C channels, maxT, V vocab, B batch, T sequence length)
FIXTURES = {
    "small": dict(L=2, NH=4, C=64, maxT=32, V=512, B=4, T=16),
    # T not a power of two, V not a multiple of 64, C/NH = 16 with 3 heads
    "odd": dict(L=3, NH=3, C=48, maxT=24, V=389, B=3, T=13),
}

# Training hyper-parameters, shared by every fixture. grad_clip is chosen per fixture (see choose_grad_clip).
TRAIN = dict(
    steps=12,
    lr=3e-3,
    warmup=3,
    lr_final_frac=0.1,
    beta1=0.9,
    beta2=0.95,
    eps=1e-8,
    weight_decay=0.1,
    val_every=5,
    val_batches=2,
)

SEED = 1337
PERTURB_STD = 0.1

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
SHARD_MAGIC, SHARD_VERSION = 20240520, 1
DEBUG_MAGIC, DEBUG_VERSION = 20240327, 2
HEADER_INTS = 256

PARAM_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]

torch.set_default_dtype(torch.float64)


def padded_vocab(V):
    """V rounded up to a multiple of 128, as llm.c pads it."""
    return (V + 127) // 128 * 128


# ----------------------------------------------------------------------------------------------------------------
# Model

def build_model(cfg, seed):
    """A float64 GPT2LMHeadModel with GPT-2's default init, perturbed, with float32-representable parameters."""
    config = GPT2Config(
        vocab_size=cfg["V"],            # unpadded; llm.c's padding rows are added when writing
        n_positions=cfg["maxT"],
        n_embd=cfg["C"],
        n_layer=cfg["L"],
        n_head=cfg["NH"],
        activation_function="gelu_new",  # tanh approximation, as llm.c
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        use_cache=False,
        bos_token_id=cfg["V"] - 1,  # unused; only to keep them inside the (small) vocabulary
        eos_token_id=cfg["V"] - 1,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    model = model.double()
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head must be tied to wte"

    # Perturb: N(0, PERTURB_STD) on every bias and every LayerNorm weight/bias (LN weight = 1 + noise).
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # exactly the biases and the LayerNorm weights/biases
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * PERTURB_STD)
        # Round everything to float32 so the Rust side (which loads f32) starts from the identical model.
        for p in model.parameters():
            p.copy_(p.float().double())
    model.eval()  # no dropout anyway; eval() just makes that explicit
    return model


def llmc_tensors(model, cfg, grads=False):
    """The 16 llm.c tensors (float64 numpy, llm.c shapes) from the model's parameters, or from their .grad.

    Hugging Face's Conv1D stores weight as (in, out); llm.c stores (out, in), so those are transposed.
    """
    L, C, V, maxT = cfg["L"], cfg["C"], cfg["V"], cfg["maxT"]
    Vp = padded_vocab(V)

    def get(p):
        t = p.grad if grads else p
        return t.detach().to(torch.float64).cpu().numpy()

    tr, h = model.transformer, model.transformer.h
    stack = lambda f: np.stack([f(blk) for blk in h])  # noqa: E731  (stack a per-layer tensor over the L layers)

    wte = np.zeros((Vp, C))
    wte[:V] = get(tr.wte.weight)                                       # (V, C) -> (Vp, C), rows V.. zero
    out = dict(
        wte=wte,                                                       # (Vp, C)
        wpe=get(tr.wpe.weight),                                        # (maxT, C)
        ln1w=stack(lambda b: get(b.ln_1.weight)),                      # (L, C)
        ln1b=stack(lambda b: get(b.ln_1.bias)),                        # (L, C)
        qkvw=stack(lambda b: get(b.attn.c_attn.weight).T),             # (L, 3C, C)  from (C, 3C)
        qkvb=stack(lambda b: get(b.attn.c_attn.bias)),                 # (L, 3C)
        attprojw=stack(lambda b: get(b.attn.c_proj.weight).T),         # (L, C, C)   from (C, C) (in, out)
        attprojb=stack(lambda b: get(b.attn.c_proj.bias)),             # (L, C)
        ln2w=stack(lambda b: get(b.ln_2.weight)),                      # (L, C)
        ln2b=stack(lambda b: get(b.ln_2.bias)),                        # (L, C)
        fcw=stack(lambda b: get(b.mlp.c_fc.weight).T),                 # (L, 4C, C)  from (C, 4C)
        fcb=stack(lambda b: get(b.mlp.c_fc.bias)),                     # (L, 4C)
        fcprojw=stack(lambda b: get(b.mlp.c_proj.weight).T),           # (L, C, 4C)  from (4C, C)
        fcprojb=stack(lambda b: get(b.mlp.c_proj.bias)),               # (L, C)
        lnfw=get(tr.ln_f.weight),                                      # (C,)
        lnfb=get(tr.ln_f.bias),                                        # (C,)
    )
    expect = dict(wte=(Vp, C), wpe=(maxT, C), ln1w=(L, C), ln1b=(L, C), qkvw=(L, 3 * C, C), qkvb=(L, 3 * C),
                  attprojw=(L, C, C), attprojb=(L, C), ln2w=(L, C), ln2b=(L, C), fcw=(L, 4 * C, C),
                  fcb=(L, 4 * C), fcprojw=(L, C, 4 * C), fcprojb=(L, C), lnfw=(C,), lnfb=(C,))
    for k in PARAM_NAMES:
        assert out[k].shape == expect[k], (k, out[k].shape, expect[k])
    return [out[k] for k in PARAM_NAMES]


def load_llmc_into(model, tensors, cfg):
    """Inverse of llmc_tensors: set a GPT2LMHeadModel's parameters from the 16 llm.c tensors."""
    V = cfg["V"]
    t = dict(zip(PARAM_NAMES, [torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in tensors]))
    tr = model.transformer
    with torch.no_grad():
        tr.wte.weight.copy_(t["wte"][:V])
        tr.wpe.weight.copy_(t["wpe"])
        for l, b in enumerate(tr.h):
            b.ln_1.weight.copy_(t["ln1w"][l])
            b.ln_1.bias.copy_(t["ln1b"][l])
            b.attn.c_attn.weight.copy_(t["qkvw"][l].T)
            b.attn.c_attn.bias.copy_(t["qkvb"][l])
            b.attn.c_proj.weight.copy_(t["attprojw"][l].T)
            b.attn.c_proj.bias.copy_(t["attprojb"][l])
            b.ln_2.weight.copy_(t["ln2w"][l])
            b.ln_2.bias.copy_(t["ln2b"][l])
            b.mlp.c_fc.weight.copy_(t["fcw"][l].T)
            b.mlp.c_fc.bias.copy_(t["fcb"][l])
            b.mlp.c_proj.weight.copy_(t["fcprojw"][l].T)
            b.mlp.c_proj.bias.copy_(t["fcprojb"][l])
        tr.ln_f.weight.copy_(t["lnfw"])
        tr.ln_f.bias.copy_(t["lnfb"])


def forward_loss(model, x, y, V):
    """logits (B, T, V) and mean cross-entropy over the B*T positions."""
    logits = model(input_ids=x, use_cache=False).logits     # (B, T, V)
    loss = F.cross_entropy(logits[..., :V].reshape(-1, V), y.reshape(-1))
    return logits, loss


# ----------------------------------------------------------------------------------------------------------------
# Data

def make_tokens(V, n, seed):
    """n tokens of a random Markov chain: 64 "common" tokens (random ids in [0, V)), each with 3 likely
    successors among the common tokens (Dirichlet weights); with probability 0.1 the next token is instead
    uniform over the whole vocabulary, so every id in [0, V) can occur (including the highest ones).
    Learnable within a few steps (first the unigram skew, then the bigrams), train and val alike, but not
    trivial."""
    rng = np.random.default_rng(seed)
    common = rng.choice(V, size=64, replace=False)              # (64,) token ids
    succ = rng.choice(common, size=(V, 3))                      # (V, 3) successor ids of every token
    probs = rng.dirichlet(np.ones(3), size=V)                   # (V, 3) their weights
    toks = np.empty(n, dtype=np.int64)
    toks[0] = rng.choice(common)
    for i in range(1, n):
        if rng.random() < 0.1:
            toks[i] = rng.integers(0, V)
        else:
            toks[i] = succ[toks[i - 1], rng.choice(3, p=probs[toks[i - 1]])]
    return toks


class Loader:
    """llm.c's loader without shuffling: batch = tokens[pos : pos + B*T + 1], inputs the first B*T, targets the
    last B*T; then pos += B*T, and back to 0 if the next batch would not fit."""

    def __init__(self, tokens, B, T):
        self.tokens, self.B, self.T, self.pos = tokens, B, T, 0
        assert len(tokens) >= B * T + 1

    def next_batch(self):
        B, T = self.B, self.T
        buf = torch.from_numpy(self.tokens[self.pos:self.pos + B * T + 1].astype(np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)          # (B, T) each, row-major
        self.pos += B * T
        if self.pos + B * T + 1 > len(self.tokens):
            self.pos = 0
        return x, y


# ----------------------------------------------------------------------------------------------------------------
# Training

def lr_at(s, hp):
    """Linear warmup over `warmup` steps, then cosine decay down to lr * lr_final_frac at s = steps."""
    lr, warmup, steps = hp["lr"], hp["warmup"], hp["steps"]
    if s < warmup:
        return lr * (s + 1) / warmup
    decay_ratio = (s - warmup) / (steps - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    lr_min = lr * hp["lr_final_frac"]
    return lr_min + coeff * (lr - lr_min)


def val_loss(model, val_tokens, cfg, hp):
    """Mean loss over the first val_batches batches of a fresh validation loader."""
    loader = Loader(val_tokens, cfg["B"], cfg["T"])
    with torch.no_grad():
        losses = [forward_loss(model, *loader.next_batch(), cfg["V"])[1].item() for _ in range(hp["val_batches"])]
    return sum(losses) / len(losses)


def train(model, train_tokens, val_tokens, cfg, hp, grad_clip, use_torch_adamw=False):
    """Run hp['steps'] steps on `model` (in place). Returns the trajectory dict written to NAME_losses.json.

    Per step s: val loss every val_every steps (model as before this step's update); forward + backward on the
    next train batch; grad_norm = ||all grads||_2 (wte once: it is tied); if grad_clip > 0 and grad_norm >
    grad_clip, scale the grads by grad_clip / grad_norm; AdamW with lr(s), weight decay only on 2-D weights.
    After the last step, one more val loss at s = steps.
    """
    params = list(model.parameters())                        # tied wte/lm_head appears once
    decay = [p.dim() >= 2 for p in params]                   # wte, wpe, c_attn/c_proj/c_fc/mlp.c_proj weights
    b1, b2, eps, wd = hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"]
    if use_torch_adamw:
        opt = torch.optim.AdamW(
            [{"params": [p for p, d in zip(params, decay) if d], "weight_decay": wd},
             {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0}],
            lr=hp["lr"], betas=(b1, b2), eps=eps, foreach=False, fused=False)
    else:
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]

    loader = Loader(train_tokens, cfg["B"], cfg["T"])
    out = dict(train_losses=[], lrs=[], grad_norms=[], val_losses=[], clipped=[])
    for s in range(hp["steps"]):
        if s % hp["val_every"] == 0:
            out["val_losses"].append([s, val_loss(model, val_tokens, cfg, hp)])
        x, y = loader.next_batch()
        for p in params:
            p.grad = None
        _, loss = forward_loss(model, x, y, cfg["V"])
        loss.backward()
        grad_norm = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params))
        clipped = grad_clip > 0 and grad_norm > grad_clip
        if clipped:
            scale = grad_clip / grad_norm  # exactly this; NOT clip_grad_norm_ (which adds 1e-6)
            for p in params:
                p.grad.mul_(scale)
        lr = lr_at(s, hp)
        t = s + 1
        if use_torch_adamw:
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
        else:
            with torch.no_grad():
                for i, p in enumerate(params):
                    g = p.grad
                    m[i].mul_(b1).add_((1 - b1) * g)
                    v[i].mul_(b2).add_((1 - b2) * g * g)
                    mhat = m[i] / (1 - b1 ** t)
                    vhat = v[i] / (1 - b2 ** t)
                    p.sub_(lr * (mhat / (vhat.sqrt() + eps) + (wd if decay[i] else 0.0) * p))
        out["train_losses"].append(loss.item())
        out["lrs"].append(lr)
        out["grad_norms"].append(grad_norm)
        out["clipped"].append(bool(clipped))
    out["val_losses"].append([hp["steps"], val_loss(model, val_tokens, cfg, hp)])
    return out


def choose_grad_clip(make_model, train_tokens, val_tokens, cfg, hp):
    """A clip threshold that triggers on some steps but not all, and is not too close to any step's norm.

    Runs once without clipping; the candidates are the midpoints between consecutive sorted norms (3 significant
    digits), widest gap first, keeping only those that would clip between a quarter and three quarters of the
    steps. Clipping changes the trajectory, so each candidate is re-run and accepted if 0 < #clipped < steps and
    every step's norm is more than 1% away from it (so float32 noise cannot flip a clipping decision; flipping
    near the threshold would be harmless anyway, since the scale there is ~1).
    """
    norms = train(make_model(), train_tokens, val_tokens, cfg, hp, grad_clip=0.0)["grad_norms"]
    print(f"  grad norms without clipping: {' '.join(f'{n:.4f}' for n in norms)}")
    srt, n = sorted(norms), len(norms)
    gaps = [(srt[i + 1] - srt[i], float(f"{(srt[i] + srt[i + 1]) / 2:.3g}"))
            for i in range(n - 1) if n // 4 <= n - 1 - i <= 3 * n // 4]  # n-1-i norms lie above the midpoint
    for _, clip in sorted(gaps, reverse=True):
        run = train(make_model(), train_tokens, val_tokens, cfg, hp, grad_clip=clip)
        n_clip = sum(run["clipped"])
        margin = min(abs(g / clip - 1) for g in run["grad_norms"])
        print(f"  try grad_clip={clip}: clipped {n_clip}/{hp['steps']} steps, closest norm {margin:.2%} away")
        if 0 < n_clip < hp["steps"] and margin > 0.01:
            return clip
    raise RuntimeError("no grad_clip found that clips on some but not all steps")


# ----------------------------------------------------------------------------------------------------------------
# Writing and reading the files

def header(*ints):
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[:len(ints)] = ints
    return h.tobytes()


def write_model(path, tensors, cfg):
    with open(path, "wb") as f:
        f.write(header(MODEL_MAGIC, MODEL_VERSION, cfg["maxT"], cfg["V"], cfg["L"], cfg["NH"], cfg["C"],
                       padded_vocab(cfg["V"])))
        for t in tensors:
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())


def write_shard(path, tokens):
    assert tokens.max() < 2 ** 16 and tokens.min() >= 0
    with open(path, "wb") as f:
        f.write(header(SHARD_MAGIC, SHARD_VERSION, len(tokens)))
        f.write(tokens.astype("<u2").tobytes())


def write_debug_state(path, x, y, logits, loss, grads, cfg):
    B, T = cfg["B"], cfg["T"]
    with open(path, "wb") as f:
        f.write(header(DEBUG_MAGIC, DEBUG_VERSION, B, T))
        f.write(x.numpy().astype("<i4").tobytes())                                   # (B, T)
        f.write(y.numpy().astype("<i4").tobytes())                                   # (B, T)
        f.write(logits.detach()[..., :cfg["V"]].numpy().astype("<f4").tobytes())    # (B, T, V)
        f.write(np.array([loss], dtype="<f4").tobytes())                             # (1,)
        for g in grads:                                                              # 16 tensors, model layout
            f.write(np.ascontiguousarray(g, dtype="<f4").tobytes())


def param_sizes(cfg):
    L, C, maxT, Vp = cfg["L"], cfg["C"], cfg["maxT"], padded_vocab(cfg["V"])
    return dict(wte=(Vp, C), wpe=(maxT, C), ln1w=(L, C), ln1b=(L, C), qkvw=(L, 3 * C, C), qkvb=(L, 3 * C),
                attprojw=(L, C, C), attprojb=(L, C), ln2w=(L, C), ln2b=(L, C), fcw=(L, 4 * C, C),
                fcb=(L, 4 * C), fcprojw=(L, C, 4 * C), fcprojb=(L, C), lnfw=(C,), lnfb=(C,))


def read_tensors(raw, offset, cfg):
    """The 16 f32 tensors starting at byte `offset` of `raw`; returns (tensors, end offset)."""
    out = []
    for name in PARAM_NAMES:
        shape = param_sizes(cfg)[name]
        n = int(np.prod(shape))
        out.append(np.frombuffer(raw, dtype="<f4", count=n, offset=offset).reshape(shape).astype(np.float64))
        offset += 4 * n
    return out, offset


# ----------------------------------------------------------------------------------------------------------------
# Verification

def reference_forward(tensors, x, cfg):
    """An independent float64 GPT-2 forward written directly on the llm.c layout (weights (out, in)).
    tensors: the 16 llm.c tensors as torch tensors; x: (B, T) int64. Returns logits (B, T, V)."""
    p = dict(zip(PARAM_NAMES, tensors))
    L, NH, C, V = cfg["L"], cfg["NH"], cfg["C"], cfg["V"]
    B, T = x.shape
    hs = C // NH

    def layernorm(h, w, b):
        mean = h.mean(-1, keepdim=True)
        var = ((h - mean) ** 2).mean(-1, keepdim=True)                 # biased variance, as llm.c
        return (h - mean) / torch.sqrt(var + 1e-5) * w + b

    def gelu(u):
        return 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))

    h = p["wte"][x] + p["wpe"][:T]                                     # (B, T, C)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        a = layernorm(h, p["ln1w"][l], p["ln1b"][l])
        qkv = a @ p["qkvw"][l].T + p["qkvb"][l]                        # (B, T, 3C)
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in (q, k, v))   # (B, NH, T, hs)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)                # (B, NH, T, T)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, C)
        h = h + o @ p["attprojw"][l].T + p["attprojb"][l]
        a = layernorm(h, p["ln2w"][l], p["ln2b"][l])
        u = gelu(a @ p["fcw"][l].T + p["fcb"][l])                      # (B, T, 4C)
        h = h + u @ p["fcprojw"][l].T + p["fcprojb"][l]
    h = layernorm(h, p["lnfw"], p["lnfb"])
    return (h @ p["wte"].T)[..., :V]                                   # (B, T, Vp) -> (B, T, V)


def verify(out_dir, name, cfg, hp, make_model, train_tokens, val_tokens, expected):
    """Read every file back and check it, independently of how it was written."""
    B, T, V = cfg["B"], cfg["T"], cfg["V"]
    Vp = padded_vocab(V)
    f32 = np.float32
    n_params = sum(int(np.prod(s)) for s in param_sizes(cfg).values())

    # --- model file: header, size, and a fresh torch model loaded from it gives the same logits
    raw = open(os.path.join(out_dir, f"{name}_model.bin"), "rb").read()
    hdr = np.frombuffer(raw, dtype="<i4", count=HEADER_INTS)
    assert list(hdr[:8]) == [MODEL_MAGIC, MODEL_VERSION, cfg["maxT"], V, cfg["L"], cfg["NH"], cfg["C"], Vp]
    assert not hdr[8:].any()
    assert len(raw) == 4 * HEADER_INTS + 4 * n_params
    params, end = read_tensors(raw, 4 * HEADER_INTS, cfg)
    assert end == len(raw)
    assert not params[0][V:].any(), "wte padding rows must be zero"

    # --- shards
    shards = {}
    for split, toks in (("train", train_tokens), ("val", val_tokens)):
        raw_s = open(os.path.join(out_dir, f"{name}_{split}.bin"), "rb").read()
        h = np.frombuffer(raw_s, dtype="<i4", count=HEADER_INTS)
        assert list(h[:3]) == [SHARD_MAGIC, SHARD_VERSION, len(toks)] and not h[3:].any()
        assert len(raw_s) == 4 * HEADER_INTS + 2 * len(toks)
        shards[split] = np.frombuffer(raw_s, dtype="<u2", offset=4 * HEADER_INTS).astype(np.int64)
        assert (shards[split] == toks).all() and shards[split].max() < V
    assert len(shards["train"]) == 4 * B * T + B * T // 2 + 1
    assert len(shards["val"]) == 2 * B * T + 1

    # --- debug state
    raw_d = open(os.path.join(out_dir, f"{name}_debug_state.bin"), "rb").read()
    h = np.frombuffer(raw_d, dtype="<i4", count=HEADER_INTS)
    assert list(h[:4]) == [DEBUG_MAGIC, DEBUG_VERSION, B, T] and not h[4:].any()
    off = 4 * HEADER_INTS
    x = np.frombuffer(raw_d, dtype="<i4", count=B * T, offset=off).reshape(B, T); off += 4 * B * T
    y = np.frombuffer(raw_d, dtype="<i4", count=B * T, offset=off).reshape(B, T); off += 4 * B * T
    logits = np.frombuffer(raw_d, dtype="<f4", count=B * T * V, offset=off).reshape(B, T, V); off += 4 * B * T * V
    loss = np.frombuffer(raw_d, dtype="<f4", count=1, offset=off)[0]; off += 4
    grads, off = read_tensors(raw_d, off, cfg)
    assert off == len(raw_d)
    assert (x == shards["train"][:B * T].reshape(B, T)).all() and (y == shards["train"][1:B * T + 1].reshape(B, T)).all()
    assert not grads[0][V:].any(), "wte grad padding rows must be zero"

    # fresh HF model from the file
    fresh = make_model()
    with torch.no_grad():
        for prm in fresh.parameters():
            prm.fill_(float("nan"))  # so that any parameter the loader missed shows up
    load_llmc_into(fresh, params, cfg)
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
    lg, ls = forward_loss(fresh, xt, yt, V)
    err_hf = np.abs(lg.detach().numpy().astype(f32) - logits).max()
    assert err_hf == 0.0, f"reloaded model logits differ by {err_hf}"
    assert ls.item() == expected["loss0"] and f32(ls.item()) == loss

    # independent hand-written forward (llm.c layout) + autograd: logits, loss and every gradient
    tp = [torch.tensor(a, requires_grad=True) for a in params]
    ref_logits = reference_forward(tp, xt, cfg)
    ref_loss = F.cross_entropy(ref_logits.reshape(-1, V), yt.reshape(-1))
    ref_loss.backward()
    err_logits = np.abs(ref_logits.detach().numpy() - logits).max()
    err_loss = abs(ref_loss.item() - float(loss))
    err_grads = {n: np.abs(t.grad.numpy() - g).max() / max(np.abs(g).max(), 1e-30)
                 for n, t, g in zip(PARAM_NAMES, tp, grads)}
    assert err_logits < 1e-5 and err_loss < 1e-6, (err_logits, err_loss)
    assert max(err_grads.values()) < 1e-6, err_grads

    # the losses.json trajectory again, with torch.optim.AdamW instead of the hand-written update
    js = json.load(open(os.path.join(out_dir, f"{name}_losses.json")))
    run = train(make_model(), train_tokens, val_tokens, cfg, hp, js["train"]["grad_clip"], use_torch_adamw=True)
    d_train = max(abs(a - b) for a, b in zip(run["train_losses"], js["train_losses"]))
    d_val = max(abs(a[1] - b[1]) for a, b in zip(run["val_losses"], js["val_losses"]))
    d_norm = max(abs(a - b) / b for a, b in zip(run["grad_norms"], js["grad_norms"]))
    assert d_train < 1e-10 and d_val < 1e-10 and d_norm < 1e-9, (d_train, d_val, d_norm)

    # for information: how far a float32 run drifts from the float64 trajectory (the Rust engine is f32)
    m32 = make_model().float()
    torch.set_default_dtype(torch.float32)
    try:
        run32 = train(m32, train_tokens, val_tokens, cfg, hp, js["train"]["grad_clip"])
    finally:
        torch.set_default_dtype(torch.float64)
    d32 = max(abs(a - b) for a, b in zip(run32["train_losses"], js["train_losses"]))
    d32v = max(abs(a[1] - b[1]) for a, b in zip(run32["val_losses"], js["val_losses"]))
    print(f"  verified: header/sizes ok; reloaded-model logits identical; hand-written forward: logits "
          f"{err_logits:.1e}, loss {err_loss:.1e}, grads (rel) {max(err_grads.values()):.1e}; "
          f"torch AdamW: train {d_train:.1e}, val {d_val:.1e}")
    print(f"  float32 torch run vs float64 trajectory: max |train loss diff| {d32:.2e}, "
          f"max |val loss diff| {d32v:.2e}")


# ----------------------------------------------------------------------------------------------------------------

def make_fixture(out_dir, idx, name, cfg):
    B, T, V = cfg["B"], cfg["T"], cfg["V"]
    seed = SEED + 100 * idx
    print(f"== {name}: {cfg}, Vp={padded_vocab(V)}")
    make_model = lambda: build_model(cfg, seed)  # noqa: E731  (the same initial model each call)

    # Tokens: one chain; the train shard is its start, the val shard its continuation.
    n_train = 4 * B * T + B * T // 2 + 1      # 4 full batches, then the 5th would not fit: wraps to 0
    n_val = 2 * B * T + 1                     # exactly val_batches = 2 batches
    toks = make_tokens(V, n_train + n_val, seed + 2)
    train_tokens, val_tokens = toks[:n_train], toks[n_train:]
    write_shard(os.path.join(out_dir, f"{name}_train.bin"), train_tokens)
    write_shard(os.path.join(out_dir, f"{name}_val.bin"), val_tokens)

    # Model checkpoint.
    model = make_model()
    write_model(os.path.join(out_dir, f"{name}_model.bin"), llmc_tensors(model, cfg), cfg)

    # Debug state: the initial model on the first train batch.
    x, y = Loader(train_tokens, B, T).next_batch()
    logits, loss = forward_loss(model, x, y, V)
    loss.backward()
    write_debug_state(os.path.join(out_dir, f"{name}_debug_state.bin"), x, y, logits, loss.item(),
                      llmc_tensors(model, cfg, grads=True), cfg)
    print(f"  initial loss {loss.item():.6f} (ln V = {math.log(V):.6f})")

    # Training trajectory.
    hp = dict(TRAIN)
    hp["grad_clip"] = choose_grad_clip(make_model, train_tokens, val_tokens, cfg, hp)
    run = train(make_model(), train_tokens, val_tokens, cfg, hp, hp["grad_clip"])
    js = {
        "config": {"max_seq_len": cfg["maxT"], "vocab_size": V, "padded_vocab_size": padded_vocab(V),
                   "num_layers": cfg["L"], "num_heads": cfg["NH"], "channels": cfg["C"]},
        "train": {"batch_size": B, "seq_len": T, "steps": hp["steps"], "lr": hp["lr"], "warmup": hp["warmup"],
                  "lr_final_frac": hp["lr_final_frac"], "beta1": hp["beta1"], "beta2": hp["beta2"],
                  "eps": hp["eps"], "weight_decay": hp["weight_decay"], "grad_clip": hp["grad_clip"],
                  "val_every": hp["val_every"], "val_batches": hp["val_batches"]},
        "train_losses": run["train_losses"],
        "lrs": run["lrs"],
        "grad_norms": run["grad_norms"],
        "val_losses": run["val_losses"],
    }
    with open(os.path.join(out_dir, f"{name}_losses.json"), "w") as f:
        json.dump(js, f, indent=1)
        f.write("\n")
    assert run["train_losses"][0] == loss.item()

    print(f"  grad_clip = {hp['grad_clip']}")
    print("  step   lr          train loss   grad norm   clipped")
    for s in range(hp["steps"]):
        print(f"  {s:4d}   {run['lrs'][s]:.6e}  {run['train_losses'][s]:.6f}   {run['grad_norms'][s]:9.5f}   "
              f"{'yes' if run['clipped'][s] else ''}")
    print("  val: " + ", ".join(f"[{s}] {l:.6f}" for s, l in run["val_losses"]))
    print(f"  clipped on steps {[s for s in range(hp['steps']) if run['clipped'][s]]}")

    verify(out_dir, name, cfg, hp, make_model, train_tokens, val_tokens, dict(loss0=loss.item()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "fixtures"), help="output folder (default tests/fixtures)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # same summation order every run
    for idx, (name, cfg) in enumerate(FIXTURES.items()):
        make_fixture(args.out, idx, name, cfg)
    print("files:")
    total = 0
    for fn in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, fn))
        total += size
        print(f"  {fn:28s} {size:9d} bytes")
    print(f"  total {total} bytes")


if __name__ == "__main__":
    main()
