# device-step.sh: what every scripts/device-*.sh does for each of its steps,
# sourced by them (POSIX sh). step NAME CMD... runs CMD with its output in
# $OUT/NAME.txt and appends "NAME rc=STATUS SECONDSs" to $OUT/summary.txt,
# so a failed or slow step is seen in one file and never stops the others.
step() {
	name=$1
	shift
	t0=$(date +%s)
	"$@" >"$OUT/$name.txt" 2>&1
	echo "$name rc=$? $(($(date +%s) - t0))s" >>"$OUT/summary.txt"
}
