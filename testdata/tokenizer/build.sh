#!/bin/sh
# build.sh trains the tiny SentencePiece BPE tokenizer used by wick's tests:
# tokenizer.model, from corpus.txt (original text written for this purpose).
#
# Rebuild (needs Debian's `sentencepiece` package, 0.1.97, for spm_train):
#
#	sh testdata/tokenizer/build.sh
#
# The options match what github.com/eliben/go-sentencepiece accepts and what
# Gemma's tokenizer looks like: BPE with byte fallback, no normalisation, no
# dummy prefix, whitespace kept as is, digits split, and the Gemma special ids
# pad 0, eos 1, bos 2, unk 3, then the two turn markers as user-defined symbols
# (ids 4 and 5), which the tokenizer matches whole wherever they occur in text.
# One thread and a fixed seed keep the output the same from run to run.
set -eu
cd "$(dirname "$0")"
spm_train \
	--input=corpus.txt \
	--model_prefix=tokenizer \
	--model_type=bpe \
	--vocab_size=384 \
	--byte_fallback=true \
	--normalization_rule_name=identity \
	--add_dummy_prefix=false \
	--remove_extra_whitespaces=false \
	--split_digits=true \
	--character_coverage=1.0 \
	--user_defined_symbols='<start_of_turn>,<end_of_turn>' \
	--pad_id=0 --pad_piece='<pad>' \
	--eos_id=1 --eos_piece='<eos>' \
	--bos_id=2 --bos_piece='<bos>' \
	--unk_id=3 --unk_piece='<unk>' \
	--num_threads=1 \
	--random_seed=1 \
	--minloglevel=1
# tokenizer.vocab is a by-product listing of the pieces; the model holds them too.
rm -f tokenizer.vocab
