#!/bin/sh
# Renders testdata/templates/*.jinja for testdata/templates/conversations.json
# with transformers' apply_chat_template (the chat-template references of
# issue 15) on a machine with transformers and tokenizers installed; writes
# $OUT/reference.json (to become testdata/templates/reference.json),
# $OUT/templates.txt and a line in $OUT/summary.txt. Seconds; no GPU used.
set -u
: "${OUT:?set OUT}"
python3 -c 'import transformers, tokenizers, jinja2; print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "jinja2", jinja2.__version__)' >"$OUT/templates.txt" 2>&1
python3 scripts/make_tokenizer_fixtures.py templates --root . >>"$OUT/templates.txt" 2>&1
rc=$?
echo "templates rc=$rc" >>"$OUT/summary.txt"
cp testdata/templates/reference.json "$OUT/reference.json"
exit $rc
