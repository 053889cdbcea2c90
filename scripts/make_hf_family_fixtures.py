#!/usr/bin/env python3
"""make_hf_family_fixtures.py builds the parity fixtures of the model families
wick converts from Hugging Face tokenizer.json checkpoints, in testdata/hf/.

Each is a tiny, randomly initialised (seeded) checkpoint made with
transformers, with one of the tokenizer.json fixtures of testdata/tokenizers/
(see scripts/make_tokenizer_fixtures.py) and its vocabulary:

  llama32/  LlamaForCausalLM as Llama 3.2: GQA, tied embeddings, Llama 3 rope
            scaling; Llama 3's tokenizer; bfloat16 weights.
  smollm2/  LlamaForCausalLM as SmolLM2: GQA 3/1, tied; SmolLM2's tokenizer.
  qwen2/    Qwen2ForCausalLM (Qwen 2.5): q/k/v biases, GQA, tied; bfloat16.
  qwen3/    Qwen3ForCausalLM: per-head QK-norm, head_dim * heads != hidden, tied.
  gemma2/   Gemma2ForCausalLM: alternating sliding (window 8) and full layers,
            attention-logit softcap (5, low enough to act on random weights),
            final softcap 30, pre and post norms, GeGLU, tied.
  phi4/     Phi3ForCausalLM as Phi-4-mini: fused qkv_proj and gate_up_proj,
            partial rotary factor 0.75, tied; the o200k-style tokenizer.
  phi35/    Phi3ForCausalLM as Phi-3.5-mini: longrope (short factors apply
            within the 64 positions used), untied; a SentencePiece-style
            tokenizer.

For each it writes config.json and model.safetensors (as save_pretrained
writes them), tokenizer.json (a copy of the fixture), logits.npy and
reference.json as scripts/make_hf_fixtures.py does. tokenizer_config.json
(the chat template) is not written here: it is committed beside them.

It runs on the CPU in float32 with eager attention wherever transformers and
PyTorch are installed (not on wick's CI machines):

    python3 scripts/make_hf_family_fixtures.py --out testdata/hf
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import traceback

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_fixtures import greedy, inv_freqs, make_config  # noqa: E402

PROMPT_LEN = 40
GREEDY = 24
TOKDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "tokenizers")


def tokenizer_info(name):
    t = json.load(open(os.path.join(TOKDIR, name), encoding="utf-8"))
    ids = {a["content"]: a["id"] for a in t["added_tokens"]}
    base = len(t["model"]["vocab"])
    vocab = max([base - 1] + list(ids.values())) + 1
    return vocab, base, ids


def randomize(model, seed, one_plus, bf16, embed_std, final_gain):
    """As make_hf_fixtures.randomize, and biases small around zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1:
                v = (0.0 if one_plus else 1.0) + 0.1 * torch.randn(p.shape, generator=g)
                if name == "model.norm.weight":
                    v += final_gain
            else:
                std = embed_std if ("embed_tokens" in name or "lm_head" in name) else 1.0 / math.sqrt(p.shape[1])
                v = std * torch.randn(p.shape, generator=g)
            if bf16:
                v = v.to(torch.bfloat16).to(torch.float32)
            p.copy_(v)


def llama32():
    vocab, _, ids = tokenizer_info("llama3.json")
    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                  mlp_bias=False, bos_token_id=ids["<|begin_of_text|>"],
                  eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]])
    modern = dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, **scaling})
    legacy = dict(rope_theta=5e5, rope_scaling={"rope_type": "llama3", **scaling})
    return transformers.LlamaForCausalLM(make_config(transformers.LlamaConfig, common, modern, legacy)), \
        "llama3.json", ids["<|begin_of_text|>"]


def smollm2():
    vocab, _, ids = tokenizer_info("smollm2.json")
    common = dict(vocab_size=vocab, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=3, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                  rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                  mlp_bias=False, bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"])
    modern = dict(rope_parameters={"rope_type": "default", "rope_theta": 1e5})
    legacy = dict(rope_theta=1e5)
    return transformers.LlamaForCausalLM(make_config(transformers.LlamaConfig, common, modern, legacy)), \
        "smollm2.json", None


def qwen2():
    vocab, _, ids = tokenizer_info("qwen2.json")
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False,
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    modern = dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    legacy = dict(rope_theta=1e6)
    return transformers.Qwen2ForCausalLM(make_config(transformers.Qwen2Config, common, modern, legacy)), \
        "qwen2.json", None


def qwen3():
    vocab, _, ids = tokenizer_info("qwen2.json")
    common = dict(vocab_size=vocab, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                  use_sliding_window=False, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    modern = dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    legacy = dict(rope_theta=1e6)
    return transformers.Qwen3ForCausalLM(make_config(transformers.Qwen3Config, common, modern, legacy)), \
        "qwen2.json", None


def gemma2():
    vocab, _, ids = tokenizer_info("gemma.json")
    layer_types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    common = dict(vocab_size=vocab, hidden_size=48, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  rms_norm_eps=1e-6, query_pre_attn_scalar=4, sliding_window=8, layer_types=layer_types,
                  attn_logit_softcapping=5.0, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
                  tie_word_embeddings=True, attention_bias=False,
                  pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"])
    modern = dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    legacy = dict(rope_theta=1e4)
    return transformers.Gemma2ForCausalLM(make_config(transformers.Gemma2Config, common, modern, legacy)), \
        "gemma.json", ids["<bos>"]


def phi4():
    vocab, _, ids = tokenizer_info("phi4.json")
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  original_max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
                  hidden_act="silu", partial_rotary_factor=0.75, pad_token_id=ids["<|endoftext|>"],
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|endoftext|>"], ids["<|end|>"]])
    modern = dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.75})
    legacy = dict(rope_theta=1e4)
    return transformers.Phi3ForCausalLM(make_config(transformers.Phi3Config, common, modern, legacy)), \
        "phi4.json", None


def phi35():
    vocab, _, ids = tokenizer_info("phi3.json")
    head_dim = 16
    short = [1.0 + 0.05 * i for i in range(head_dim // 2)]
    long = [1.0 + 0.5 * i for i in range(head_dim // 2)]
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                  original_max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  hidden_act="silu", pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"],
                  eos_token_id=[ids["<|endoftext|>"], ids["<|end|>"]])
    modern = dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "short_factor": short,
                                   "long_factor": long, "original_max_position_embeddings": 64})
    legacy = dict(rope_theta=1e4, rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long})
    return transformers.Phi3ForCausalLM(make_config(transformers.Phi3Config, common, modern, legacy)), \
        "phi3.json", ids["<bos>"]


FAMILIES = [
    # name, maker, seed, one_plus, bf16, embed_std, final_gain
    ("llama32", llama32, 11, False, True, 0.08, 6.0),
    ("smollm2", smollm2, 12, False, False, 0.08, 6.0),
    ("qwen2", qwen2, 13, False, True, 0.08, 6.0),
    ("qwen3", qwen3, 14, False, False, 0.08, 6.0),
    ("gemma2", gemma2, 15, True, False, 0.08, 6.0),
    ("phi4", phi4, 16, False, False, 0.08, 6.0),
    ("phi35", phi35, 17, False, False, 0.5, 2.0),
]


def build(name, make, seed, one_plus, bf16, embed_std, final_gain, out):
    torch.manual_seed(seed)
    model, tokfile, bos = make()
    model = model.to(torch.float32).eval()
    try:
        model.set_attn_implementation("eager")
    except Exception as e:  # noqa: BLE001 - any failure just keeps the default
        print(f"note: {name}: keeping attention {model.config._attn_implementation}: {e}", file=sys.stderr)
    randomize(model, seed, one_plus, bf16, embed_std, final_gain)
    freqs = inv_freqs(model)
    _, base, _ = tokenizer_info(tokfile)

    rng = np.random.default_rng(seed)
    prompt = ([bos] if bos is not None else []) + [int(x) for x in rng.integers(0, base, PROMPT_LEN - (bos is not None))]
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].to(torch.float32).numpy()
    tokens, margins = greedy(model, prompt, GREEDY)

    dst = os.path.join(out, name)
    os.makedirs(dst, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (model.to(torch.bfloat16) if bf16 else model).save_pretrained(tmp, safe_serialization=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(dst, f))
    shutil.copyfile(os.path.join(TOKDIR, tokfile), os.path.join(dst, "tokenizer.json"))
    np.save(os.path.join(dst, "logits.npy"), logits.astype(np.float32))
    ref = {
        "model": name, "seed": seed, "prompt": prompt, "greedy": tokens, "greedy_margins": margins,
        "inv_freq": freqs, "attn_implementation": model.config._attn_implementation,
        "tokenizer": tokfile, "transformers": transformers.__version__, "torch": torch.__version__,
    }
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"{name}: prompt {len(prompt)} tokens, greedy {tokens}, min margin {min(margins):.3f}, "
          f"params {sorted(n for n, _ in model.named_parameters() if '.0.' in n or 'layers' not in n)}, "
          f"inv_freq {[(k, len(v)) for k, v in freqs.items()]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="testdata/hf")
    ap.add_argument("--only", default="", help="comma-separated fixture names")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    failed = []
    for fam in FAMILIES:
        if args.only and fam[0] not in args.only.split(","):
            continue
        try:
            build(*fam, out=args.out)
        except Exception:  # noqa: BLE001 - one family's failure must not lose the others
            traceback.print_exc()
            failed.append(fam[0])
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
