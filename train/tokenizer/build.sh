#!/bin/sh
# build.sh trains the default model's SentencePiece BPE tokenizer,
# train/tokenizer/tokenizer.model, from the corpus's training split.
#
#	python3 train/data/build_corpus.py extract -out train/data/out
#	sh train/tokenizer/build.sh train/data/out/spm_input.txt
#
# It needs Debian's `sentencepiece` package (0.1.97) for spm_train. The
# options are those of testdata/tokenizer/build.sh (what
# github.com/eliben/go-sentencepiece accepts and Gemma's tokenizer looks like:
# BPE with byte fallback, no normalisation, no dummy prefix, whitespace kept,
# digits split; pad 0, eos 1, bos 2, unk 3, then <start_of_turn> and
# <end_of_turn> as user-defined symbols, ids 4 and 5), with a vocabulary of
# 8192. One thread and a fixed seed keep the output the same from run to run.
set -eu
input=${1:?usage: build.sh CORPUS.txt}
out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
spm_train \
	--input="$input" \
	--model_prefix="$tmp/tokenizer" \
	--model_type=bpe \
	--vocab_size=8192 \
	--byte_fallback=true \
	--normalization_rule_name=identity \
	--add_dummy_prefix=false \
	--remove_extra_whitespaces=false \
	--split_digits=true \
	--character_coverage=0.9999 \
	--max_sentence_length=16384 \
	--input_sentence_size=400000 \
	--shuffle_input_sentence=true \
	--user_defined_symbols='<start_of_turn>,<end_of_turn>' \
	--pad_id=0 --pad_piece='<pad>' \
	--eos_id=1 --eos_piece='<eos>' \
	--bos_id=2 --bos_piece='<bos>' \
	--unk_id=3 --unk_piece='<unk>' \
	--num_threads=1 \
	--random_seed=1 \
	--minloglevel=1
mv "$tmp/tokenizer.model" "$out/tokenizer.model"
