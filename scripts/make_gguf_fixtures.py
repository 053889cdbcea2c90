#!/usr/bin/env python3
"""make_gguf_fixtures.py builds the GGUF fixtures with llama.cpp's gguf-py
(which stays outside wick's repository; it is in the llama.cpp source that the
npm package node-llama-cpp bundles as llama/gitRelease.bundle).

  testdata/gguf/quants.json   random blocks of every tensor type wick reads
                              (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
                              Q5_K, Q6_K), hex-encoded, with gguf-py's
                              quants.dequantize of each as float32 bit patterns;
  testdata/hf/NAME/model-f32.gguf and model-q8_0.gguf
                              the llama32 and qwen2 fixtures (made first by
                              scripts/make_hf_family_fixtures.py) written as
                              GGUF the way llama.cpp's converter writes them:
                              llama.cpp's tensor names, Llama's q/k rows
                              permuted for its interleaved RoPE, the tokenizer
                              as tokenizer.ggml.* metadata, the chat template.

Where numpy, torch, safetensors and gguf-py are importable (not on CI):

    PYTHONPATH=PATH/TO/llama.cpp/gguf-py python3 scripts/make_gguf_fixtures.py --root .
"""

import argparse
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import quants

TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of the float16 fields of each block type, which random bytes
# would often make NaN or infinite.
HALVES = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
          "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
BLOCKS = 6


def quant_fixtures(root):
    rng = np.random.default_rng(7)
    out = {"gguf_py": getattr(gguf, "__version__", "?"), "types": []}
    for name in TYPES:
        qt = Q[name]
        block, size = gguf.GGML_QUANT_SIZES[qt]
        if name == "F16":
            raw = rng.normal(0, 1, 64 * BLOCKS).astype(np.float16).view(np.uint8)
        elif name == "BF16":
            raw = (rng.normal(0, 1, 64 * BLOCKS).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            raw = rng.integers(0, 256, size * BLOCKS, dtype=np.uint8)
            for b in range(BLOCKS):
                for off in HALVES[name]:
                    h = np.array([rng.normal(0, 0.02)], dtype=np.float16).view(np.uint8)
                    raw[b * size + off:b * size + off + 2] = h
        vals = quants.dequantize(raw.copy(), qt).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(vals)), name
        out["types"].append({"type": name, "block": block, "bytes_per_block": size,
                             "raw": raw.tobytes().hex(), "values": [int(v) for v in vals.view(np.uint32)]})
        print(f"{name}: {vals.size} values")
    os.makedirs(os.path.join(root, "testdata", "gguf"), exist_ok=True)
    with open(os.path.join(root, "testdata", "gguf", "quants.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


def permute(w, n_head, n_head_kv):
    """llama.cpp's converter's q/k row order for Llama: each head's halves
    (i, i+d/2) interleaved as (2i, 2i+1)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_gguf(root, name, arch, pre, qtype):
    import torch
    from safetensors.torch import load_file
    d = os.path.join(root, "testdata", "hf", name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tensors = {k: v.to(torch.float32).numpy() for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    suffix = "f32" if qtype == Q.F32 else "q8_0"
    path = os.path.join(d, f"model-{suffix}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    rp = cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    if "head_dim" in cfg and cfg["head_dim"]:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    if rp.get("rope_type") == "llama3":
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)  # llama.cpp stores Llama 3's as rope_freqs
    # Tokenizer.
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a for a in tok["added_tokens"]}
    n = cfg["vocab_size"]
    tokens, types = [], []
    by_id = {i: t for t, i in vocab.items()}
    for i in range(n):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    if arch == "llama":
        w.add_bos_token_id(ids["<|begin_of_text|>"])
        w.add_eos_token_id(ids["<|eot_id|>"])
        w.add_eot_token_id(ids["<|eot_id|>"])
        w.add_add_bos_token(True)
        tmpl = open(os.path.join(root, "testdata", "templates", "llama3.jinja"), encoding="utf-8").read()
    else:
        w.add_bos_token_id(ids["<|endoftext|>"])
        w.add_eos_token_id(ids["<|im_end|>"])
        w.add_add_bos_token(False)
        tmpl = open(os.path.join(root, "testdata", "templates", "qwen2.jinja"), encoding="utf-8").read()
    w.add_chat_template(tmpl)
    # Tensors, with llama.cpp's names.
    names = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for hf, t in sorted(tensors.items()):
        if hf in names:
            gname = names[hf]
        else:
            parts = hf.split(".")
            layer, rest = int(parts[2]), ".".join(parts[3:])
            gname = f"blk.{layer}.{per_layer[rest]}"
            if arch == "llama" and rest == "self_attn.q_proj.weight":
                t = permute(t, heads, heads)
            elif arch == "llama" and rest == "self_attn.k_proj.weight":
                t = permute(t, heads, kv)
        if t.ndim == 1 or qtype == Q.F32:
            w.add_tensor(gname, np.ascontiguousarray(t, dtype=np.float32))
        else:
            data = quants.quantize(np.ascontiguousarray(t, dtype=np.float32), qtype)
            w.add_tensor(gname, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".")
    args = ap.parse_args()
    quant_fixtures(args.root)
    failed = []
    for name, arch, pre in (("llama32", "llama", "llama-bpe"), ("qwen2", "qwen2", "qwen2")):
        for qt in (Q.F32, Q.Q8_0):
            try:
                write_gguf(args.root, name, arch, pre, qt)
            except Exception:  # noqa: BLE001 - keep the others
                import traceback
                traceback.print_exc()
                failed.append(f"{name}/{qt.name}")
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
