#!/usr/bin/env python3
"""Write a tiny Hugging Face GPT-2 checkpoint and transformers' logits on it, for llmrs's import test.

Run (from the repository root):

    python tools/make_hf_fixture.py [--out tests/fixtures/hf_tiny]    (a python with torch and transformers)

Why: `llmrs import-hf` converts a Hugging Face GPT-2 (`config.json` + `model.safetensors`) into an llm.c
checkpoint. tests/hf_import.rs converts this fixture, runs llmrs's forward pass on the saved inputs, and requires
transformers' logits. Nothing is downloaded: the model is a random GPT2LMHeadModel built from a GPT2Config.

What it writes into --out:

  config.json, model.safetensors   `save_pretrained(..., safe_serialization=True)` of the model, float32.
  reference.json                   {"B", "T", "V", "inputs": B lists of T token ids, "logits": "logits.f32",
                                    "torch", "transformers"} (the versions that made it).
  logits.f32                       transformers' logits on `inputs`: B*T*V float32, little-endian, row-major
                                    (B, T, V), no header. Unpadded: V columns, not llm.c's Vp.

The model: L=2, NH=4, C=64, maxT=32, V=389 (odd, so llm.c pads wte to Vp=512). GPT-2's default random init, then
every bias and every LayerNorm weight/bias gets N(0, 0.1) noise, so a converter that swaps, drops or mis-shapes
one of them cannot hide behind zeros and ones. Every parameter is then rounded to a value that float32, float16
and bfloat16 all represent exactly (bfloat16's 8-bit significand, and magnitudes below float16's smallest normal
number 2^-14 set to 0), so the test can re-save the same model as F16 and BF16 safetensors and require the same
imported parameters, bit for bit. The reference logits are computed in float64 (eager attention, tanh GELU)
from those parameters, so they differ from llmrs's float32 forward pass only by llmrs's own rounding.

Seeded and deterministic for a given torch version; runs in a few seconds on a CPU. It checks what it wrote by
reloading the saved model with from_pretrained and comparing its logits.
"""

import argparse
import json
import os

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

L, NH, C, MAX_T, V = 2, 4, 64, 32, 389
B, T = 2, MAX_T  # T = maxT, so every row of wpe is used
SEED = 1337
PERTURB_STD = 0.1
F16_MIN_NORMAL = 2.0**-14


def representable_everywhere(x):
    """x rounded to bfloat16, with magnitudes below float16's smallest normal set to 0: exact in f32, f16, bf16."""
    x = x.to(torch.bfloat16).to(torch.float32)
    return torch.where(x.abs() < F16_MIN_NORMAL, torch.zeros_like(x), x)


def build_model():
    config = GPT2Config(
        vocab_size=V,
        n_positions=MAX_T,
        n_embd=C,
        n_layer=L,
        n_head=NH,
        activation_function="gelu_new",  # tanh GELU, llm.c's
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=V - 1,  # only to keep them inside the small vocabulary
        eos_token_id=V - 1,
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head must be tied to wte"
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # exactly the biases and the LayerNorm weights/biases
                p.add_(torch.randn(p.shape, generator=gen) * PERTURB_STD)
            p.copy_(representable_everywhere(p))
    return model.eval()


def logits_f64(model, inputs):
    """transformers' logits (B, T, V) with the model evaluated in float64 (a copy; `model` is unchanged)."""
    m64 = GPT2LMHeadModel(model.config)
    m64.config._attn_implementation = "eager"
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    with torch.no_grad():
        return m64(torch.tensor(inputs)).logits.numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/hf_tiny")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = build_model()
    model.save_pretrained(args.out, safe_serialization=True)

    rng = np.random.default_rng(SEED)
    inputs = rng.integers(0, V, size=(B, T)).tolist()
    logits = logits_f64(model, inputs)
    assert logits.shape == (B, T, V), logits.shape
    logits.astype("<f4").tofile(os.path.join(args.out, "logits.f32"))
    reference = dict(B=B, T=T, V=V, inputs=inputs, logits="logits.f32",
                     torch=torch.__version__, transformers=transformers.__version__)
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        # One line per key (and per row of inputs), so a diff of the fixture stays readable.
        lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items() if k != "inputs"]
        lines.append(' "inputs": [\n' + ",\n".join(f"  {json.dumps(row)}" for row in inputs) + "\n ]")
        f.write("{\n" + ",\n".join(lines) + "\n}\n")

    # Check what was written: the saved model, reloaded, gives the same logits (in float32, so within 1e-4).
    reloaded = GPT2LMHeadModel.from_pretrained(args.out, attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded(torch.tensor(inputs)).logits.numpy()
    stored = np.fromfile(os.path.join(args.out, "logits.f32"), dtype="<f4").reshape(B, T, V)
    err = float(np.abs(again - stored).max())
    assert err < 1e-4, f"reloaded model's float32 logits differ from the float64 reference by {err}"
    sizes = {name: os.path.getsize(os.path.join(args.out, name)) for name in sorted(os.listdir(args.out))}
    print(f"wrote {args.out}: {sizes}; reloaded float32 logits within {err:.2e} of the float64 reference")


if __name__ == "__main__":
    main()
