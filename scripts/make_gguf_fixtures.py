#!/usr/bin/env python3
"""make_gguf_fixtures.py builds the GGUF fixtures with llama.cpp's gguf-py
(which stays outside wick's repository; it is in the llama.cpp source that the
npm package node-llama-cpp bundles as llama/gitRelease.bundle).

  testdata/gguf/quants.json   random blocks of every tensor type wick reads
                              (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
                              Q5_K, Q6_K), hex-encoded, with gguf-py's
                              quants.dequantize of each as float32 bit patterns;
  testdata/hf/NAME/model-f32.gguf and model-q8_0.gguf
                              the llama32, qwen2, qwen3, gemma2, gemma3, phi35
                              and phi4 fixtures (made first by
                              scripts/make_hf_family_fixtures.py) written as
                              GGUF the way llama.cpp's converter
                              (convert_hf_to_gguf.py and its conversion/
                              package) writes them: llama.cpp's tensor names,
                              Llama's q/k rows permuted for its interleaved
                              RoPE, Gemma's norm weights stored as 1 + w,
                              Phi-3's fused attn_qkv and ffn_up (gate, then
                              up) kept fused, Phi's LongRoPE factors as
                              rope_factors_long/short.weight, the tokenizer
                              as tokenizer.ggml.* metadata (byte-level BPE as
                              "gpt2"; SentencePiece as "llama" with scores and
                              token types), the chat template. In Q8_0 files,
                              matrices whose rows are not a multiple of 32 are
                              F16, as llama.cpp's converter falls back.

                              Two keys go beyond what the converter writes,
                              because the random fixtures depart from the real
                              models where llama.cpp hard-codes the value:
                              ARCH.attention.scale (Gemma's
                              query_pre_attn_scalar; real Gemma 2 and 3 have
                              it equal to head_dim, which llama.cpp assumes)
                              and gemma3.attention.sliding_window_pattern as a
                              list of booleans (the fixture's layer_types;
                              real Gemma 3 has five sliding layers per global,
                              which llama.cpp assumes). Both are keys
                              llama.cpp reads.

Where numpy and gguf-py are importable (not on CI; Debian's python3-numpy and
python3-yaml do):

    PYTHONPATH=PATH/TO/llama.cpp/gguf-py python3 scripts/make_gguf_fixtures.py --root . [NAME ...]

with NAME among quants and the fixtures above (all when none is given).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import quants

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_fixtures import read_sentencepiece  # noqa: E402

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


def load_safetensors(path):
    """The tensors of a .safetensors file as float32 numpy arrays (F32 and
    BF16 only; what the fixtures hold), without torch."""
    import struct
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        if h["dtype"] == "F32":
            t = np.frombuffer(body[a:b], dtype="<f4")
        elif h["dtype"] == "BF16":
            t = (np.frombuffer(body[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name} is {h['dtype']}")
        out[name] = t.reshape(h["shape"]).astype(np.float32)
    return out


# Each fixture: its GGUF architecture, and how llama.cpp's converter writes
# its tokenizer (tokenizer.ggml.pre for byte-level BPE, or the SentencePiece
# model its tokenizer.json was made from, with add_space_prefix).
FIXTURES = {
    "llama32": {"arch": "llama", "pre": "llama-bpe"},
    "qwen2": {"arch": "qwen2", "pre": "qwen2"},
    "qwen3": {"arch": "qwen3", "pre": "qwen2"},
    "phi4": {"arch": "phi3", "pre": "gpt-4o"},
    # gemma3's tokenizer.model is a copy of testdata/tokenizer/tokenizer.model,
    # from which gemma2's and phi35's tokenizer.json were made.
    "gemma2": {"arch": "gemma2", "spm": "testdata/tokenizer/tokenizer.model", "space_prefix": False},
    "gemma3": {"arch": "gemma3", "spm": "testdata/hf/gemma3/tokenizer.model", "space_prefix": False},
    "phi35": {"arch": "phi3", "spm": "testdata/tokenizer/tokenizer.model", "space_prefix": None},
}


def add_bpe_vocab(w, tok, n, pre):
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a for a in tok["added_tokens"]}
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


def add_spm_vocab(w, root, spec, tok, n):
    """As llama.cpp's _set_vocab_sentencepiece (Gemma) and Phi3MiniModel do:
    pieces, scores and types from the SentencePiece model, [PADi] UNUSED
    rows up to the vocabulary size, then tokenizer.json's added tokens over
    them with score -1000 (CONTROL when special, else USER_DEFINED)."""
    pieces = read_sentencepiece(os.path.join(root, spec["spm"]))
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [gguf.TokenType.UNUSED] * n
    for i, (p, score, typ) in enumerate(pieces):
        tokens[i], scores[i], types[i] = p, score, typ
    for a in (tok or {}).get("added_tokens", []):
        i = a["id"]
        if i < len(pieces) and tokens[i] == a["content"]:
            continue  # a piece of the model already, typed by it
        tokens[i], scores[i] = a["content"], -1000.0
        types[i] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if spec["space_prefix"] is not None:
        w.add_add_space_prefix(spec["space_prefix"])


def write_gguf(root, name, qtype):
    spec = FIXTURES[name]
    arch = spec["arch"]
    d = os.path.join(root, "testdata", "hf", name)
    cfg = json.load(open(os.path.join(d, "config.json")))

    def optional_json(file):
        p = os.path.join(d, file)
        return json.load(open(p, encoding="utf-8")) if os.path.exists(p) else None
    tok = optional_json("tokenizer.json")
    tcfg = optional_json("tokenizer_config.json") or {}
    tensors = load_safetensors(os.path.join(d, "model.safetensors"))
    suffix = "f32" if qtype == Q.F32 else "q8_0"
    path = os.path.join(d, f"model-{suffix}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or hidden // heads
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    rp = cfg.get("rope_parameters") or {}
    full = rp.get("full_attention", rp)
    if arch != "gemma2":  # Gemma2Model writes no rope base: llama.cpp's 10000
        w.add_rope_freq_base(float(full.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    if "sliding_attention" in rp:
        w.add_rope_freq_base_swa(float(rp["sliding_attention"]["rope_theta"]))
    if "head_dim" in cfg and cfg["head_dim"]:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    if rp.get("rope_type") == "llama3":
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)  # llama.cpp stores Llama 3's as rope_freqs
    extra = {}  # further tensors: Phi's LongRoPE factors
    if arch.startswith("gemma"):
        if cfg.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        w.add_sliding_window(cfg["sliding_window"])
        if cfg["query_pre_attn_scalar"] != head_dim:
            w.add_attention_scale(cfg["query_pre_attn_scalar"] ** -0.5)
        if arch == "gemma3":
            w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg["layer_types"]])
    if arch == "phi3":
        # Phi3MiniModel.set_gguf_parameters and generate_extra_tensors.
        orig = rp.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
        rot = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        rope_dims = int(rot * hidden) // heads
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_dimension_count(rope_dims)
        w.add_sliding_window(cfg.get("sliding_window") or 0)
        if rp.get("long_factor"):
            scale = cfg["max_position_embeddings"] / orig
            w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)
            extra["rope_factors_long.weight"] = np.array(rp["long_factor"], dtype=np.float32)
            extra["rope_factors_short.weight"] = np.array(rp["short_factor"], dtype=np.float32)
    # Tokenizer.
    n = cfg["vocab_size"]
    if "spm" in spec:
        add_spm_vocab(w, root, spec, tok, n)
    else:
        add_bpe_vocab(w, tok, n, spec["pre"])
    gen = optional_json("generation_config.json") or {}
    ids = {a["content"]: a["id"] for a in (tok or {}).get("added_tokens", [])}
    if arch == "llama":
        w.add_bos_token_id(ids["<|begin_of_text|>"])
        w.add_eos_token_id(ids["<|eot_id|>"])
        w.add_eot_token_id(ids["<|eot_id|>"])
        w.add_add_bos_token(True)
    elif arch in ("qwen2", "qwen3"):
        w.add_bos_token_id(ids["<|endoftext|>"])
        w.add_eos_token_id(ids["<|im_end|>"])
        w.add_add_bos_token(False)
    else:
        # gguf.SpecialVocab: the ids of tokenizer_config.json's bos_token and
        # eos_token, else config.json's.
        bos, eos = tcfg.get("bos_token"), tcfg.get("eos_token")
        w.add_bos_token_id(ids[bos] if bos in ids else cfg["bos_token_id"])
        eos_id = cfg["eos_token_id"]
        w.add_eos_token_id(ids[eos] if eos in ids else (eos_id[0] if isinstance(eos_id, list) else eos_id))
        w.add_add_bos_token(arch.startswith("gemma"))
    if arch == "llama":
        tmpl = open(os.path.join(root, "testdata", "templates", "llama3.jinja"), encoding="utf-8").read()
    elif arch == "qwen2":
        tmpl = open(os.path.join(root, "testdata", "templates", "qwen2.jinja"), encoding="utf-8").read()
    else:
        tmpl = tcfg.get("chat_template")
    if tmpl:
        w.add_chat_template(tmpl)
    # Tensors, with llama.cpp's names.
    names = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "self_attn.qkv_proj.weight": "attn_qkv.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.gate_up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }
    if arch.startswith("gemma"):
        per_layer.update({"post_attention_layernorm.weight": "post_attention_norm.weight",
                          "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                          "post_feedforward_layernorm.weight": "post_ffw_norm.weight"})
    else:
        per_layer["post_attention_layernorm.weight"] = "ffn_norm.weight"
    out = []
    for hf, t in sorted(tensors.items()):
        if hf == "lm_head.weight" and arch.startswith("gemma"):
            continue  # Gemma's converters skip it: the head is the embedding
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
        if arch.startswith("gemma") and hf.endswith("norm.weight"):
            t = t + np.float32(1)  # Gemma's RMSNorm multiplies by 1 + w
        out.append((gname, t))
    out += sorted(extra.items())
    for gname, t in out:
        t = np.ascontiguousarray(t, dtype=np.float32)
        if t.ndim == 1 or qtype == Q.F32:
            w.add_tensor(gname, t)
            continue
        try:
            data, qt = quants.quantize(t, qtype), qtype
        except gguf.QuantError:
            data, qt = quants.quantize(t, Q.F16), Q.F16  # llama.cpp's converter's fallback
        w.add_tensor(gname, data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("names", nargs="*", help="quants and fixture names (all when none)")
    args = ap.parse_args()
    names = args.names or ["quants"] + list(FIXTURES)
    if "quants" in names:
        quant_fixtures(args.root)
    failed = []
    for name in names:
        if name == "quants":
            continue
        for qt in (Q.F32, Q.Q8_0):
            try:
                write_gguf(args.root, name, qt)
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
