#!/usr/bin/env bash
# Sessions of all pseudonymous events on Polars' in-memory engine, on its streaming engine
# (scan → sink), and partitioned by client (what logveil does): time and peak memory, at two
# input sizes, so the growth shows. Not run in CI. Uses examples/sessions_engines.rs.
#
#   benches/sessions.sh LOG_SMALL LOG_LARGE [PARTITIONS]   (combined logs; default 16 parts)
#
# e.g. benches/sessions.sh ~/.cache/logveil-bench/access-1M-*.log ~/.cache/logveil-bench/access-20M.log
# The events files (pseudonymous) go to a private temporary directory, removed at the end.
set -euo pipefail
die() { echo "sessions.sh: $*" >&2; exit 1; }
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || die "usage: benches/sessions.sh LOG_SMALL LOG_LARGE [PARTITIONS]"
parts=${3:-16}
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example sessions_engines
bin="$target/release/examples/sessions_engines"
work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-sessions.XXXXXX")
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT
printf '%-10s %-16s %10s %10s %12s %10s\n' input mode events visits "wall s" "peak MiB"
for log in "$1" "$2"; do
  name=$(basename "$log" .log)
  events=$("$bin" prepare "$log" "$work/$name.parquet" | awk '{print $2}')
  for mode in in-memory streaming partitioned; do
    extra=()
    [[ $mode == partitioned ]] && extra=("$parts")
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" "$mode" "$work/$name.parquet" "${extra[@]}" > "$work/out"
    read -r wall rss < "$work/time"
    visits=$(awk '{print $2}' "$work/out")
    [[ $mode == partitioned ]] && mode="partitioned/$parts"
    printf '%-10s %-16s %10s %10s %12s %10d\n' "${name:0:10}" "$mode" "$events" "$visits" "$wall" $((rss / 1024))
  done
done
