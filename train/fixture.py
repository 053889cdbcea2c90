#!/usr/bin/env python3
"""Writes the parity fixture: the trainer's own int8 forward pass over fixed
tokens, with the exported weights, for internal/trainparity to compare with
wick's CPU backend.

    python3 train/fixture.py -export /tmp/export -data train/data/out \
        -model models/wick-cai-21m -out internal/trainparity/testdata

The model is rebuilt from the export directory with its matrices frozen to
the stored (q, scale) pairs, and the matmuls accumulate in float64, which is
exact for int8 products: the only differences left to wick are float32
rounding order in norms, softmax and RoPE. The tokens are the first -n of
the validation split (longer than the local window, so local layers drop
positions). Writes parity.json (model directory relative to the repository,
tokens, positions, vocab) and parity.f32 (little-endian float32 logits,
[len(positions), vocab]).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wicktrain import exportdir, model as wm, quant  # noqa: E402


EXACT_PREFIX = 8


def positions_for(n, window):
    """The first EXACT_PREFIX positions (short enough that float32 rounding
    order has not yet flipped an int8 rounding, so wick must agree to
    rounding error), positions on either side of the window's edge, and the
    last."""
    ps = set(range(min(EXACT_PREFIX, n))) | {n // 2, n - 1}
    for w in (window - 1, window, window + 1, 2 * window):
        if 0 <= w < n:
            ps.add(w)
    return sorted(ps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-export", required=True)
    ap.add_argument("-data", required=True, help="corpus directory with val.bin")
    ap.add_argument("-model", required=True, help="the exported model's directory, relative to the repository root")
    ap.add_argument("-out", required=True)
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args(argv)

    quant.set_fast_cpu(False)  # float64 accumulation: exact
    torch.set_grad_enabled(False)
    doc, m = exportdir.load(wm.Model, args.export)
    m.eval()
    tokens = np.fromfile(os.path.join(args.data, "val.bin"), dtype="<u2")[: args.n].astype(np.int64)
    if tokens.size < args.n:
        sys.exit(f"fixture: {args.data}/val.bin has {tokens.size} tokens, want {args.n}")
    windows = [l["window"] for l in doc["config"]["layers"] if l["window"]]
    pos = positions_for(args.n, min(windows) if windows else args.n // 2)
    logits = m(torch.from_numpy(tokens)[None, :])[0]
    sel = logits[pos].float().numpy().astype("<f4")
    os.makedirs(args.out, exist_ok=True)
    sel.tofile(os.path.join(args.out, "parity.f32"))
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump({"model": args.model, "tokens": tokens.tolist(), "positions": pos,
                   "vocab": doc["config"]["vocab"], "exact_prefix": EXACT_PREFIX,
                   "torch": torch.__version__}, f)
        f.write("\n")
    print(f"fixture: {len(pos)} positions of {args.n} tokens, logits in [{sel.min():.3f}, {sel.max():.3f}]")


if __name__ == "__main__":
    main()
