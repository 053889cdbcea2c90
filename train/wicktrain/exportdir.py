"""The export directory: the trained tensors as wick stores them, handed to
the Go exporter (train/export), which validates the config with wick's own
rules and writes the manifest and shards through engine/format.

Layout:

    export.json     {"name", "config" (manifest Config in protobuf JSON
                    form), "tensors": [{"name", "dtype", "shape", "file",
                    "offset"}], "meta" (how it was trained)}
    tensors-N.bin   raw little-endian tensor bytes, at most MAX_FILE each

int8 matrices are stored as their q values ("int8") with a float32 per-row
scale tensor named "<name>.scale", exactly the (q, scale) the forward pass
used; norm vectors (and every matrix of a float32 model) as "f32".
"""

import json
import os
import sys

import numpy as np
import torch

from . import quant

MAX_FILE = 15 << 20  # the device returns files of at most 16 MiB


def _le(a):
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def write(model, out_dir, name, meta):
    """Writes model's tensors and config into out_dir (created; files are
    written to temporary names and renamed)."""
    os.makedirs(out_dir, exist_ok=True)
    int8 = model.cfg["dtype"] == "DTYPE_INT8"
    entries, files = [], []
    cur, cur_len = None, 0

    def put(tname, dtype, arr):
        nonlocal cur, cur_len
        data = _le(arr)
        if cur is None or cur_len + len(data) > MAX_FILE:
            cur = bytearray()
            files.append(cur)
            cur_len = 0
        entries.append({"name": tname, "dtype": dtype, "shape": list(arr.shape),
                        "file": f"tensors-{len(files) - 1}.bin", "offset": cur_len})
        cur += data
        cur_len += len(data)

    with torch.no_grad():
        for tname, p in model.named_tensors():
            t = p.detach().float().cpu()
            if t.dim() == 2 and int8:
                if tname in model.frozen:
                    q, s = model.frozen[tname]
                else:
                    q, s = quant.quantize(t)
                put(tname, "int8", q.to(torch.int8).numpy())
                put(tname + ".scale", "f32", s.reshape(-1).numpy().astype(np.float32))
            else:
                put(tname, "f32", t.numpy().astype(np.float32))
    for i, data in enumerate(files):
        _atomic(os.path.join(out_dir, f"tensors-{i}.bin"), bytes(data))
    doc = {"name": name, "config": model.cfg, "tensors": entries, "meta": meta}
    _atomic(os.path.join(out_dir, "export.json"), json.dumps(doc, indent=1).encode())


def _atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read(out_dir):
    """Returns (doc, tensors): tensors maps each name to a numpy array."""
    with open(os.path.join(out_dir, "export.json")) as f:
        doc = json.load(f)
    blobs, tensors = {}, {}
    for e in doc["tensors"]:
        if e["file"] not in blobs:
            with open(os.path.join(out_dir, e["file"]), "rb") as f:
                blobs[e["file"]] = f.read()
        dt = np.dtype("<i1") if e["dtype"] == "int8" else np.dtype("<f4")
        n = int(np.prod(e["shape"]))
        a = np.frombuffer(blobs[e["file"]], dtype=dt, count=n, offset=e["offset"]).reshape(e["shape"])
        tensors[e["name"]] = a
    return doc, tensors


def load(model_cls, out_dir):
    """Builds a model from an export directory. In int8 mode its matrices are
    frozen to the stored (q, scale), so it computes with exactly the weights
    wick loads."""
    doc, tensors = read(out_dir)
    m = model_cls(doc["config"])
    int8 = doc["config"]["dtype"] == "DTYPE_INT8"
    with torch.no_grad():
        for tname, p in m.named_tensors():
            a = torch.from_numpy(tensors[tname].astype(np.float32))
            if p.dim() == 2 and int8:
                s = torch.from_numpy(tensors[tname + ".scale"].astype(np.float32)).reshape(-1, 1)
                m.frozen[tname] = (a, s)
                p.copy_(a * s)
            else:
                p.copy_(a.reshape(p.shape))
    return doc, m


if __name__ == "__main__":
    sys.exit("exportdir is a library; see train/train.py")
