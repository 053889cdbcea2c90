#!/bin/sh
# device-prefillgemm-final.sh: the final call's measurement of the
# prefill product's written-out 64x64 tiles (see device-prefillgemm.sh,
# which it runs): the checks, 1B pp512 plans side by side on both tiers,
# and the page's 512-token prefill by kernel on both tiers (STOCKPAGE=1),
# default tile against +tile64+split. Same needs and environment
# (TESTS=0, STOCK=0, PAGE=0, STOCKPAGE=0 to shorten it).
set -u
STOCKPAGE=${STOCKPAGE:-1}
export STOCKPAGE
exec sh "$(dirname "$0")/device-prefillgemm.sh"
