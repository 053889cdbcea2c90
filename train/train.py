#!/usr/bin/env python3
"""Trains a wick model natively in int8 and writes an export directory.

    python3 train/train.py -data train/data/out -config default -minutes 9 -out /tmp/export

The data directory is what train/data/build_corpus.py writes (train.bin and
val.bin of uint16 token ids, meta.json). The schedule is by time when
-minutes is given (warm-up, then cosine decay over the time budget), else by
-steps. The export directory (see wicktrain/exportdir.py) goes to the Go
exporter: go run ./train/export -in DIR -tokenizer ... -out models/NAME.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wicktrain import exportdir, model as wm, quant  # noqa: E402


def config_for(name, vocab):
    if name == "default":
        return wm.default_config(vocab)
    if name == "tiny":
        return wm.tiny_config(vocab)
    if name.startswith("variant:"):
        return wm.variant_config(vocab, name.split(":", 1)[1])
    raise ValueError(f"-config {name!r}: want default, tiny or variant:NAME ({', '.join(wm.VARIANTS)})")


def load_tokens(path):
    a = np.fromfile(path, dtype="<u2")
    if a.size < 2:
        raise ValueError(f"{path}: {a.size} tokens, too few to train on")
    return torch.from_numpy(a.astype(np.int64))


def val_batches(val, T, batch, limit):
    """Non-overlapping windows of T+1 tokens from the start of val, at most
    limit batches: the same windows every evaluation."""
    n = min((val.numel() - 1) // T, limit * batch)
    w = val[: n * T + 1]
    xs = [w[i * T: i * T + T + 1] for i in range(n)]
    return [torch.stack(xs[i: i + batch]) for i in range(0, n, batch)]


def evaluate(m, batches, device):
    m.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for b in batches:
            b = b.to(device)
            logits = m(b[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b[:, 1:].reshape(-1), reduction="sum")
            tot += loss.item()
            cnt += b[:, 1:].numel()
    m.train()
    return tot / max(cnt, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-data", required=True)
    ap.add_argument("-config", default="default")
    ap.add_argument("-name", default="wick-cai")
    ap.add_argument("-out", required=True, help="export directory to write")
    ap.add_argument("-minutes", type=float, default=0)
    ap.add_argument("-steps", type=int, default=0)
    ap.add_argument("-batch", type=int, default=32)
    ap.add_argument("-seq", type=int, default=0, help="sequence length (default: the config's context)")
    ap.add_argument("-lr", type=float, default=2e-3)
    ap.add_argument("-warmup", type=float, default=0.03, help="fraction of the run")
    ap.add_argument("-wd", type=float, default=0.1)
    ap.add_argument("-seed", type=int, default=1)
    ap.add_argument("-eval-batches", type=int, default=16)
    ap.add_argument("-eval-every", type=float, default=60, help="seconds between evaluations")
    ap.add_argument("-compile", action="store_true", help="torch.compile the model (PyTorch 2)")
    ap.add_argument("-log", default="", help="JSON lines of progress")
    args = ap.parse_args(argv)
    if (args.minutes > 0) == (args.steps > 0):
        ap.error("give exactly one of -minutes and -steps")

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        quant.set_fast_cpu(True)
    with open(os.path.join(args.data, "meta.json")) as f:
        meta = json.load(f)
    cfg = config_for(args.config, meta["vocab"])
    T = args.seq or cfg["context_len"]
    if T > cfg["context_len"]:
        ap.error(f"-seq {T} is above the config's context_len {cfg['context_len']}")
    train = load_tokens(os.path.join(args.data, "train.bin")).to(device)
    val = load_tokens(os.path.join(args.data, "val.bin"))
    vb = val_batches(val, T, args.batch, args.eval_batches)

    m = wm.Model(cfg).to(device)
    fwd = torch.compile(m) if args.compile else m
    decay = [p for _, p in m.named_tensors() if p.dim() == 2]
    rest = [p for _, p in m.named_tensors() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    logf = open(args.log, "a") if args.log else None

    def log(**kv):
        line = json.dumps(kv)
        print(line, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    nparams = wm.params_of(cfg)
    log(event="start", config=args.config, params=nparams, device=device,
        gpu=torch.cuda.get_device_name(0) if device == "cuda" else "", torch=torch.__version__,
        train_tokens=train.numel(), val_tokens=val.numel(), batch=args.batch, seq=T)
    budget = args.minutes * 60
    t0 = time.time()
    last_eval = t0
    step, seen = 0, 0
    # The corpus is small next to what a long run reads (many epochs), so the
    # exported weights are those of the best validation loss seen.
    best = (float("inf"), 0, None)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    while True:
        el = time.time() - t0
        p = el / budget if budget else step / args.steps
        if p >= 1:
            break
        lr = args.lr * (p / args.warmup if p < args.warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (p - args.warmup) / (1 - args.warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, train.numel() - T - 1, (args.batch,), device=device, generator=gen)
        idx = starts[:, None] + torch.arange(T + 1, device=device)[None, :]
        b = train[idx]
        logits = fwd(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        step += 1
        seen += b[:, 1:].numel()
        if step % 50 == 0 or step <= 3:
            el = time.time() - t0
            log(event="step", step=step, loss=round(loss.item(), 4), grad_norm=round(gn.item(), 3), lr=lr,
                tokens=seen, seconds=round(el, 1), tok_per_s=round(seen / max(el, 1e-9)))
        if time.time() - last_eval > args.eval_every:
            vl = evaluate(m, vb, device)
            log(event="eval", step=step, val_loss=round(vl, 4), seconds=round(time.time() - t0, 1))
            if vl < best[0]:
                best = (vl, step, {k: v.detach().clone() for k, v in m.state_dict().items()})
            last_eval = time.time()
    train_s = time.time() - t0
    vl = evaluate(m, vb, device)
    final_vl, best_step = vl, step
    if best[2] is not None and best[0] < vl:
        m.load_state_dict(best[2])
        vl, best_step = best[0], best[1]
    summary = dict(config=args.config, params=nparams, steps=step, tokens=seen, batch=args.batch, seq=T,
                   train_seconds=round(train_s, 1), tok_per_s=round(seen / max(train_s, 1e-9)),
                   val_loss=round(vl, 4), exported_step=best_step, final_val_loss=round(final_vl, 4),
                   val_tokens_evaluated=sum(x[:, 1:].numel() for x in vb),
                   device=device, gpu=torch.cuda.get_device_name(0) if device == "cuda" else "",
                   torch=torch.__version__, lr=args.lr, seed=args.seed, data=meta)
    log(event="done", **{k: v for k, v in summary.items() if k != "data"})
    exportdir.write(m.cpu(), args.out, args.name, summary)
    return summary


if __name__ == "__main__":
    main()
