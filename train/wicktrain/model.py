"""The Character.AI-shaped transformer that wick runs, in PyTorch.

The forward pass mirrors engine/cpu/forward.go step for step: scaled
embedding gather, pre-norm attention with QK-norm and rotate-half RoPE,
multi-query attention over a window (local layers) or everything (global
layers), K/V read from the producer layer named by kv_source, post-attention
norm, pre-norm GeGLU (tanh) FFN with post-norm, final norm, tied output head
and a soft cap. In int8 mode every matmul is W8A8 (package quant's rule) and
K and V pass through the int8 KV cache's rounding, so training sees exactly
what wick will compute.

Configs use the manifest's field names (engine/format/manifestpb), so that
the exporter hands them to wick unchanged.
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import quant


def cai_layers(blocks, window, locals_per_block=5, share=True, hybrid=True):
    """The layer list of engine's Character.AI shape (internal/testmodel.CAIShaped):
    each block is locals_per_block local layers then one global layer; local
    layers share KV in pairs (a block's odd one out keeps its own) and every
    global layer reads the first global layer's KV. hybrid=False makes every
    layer global (window 0); share=False gives every layer its own KV."""
    layers = []
    first_global = -1
    for _ in range(blocks):
        base = len(layers)
        for i in range(locals_per_block):
            src = base + i
            if share and i % 2 == 1:
                src -= 1
            layers.append({"kind": "ATTN_KIND_LOCAL", "window": window, "kv_source": src, "kv_role": kv_role(src, len(layers))})
        g = len(layers)
        if first_global < 0:
            first_global = g
        src = first_global if share else g
        layers.append({"kind": "ATTN_KIND_GLOBAL", "window": 0, "kv_source": src, "kv_role": kv_role(src, g)})
    if not hybrid:
        if share:
            raise ValueError("cai_layers: sharing without hybrid horizons is not a variant this trainer makes")
        for i, l in enumerate(layers):
            l.update(kind="ATTN_KIND_GLOBAL", window=0, kv_source=i, kv_role=kv_role(i, i))
    return layers


def kv_role(src, i):
    """The manifest's explicit KV role of layer i reading layer src's KV
    (format version 2 never infers it from kv_source)."""
    return "KV_ROLE_PRODUCER" if src == i else "KV_ROLE_CONSUMER"


def default_config(vocab):
    """The default model: 12 layers (2 blocks of 5 local + 1 global), window
    128, context 1024, MQA with 6 query heads of 64, hidden 384, FFN 1024,
    tied 8k embedding: about 21M parameters, int8."""
    return {
        "vocab": vocab, "hidden": 384, "heads": 6, "kv_heads": 1, "head_dim": 64,
        "ffn_hidden": 1024, "context_len": 1024,
        "layers": cai_layers(2, 128),
        "rope_theta_global": 1e6, "rope_theta_local": 1e4,
        "norm_eps": 1e-6, "norm_one_plus": True, "qk_norm": True,
        "post_attn_norm": True, "post_ffn_norm": True,
        "activation": "ACTIVATION_GEGLU_TANH", "tied_embedding": True,
        "embed_scale": math.sqrt(384), "attn_scale": 0.0, "final_softcap": 30.0,
        "dtype": "DTYPE_INT8",
    }


def tiny_config(vocab):
    """A CPU-sized config of the same shape (for make test): 6 layers,
    window 16, context 64."""
    c = default_config(vocab)
    c.update(hidden=64, heads=4, head_dim=16, ffn_hidden=128, context_len=64,
             layers=cai_layers(1, 16), embed_scale=8.0)
    return c


# The architecture table's variants (bench/ARCHITECTURE.md): one change at a time.
VARIANTS = ("baseline", "mqa", "hybrid", "share", "int8")


def variant_config(vocab, name):
    """The default model's size with the techniques of the table up to and
    including name: baseline is multi-head, all global, no sharing, float32."""
    if name not in VARIANTS:
        raise ValueError(f"variant {name!r}: want one of {', '.join(VARIANTS)}")
    c = default_config(vocab)
    k = VARIANTS.index(name)
    c["kv_heads"] = c["heads"] if k < 1 else 1
    c["layers"] = cai_layers(2, 128, hybrid=k >= 2, share=k >= 3)
    c["dtype"] = "DTYPE_INT8" if k >= 4 else "DTYPE_F32"
    return c


def producer(cfg, i):
    return cfg["layers"][i]["kv_source"] == i


def params_of(cfg):
    """Parameter count, as engine/model.Config.Params counts it."""
    h, qd, kvd, f = cfg["hidden"], cfg["heads"] * cfg["head_dim"], cfg["kv_heads"] * cfg["head_dim"], cfg["ffn_hidden"]
    n = cfg["vocab"] * h + h
    for i in range(len(cfg["layers"])):
        n += 2 * h + qd * h + h * qd + 3 * h * f
        if producer(cfg, i):
            n += 2 * kvd * h
        if cfg["qk_norm"]:
            n += cfg["head_dim"] * (2 if producer(cfg, i) else 1)
        n += h * (cfg["post_attn_norm"] + cfg["post_ffn_norm"])
    if not cfg["tied_embedding"]:
        n += cfg["vocab"] * h
    return n


def rope_table(theta, head_dim, positions):
    """cos then sin of pos*freq for each position, [positions, head_dim],
    computed in float64 and rounded once, as engine/model.RopeCosSin does."""
    half = head_dim // 2
    freqs = torch.tensor([math.pow(theta, -float(2 * k) / head_dim) for k in range(half)], dtype=torch.float64)
    ang = torch.arange(positions, dtype=torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1).float()


def rope(x, cs):
    """Rotate-half RoPE of x [..., T, heads, head_dim] with cs [T, head_dim]."""
    half = x.shape[-1] // 2
    c, s = cs[:, None, :half], cs[:, None, half:]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


class Block(nn.Module):
    """One transformer block's tensors, named as wick names them."""

    def __init__(self, cfg, i):
        super().__init__()
        h, qd, kvd, f, hd = cfg["hidden"], cfg["heads"] * cfg["head_dim"], cfg["kv_heads"] * cfg["head_dim"], cfg["ffn_hidden"], cfg["head_dim"]
        depth = len(cfg["layers"])
        norm = (lambda n: nn.Parameter(torch.zeros(n))) if cfg["norm_one_plus"] else (lambda n: nn.Parameter(torch.ones(n)))
        mat = lambda rows, cols, std: nn.Parameter(torch.randn(rows, cols) * std)
        self.attn_norm = norm(h)
        self.wq = mat(qd, h, h ** -0.5)
        if producer(cfg, i):
            self.wk = mat(kvd, h, h ** -0.5)
            self.wv = mat(kvd, h, h ** -0.5)
        if cfg["qk_norm"]:
            self.q_norm = norm(hd)
            if producer(cfg, i):
                self.k_norm = norm(hd)
        self.wo = mat(h, qd, (qd * 2 * depth) ** -0.5)
        if cfg["post_attn_norm"]:
            self.post_attn_norm = norm(h)
        self.ffn_norm = norm(h)
        self.w_gate = mat(f, h, h ** -0.5)
        self.w_up = mat(f, h, h ** -0.5)
        self.w_down = mat(h, f, (f * 2 * depth) ** -0.5)
        if cfg["post_ffn_norm"]:
            self.post_ffn_norm = norm(h)


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        check_supported(cfg)
        self.cfg = copy.deepcopy(cfg)
        h = cfg["hidden"]
        self.embed = nn.Parameter(torch.randn(cfg["vocab"], h) * h ** -0.5)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(len(cfg["layers"])))
        self.final_norm = nn.Parameter(torch.zeros(h) if cfg["norm_one_plus"] else torch.ones(h))
        if not cfg["tied_embedding"]:
            self.lm_head = nn.Parameter(torch.randn(cfg["vocab"], h) * h ** -0.5)
        for kind, theta in (("g", cfg["rope_theta_global"]), ("l", cfg["rope_theta_local"] or cfg["rope_theta_global"])):
            self.register_buffer("rope_" + kind, rope_table(theta, cfg["head_dim"], cfg["context_len"]), persistent=False)
        self.int8 = cfg["dtype"] == "DTYPE_INT8"
        # frozen maps a matrix's wick name to its exported (q, scale); set
        # by load_exported, it replaces quantising the float parameter.
        self.frozen = {}
        self.use_sdpa = hasattr(F, "scaled_dot_product_attention")

    # Tensors by wick name, in engine/model.Config.TensorSpecs order.
    def named_tensors(self):
        out = [("embed", self.embed)]
        for i, b in enumerate(self.layers):
            for n in ("attn_norm", "wq", "wk", "wv", "q_norm", "k_norm", "wo", "post_attn_norm",
                      "ffn_norm", "w_gate", "w_up", "w_down", "post_ffn_norm"):
                if hasattr(b, n):
                    out.append((f"layers.{i}.{n}", getattr(b, n)))
        out.append(("final_norm", self.final_norm))
        if not self.cfg["tied_embedding"]:
            out.append(("lm_head", self.lm_head))
        return out

    def _norm(self, x, w):
        eps = self.cfg["norm_eps"]
        g = (1 + w) if self.cfg["norm_one_plus"] else w
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    def _linear(self, x, names, ws):
        """x times the row-concatenation of the matrices ws (named names):
        per-row quantisation makes the concatenation's int8 form the
        concatenation of theirs, so one product serves wq|wk|wv or
        w_gate|w_up exactly as separate ones would."""
        if not self.int8:
            w = ws[0] if len(ws) == 1 else torch.cat(ws, 0)
            return F.linear(x, w)
        if all(n in self.frozen for n in names):
            q = torch.cat([self.frozen[n][0] for n in names], 0)
            s = torch.cat([self.frozen[n][1] for n in names], 0)
            return quant.qlinear(x, None, frozen=(q, s))
        w = ws[0] if len(ws) == 1 else torch.cat(ws, 0)
        return quant.qlinear(x, w)

    def _embedding(self):
        if not self.int8:
            return self.embed
        if "embed" in self.frozen:
            q, s = self.frozen["embed"]
            return q * s.reshape(-1, 1)
        return quant.fake_quant(self.embed)

    def _attend(self, q, k, v, window):
        """q [B,T,H,hd], k and v [B,T,KVH,hd] -> [B,T,H*hd]."""
        B, T, H, hd = q.shape
        group = H // k.shape[2]
        scale = self.cfg["attn_scale"] or 1 / math.sqrt(hd)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        i = torch.arange(T, device=q.device)
        allowed = i[None, :] <= i[:, None]
        if window:
            allowed = allowed & (i[:, None] - i[None, :] < window)
        if self.use_sdpa and q.is_cuda:
            dt = torch.bfloat16
            if window:
                o = F.scaled_dot_product_attention(q.to(dt), k.to(dt), v.to(dt), attn_mask=allowed, scale=scale)
            else:
                o = F.scaled_dot_product_attention(q.to(dt), k.to(dt), v.to(dt), is_causal=True, scale=scale)
            o = o.float()
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * scale
            s = s.masked_fill(~allowed, float("-inf"))
            o = torch.matmul(torch.softmax(s, dim=-1), v)
        return o.transpose(1, 2).reshape(B, T, H * hd)

    def forward(self, tokens):
        """tokens [B, T] (int64) at positions 0..T-1 -> logits [B, T, vocab]."""
        cfg = self.cfg
        B, T = tokens.shape
        H, KVH, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
        qd, kvd = H * hd, KVH * hd
        emb = self._embedding()
        x = emb[tokens] * float(cfg["embed_scale"] or 1.0)
        cache = {}
        for i, (lc, b) in enumerate(zip(cfg["layers"], self.layers)):
            cs = (self.rope_l if lc["kind"] == "ATTN_KIND_LOCAL" else self.rope_g)[:T]
            h = self._norm(x, b.attn_norm)
            pre = f"layers.{i}."
            if producer(cfg, i):
                qkv = self._linear(h, [pre + "wq", pre + "wk", pre + "wv"], [b.wq, b.wk, b.wv])
                q, k, v = qkv.split([qd, kvd, kvd], dim=-1)
            else:
                q = self._linear(h, [pre + "wq"], [b.wq])
            q = q.reshape(B, T, H, hd)
            if cfg["qk_norm"]:
                q = self._norm(q, b.q_norm)
            q = rope(q, cs)
            if producer(cfg, i):
                k, v = k.reshape(B, T, KVH, hd), v.reshape(B, T, KVH, hd)
                if cfg["qk_norm"]:
                    k = self._norm(k, b.k_norm)
                k = rope(k, cs)
                if self.int8:  # the int8 KV cache, per position and KV head
                    k, v = quant.fake_quant(k), quant.fake_quant(v)
                cache[i] = (k, v)
            k, v = cache[lc["kv_source"]]
            att = self._attend(q, k, v, lc["window"])
            out = self._linear(att, [pre + "wo"], [b.wo])
            if cfg["post_attn_norm"]:
                out = self._norm(out, b.post_attn_norm)
            x = x + out
            h = self._norm(x, b.ffn_norm)
            gu = self._linear(h, [pre + "w_gate", pre + "w_up"], [b.w_gate, b.w_up])
            gate, up = gu.split([cfg["ffn_hidden"]] * 2, dim=-1)
            if cfg["activation"] == "ACTIVATION_GEGLU_TANH":
                a = F.gelu(gate, approximate="tanh") * up
            else:
                a = F.silu(gate) * up
            out = self._linear(a, [pre + "w_down"], [b.w_down])
            if cfg["post_ffn_norm"]:
                out = self._norm(out, b.post_ffn_norm)
            x = x + out
        h = self._norm(x, self.final_norm)
        if cfg["tied_embedding"]:
            logits = self._linear(h, ["embed"], [self.embed])
        else:
            logits = self._linear(h, ["lm_head"], [self.lm_head])
        if cfg["final_softcap"]:
            c = float(cfg["final_softcap"])
            logits = c * torch.tanh(logits / c)
        return logits


def check_supported(cfg):
    """Refuses configs this trainer cannot express (wick's own checks run in
    the exporter, through engine/model.Config.Validate)."""
    if cfg.get("rope_scaling"):
        raise ValueError("config: rope_scaling is not trained by this trainer")
    if cfg["activation"] not in ("ACTIVATION_GEGLU_TANH", "ACTIVATION_SWIGLU"):
        raise ValueError(f"config: activation {cfg['activation']!r} unknown")
    if cfg["dtype"] not in ("DTYPE_INT8", "DTYPE_F32"):
        raise ValueError(f"config: dtype {cfg['dtype']!r} unknown")
    if cfg["heads"] % cfg["kv_heads"]:
        raise ValueError(f"config: heads ({cfg['heads']}) is not a multiple of kv_heads ({cfg['kv_heads']})")
    for i, l in enumerate(cfg["layers"]):
        src = l["kv_source"]
        if not 0 <= src <= i or cfg["layers"][src]["kv_source"] != src:
            raise ValueError(f"config: layer {i} reads KV from layer {src}, which is not an earlier producer")
