#!/usr/bin/env bash
# Two logveil builds as a nightly job: each build runs every day's log of DAYS_DIR in date
# order on a state dir of its own (so each night loads the nights before from its visit log,
# with returning visitors on), and the script prints each night's wall time and peak RSS and
# whether every published table of every night is the same byte for byte. What changes to the
# visit log, its keys or its loading are checked with (docs/PERFORMANCE.md, tenth session).
# Not run in CI.
#
#   benches/nightly.sh OLD_BIN NEW_BIN [DAYS_DIR] [THREADS]
#
# DAYS_DIR holds one log per day, named so that `ls` sorts them by date (default: the 7 days
# of ~/.cache/logveil-bench/days-5M-*, which sample-data/generate.py makes; command in
# docs/PERFORMANCE.md). The demo pipeline, cold state dirs, page cache warm.
set -euo pipefail

die() { echo "nightly.sh: $*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: benches/nightly.sh OLD_BIN NEW_BIN [DAYS_DIR] [THREADS]"
old=$1 new=$2 threads=${4:-2}
days=${3:-$(ls -d "$HOME"/.cache/logveil-bench/days-5M-* 2> /dev/null | head -1)}
[[ -x $old && -x $new ]] || die "both binaries must exist and be executable"
[[ -n $days && -d $days ]] || die "no DAYS_DIR (make one with sample-data/generate.py --out DIR --days 7 --plain)"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "THREADS is a positive integer"
[[ -x /usr/bin/time ]] || die "GNU time is needed (Debian package 'time')"
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-nightly.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
# Both builds run from fresh copies in the work dir: an older copy of a build ran slower, and
# with a smaller peak RSS, than a fresh copy of the same bytes (cause not established; the
# page cache's state for the older file is the likeliest). An A/A run of one build
# (docs/PERFORMANCE.md, twelfth session), a copy made two hours before against a fresh one:
# wall 0.95x, peak RSS 143 -> 149.5 MiB; two fresh copies: 1.01x, 150 -> 150.5 MiB.
cp "$old" "$work/old-bin"
cp "$new" "$work/new-bin"
old=$work/old-bin new=$work/new-bin

logs=("$days"/*.log)
[[ -e ${logs[0]} ]] || die "no *.log in $days"
for build in old new; do
  bin=${!build}
  for log in "${logs[@]}"; do
    night=$(basename "$log" .log)
    XDG_STATE_HOME=$work/state-$build /usr/bin/time -f "%e %M" -o "$work/time" \
      "$bin" run --pipeline pipelines/demo.toml --input "$log" \
      --output "$work/out-$build/$night" --threads "$threads" > /dev/null 2> "$work/err" ||
      { tail -5 "$work/err" >&2; die "$build build failed on $log"; }
    read -r wall rss < "$work/time"
    echo "$night $wall $((rss / 1024))" >> "$work/$build.txt"
  done
done

printf '%-24s %10s %10s %12s %12s\n' night "old wall" "new wall" "old RSS MiB" "new RSS MiB"
paste -d' ' "$work/old.txt" "$work/new.txt" | while read -r night ow orss _ nw nrss; do
  printf '%-24s %10s %10s %12s %12s\n' "$night" "$ow" "$nw" "$orss" "$nrss"
done
digest() { (cd "$1" && find . -name '*.parquet' | sort | xargs md5sum); }
if cmp -s <(digest "$work/out-old") <(digest "$work/out-new"); then
  echo "tables: all $(digest "$work/out-new" | wc -l) the same byte for byte"
else
  echo "tables: DIFFERENT:"
  diff <(digest "$work/out-old") <(digest "$work/out-new") | grep '^[<>]' | head -20
  exit 1
fi
