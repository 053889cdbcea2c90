# Builds the PNG card fixtures from the JSON ones, independently of wick's
# own PNG writer: python3 make_png.py (in this directory).
#   v2.png: v2-book.json in a "chara" tEXt chunk.
#   v3.png: v3.json in "ccv3", and a different card in "chara", so a reader
#           that prefers ccv3 (as it must) is told apart from one that does not.
import base64, json, struct, zlib

def chunk(typ, data):
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xffffffff)

def png(texts):
    w = h = 8
    raw = b"".join(b"\x00" + bytes([200, 120, 60]) * w for _ in range(h))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    out += chunk(b"IDAT", zlib.compress(raw))
    for key, obj in texts:
        out += chunk(b"tEXt", key.encode() + b"\x00" + base64.b64encode(json.dumps(obj).encode()))
    return out + chunk(b"IEND", b"")

load = lambda f: json.load(open(f))
open("v2.png", "wb").write(png([("chara", load("v2-book.json"))]))
open("v3.png", "wb").write(png([("chara", {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Not Wren"}}), ("ccv3", load("v3.json"))]))
