#!/usr/bin/env python3
"""make_hf_fixtures.py builds the Hugging Face parity fixtures in testdata/hf/.

It makes two tiny, randomly initialised (seeded) checkpoints with Hugging Face
transformers, the reference implementation that `wick convert` must agree
with:

  gemma3/  Gemma3ForCausalLM: multi-query attention, sliding-window and full
           layers (window 8, shorter than the prompt), two RoPE thetas,
           QK-norm, pre- and post-norms, GeGLU, tied embeddings, a final
           softcap; float32 weights.
  llama/   LlamaForCausalLM: grouped-query attention, SwiGLU, an untied head,
           Llama 3's rope scaling; bfloat16 weights (the values are rounded
           to bfloat16 before the reference runs, so float32 math on the
           stored weights is exact).

For each it writes config.json and model.safetensors (as save_pretrained
writes them), logits.npy (transformers' float32 logits for every position of
the prompt, [tokens, vocab]) and reference.json (the prompt, 24 greedy tokens
from recomputing the whole sequence each step, each step's top-1 margin, the
RoPE inverse frequencies the model computed, and the library versions), and a
copy of testdata/tokenizer/tokenizer.model (vocab 384) unless --tokenizer ''.

It runs on the CPU in float32 with eager attention, wherever transformers and
PyTorch are installed (not on wick's CI machines):

    python3 scripts/make_hf_fixtures.py --out testdata/hf
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

VOCAB = 384  # testdata/tokenizer/tokenizer.model
PROMPT_LEN = 40
GREEDY = 24
BOS, EOS, PAD = 2, 1, 0


def make_config(cls, common, modern, legacy):
    """Builds a config with transformers 5's rope_parameters, or the legacy
    keys on older versions."""
    try:
        return cls(**common, **modern)
    except (TypeError, ValueError) as e:
        print(f"note: {cls.__name__} refused {sorted(modern)} ({e}); using legacy keys", file=sys.stderr)
        return cls(**common, **legacy)


def gemma3_model():
    layer_types = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    common = dict(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=128, num_hidden_layers=len(layer_types),
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        rms_norm_eps=1e-6, query_pre_attn_scalar=24, sliding_window=8, layer_types=layer_types,
        final_logit_softcapping=30.0, attn_logit_softcapping=None, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
    )
    modern = dict(rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    })
    legacy = dict(rope_theta=1e6, rope_local_base_freq=1e4)
    cfg = make_config(Gemma3TextConfig, common, modern, legacy)
    return Gemma3ForCausalLM(cfg), {"full_attention": 1e6, "sliding_attention": 1e4}


def llama_model():
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    common = dict(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu", attention_bias=False, mlp_bias=False,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
    )
    modern = dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, **scaling})
    legacy = dict(rope_theta=5e5, rope_scaling={"rope_type": "llama3", **scaling})
    cfg = make_config(LlamaConfig, common, modern, legacy)
    return LlamaForCausalLM(cfg), None


def randomize(model, seed, one_plus, bf16, embed_std, final_gain):
    """Overwrites every parameter with seeded values that give peaked logits:
    matrices N(0, 1/cols) (embeddings and head N(0, embed_std^2)), norm
    weights near their neutral value, a large final-norm gain. A tied model
    gets small embeddings: the token's own embedding in the residual stream
    would otherwise make it predict itself forever."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                v = (0.0 if one_plus else 1.0) + 0.1 * torch.randn(p.shape, generator=g)
                if name == "model.norm.weight":
                    v += final_gain
            else:
                std = embed_std if ("embed_tokens" in name or "lm_head" in name) else 1.0 / math.sqrt(p.shape[1])
                v = std * torch.randn(p.shape, generator=g)
            if bf16:
                v = v.to(torch.bfloat16).to(torch.float32)
            p.copy_(v)


def inv_freqs(model):
    return {name: buf.detach().double().tolist() for name, buf in model.named_buffers() if "inv_freq" in name}


def greedy(model, prompt, steps):
    ids, margins = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            last = model(torch.tensor([ids])).logits[0, -1].double()
            top = torch.topk(last, 2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(torch.argmax(last)))
    return ids[len(prompt):], margins


def build(name, make, seed, one_plus, bf16, embed_std, final_gain, out, tokenizer):
    torch.manual_seed(seed)
    model, thetas = make()
    model = model.to(torch.float32).eval()
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except Exception as e:  # noqa: BLE001 - any failure just keeps the default
            print(f"note: {name}: keeping attention {model.config._attn_implementation}: {e}", file=sys.stderr)
    randomize(model, seed, one_plus, bf16, embed_std, final_gain)
    freqs = inv_freqs(model)  # before save_pretrained, which may cast buffers

    rng = np.random.default_rng(seed)
    prompt = [BOS] + [int(x) for x in rng.integers(6, VOCAB, PROMPT_LEN - 1)]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].to(torch.float32).numpy()
    tokens, margins = greedy(model, prompt, GREEDY)

    dst = os.path.join(out, name)
    os.makedirs(dst, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (model.to(torch.bfloat16) if bf16 else model).save_pretrained(tmp, safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(dst, f))
    np.save(os.path.join(dst, "logits.npy"), logits.astype(np.float32))
    ref = {
        "model": name,
        "seed": seed,
        "prompt": prompt,
        "greedy": tokens,
        "greedy_margins": margins,
        "inv_freq": freqs,
        "rope_thetas": thetas,
        "attn_implementation": model.config._attn_implementation,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(dst, "tokenizer.model"))
    print(f"{name}: prompt {len(prompt)} tokens, greedy {tokens}, min margin {min(margins):.3f}, "
          f"attention {ref['attn_implementation']}, inv_freq {list(ref['inv_freq'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="testdata/hf")
    ap.add_argument("--tokenizer", default="testdata/tokenizer/tokenizer.model",
                    help="SentencePiece model copied beside each checkpoint ('' for none)")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    build("gemma3", gemma3_model, 1, one_plus=True, bf16=False, embed_std=0.08, final_gain=6.0,
          out=args.out, tokenizer=args.tokenizer)
    build("llama", llama_model, 2, one_plus=False, bf16=True, embed_std=0.5, final_gain=2.0,
          out=args.out, tokenizer=args.tokenizer)


if __name__ == "__main__":
    main()
