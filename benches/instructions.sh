#!/usr/bin/env bash
# Instructions a build executes per log line, counted by valgrind's callgrind: deterministic,
# unlike wall time on a shared machine, so it can show a 2 % step that timing cannot. Runs the
# demo pipeline on the first LINES lines of LOG and on its first 1,000 lines (the fixed cost:
# start-up, nearly all of it compiling the user-agent regexes), one thread, warm state dir,
# and prints both counts and the per-line difference. How docs/PERFORMANCE.md's ninth session
# measured its steps. Not run in CI. Needs valgrind (Debian package 'valgrind').
#
#   benches/instructions.sh BIN [LOG] [LINES]
#
# e.g. benches/instructions.sh target/release/logveil "$HOME/.cache/logveil-bench/access-1M.log" 200000
# Keep the callgrind files (callgrind_annotate --inclusive=yes FILE) with KEEP=DIR.
set -euo pipefail

die() { echo "instructions.sh: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: benches/instructions.sh BIN [LOG] [LINES]"
bin=$1 log=${2:-$HOME/.cache/logveil-bench/access-1M.log} lines=${3:-200000}
[[ -x $bin ]] || die "$bin is not an executable"
[[ -r $log ]] || die "cannot read $log (benches/compare.sh makes the benchmark logs)"
[[ $lines =~ ^[0-9]+$ && $lines -gt 1000 ]] || die "LINES is a number above 1000"
command -v valgrind > /dev/null || die "valgrind is needed (Debian package 'valgrind')"
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-instr.XXXXXX")
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME=$work/state
head -n "$lines" "$log" > "$work/many.log"
head -n 1000 "$log" > "$work/few.log"

count() { # INPUT NAME: instructions of one run
  rm -rf "$work/out"
  valgrind --tool=callgrind --callgrind-out-file="$work/$2.cg" "$bin" run \
    --pipeline pipelines/demo.toml --input "$1" --output "$work/out" --threads 1 \
    > /dev/null 2> "$work/$2.err" || { tail -5 "$work/$2.err" >&2; die "the run on $1 failed"; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/$2.err"
}
count "$work/few.log" warm > /dev/null # a first run sets up the state dir's key ring
few=$(count "$work/few.log" few)
many=$(count "$work/many.log" many)
echo "instructions: $many for $lines lines, $few for 1000 lines"
echo "per line beyond the fixed cost: $(( (many - few) / (lines - 1000) ))"
if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$work"/few.cg "$work"/many.cg "$KEEP"/; fi
