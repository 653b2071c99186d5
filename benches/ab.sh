#!/usr/bin/env bash
# Two logveil builds on the same input, alternately: wall and CPU seconds, peak RSS, the
# stages' times (LOGVEIL_PROFILE), medians, and whether every published table is the same
# byte for byte. How docs/PERFORMANCE.md compares a change with the build before it. Not run
# in CI.
#
#   benches/ab.sh OLD_BIN NEW_BIN 'INPUT_GLOB' [ROUNDS] [THREADS]
#
# e.g. (the build of the last commit kept aside, then the working tree's):
#   git stash && cargo build --release && cp target/release/logveil /tmp/logveil-before && git stash pop
#   cargo build --release
#   benches/ab.sh /tmp/logveil-before target/release/logveil "$HOME/.cache/logveil-bench/access-5M-*.log" 3 2
#
# The demo pipeline, one state dir shared by both builds and warmed by a first run (a fresh
# managed ring shards twice on its first run), page cache warm. Use an even number of rounds.
set -euo pipefail

die() { echo "ab.sh: $*" >&2; exit 1; }
[[ $# -ge 3 ]] || die "usage: benches/ab.sh OLD_BIN NEW_BIN 'INPUT_GLOB' [ROUNDS] [THREADS]"
old=$1 new=$2 input=$3 rounds=${4:-3} threads=${5:-2}
[[ -x $old && -x $new ]] || die "both binaries must exist and be executable"
[[ $rounds =~ ^[1-9][0-9]*$ && $threads =~ ^[1-9][0-9]*$ ]] || die "ROUNDS and THREADS are positive integers"
[[ -x /usr/bin/time ]] || die "GNU time is needed (Debian package 'time')"
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
export XDG_STATE_HOME=$work/state
# Both builds run from fresh copies in the work dir: an older copy of a build ran slower, and
# with a smaller peak RSS, than a fresh copy of the same bytes (cause not established; the
# page cache's state for the older file is the likeliest). An A/A run of one build
# (docs/PERFORMANCE.md, twelfth session), a copy made two hours before against a fresh one:
# wall 0.95x, peak RSS 143 -> 149.5 MiB; two fresh copies: 1.01x, 150 -> 150.5 MiB.
cp "$old" "$work/old-bin"
cp "$new" "$work/new-bin"
old=$work/old-bin new=$work/new-bin

once() { # LABEL BIN: one run; appends "wall cpu rss_mib shard reduce disclose" to $work/LABEL
  local label=$1 bin=$2
  rm -rf "$work/out-$label"
  LOGVEIL_PROFILE=1 /usr/bin/time -f "time %e %U %S %M" "$bin" run --pipeline pipelines/demo.toml \
    --input "$input" --output "$work/out-$label" --threads "$threads" > /dev/null 2> "$work/err" \
    || { cat "$work/err" >&2; die "$label failed"; }
  awk '/^time / { wall = $2; cpu = $3 + $4; rss = $5 / 1024 }
       /^profile: shard/ { split($0, f, ": "); shard = f[3] + 0 }
       /^profile: reduce \(/ { split($0, f, ": "); reduce = f[3] + 0 }
       /^profile: disclose/ { split($0, f, ": "); disclose = f[3] + 0 }
       END { printf "%.2f %.2f %.0f %s %s %s\n", wall, cpu, rss, shard, reduce, disclose }' \
    "$work/err" >> "$work/$label"
  tail -n 1 "$work/$label" | awk -v l="$label" '{ printf "    %-4s wall %6.2f s  CPU %6.2f s  peak %5d MiB  shard %s  reduce %s  disclose %s\n", l, $1, $2, $3, $4, $5, $6 }'
}

echo "==> warming the state dir and the page cache"
"$new" run --pipeline pipelines/demo.toml --input "$input" --output "$work/warm" \
  --threads "$threads" > /dev/null 2>&1 || die "the warm-up run failed"
# Odd rounds run the old build first, even rounds the new one: whichever runs second may find
# the machine in another state (caches, the file system's recently freed inodes), and an A/A
# run of one binary against itself with a fixed order measured 0.93 on the 5 M log.
for r in $(seq "$rounds"); do
  echo "==> round $r/$rounds"
  if ((r % 2)); then
    once old "$old"
    once new "$new"
  else
    once new "$new"
    once old "$old"
  fi
done

hashes() { (cd "$1" && find . -name '*.parquet' | sort | xargs sha256sum); }
same=different
[[ $(hashes "$work/out-old") == $(hashes "$work/out-new") ]] && same="the same, byte for byte"

python3 - "$work/old" "$work/new" "$same" << 'EOF'
import statistics, sys
rows = {n: [list(map(float, l.split())) for l in open(p)] for n, p in (("old", sys.argv[1]), ("new", sys.argv[2]))}
med = {n: [statistics.median(c) for c in zip(*r)] for n, r in rows.items()}
names = ["wall s", "CPU s", "peak RSS MiB", "shard s", "reduce s", "disclose s"]
print(f"medians of {len(rows['old'])} rounds")
print(f"{'':14}{'old':>10}{'new':>10}{'new/old':>10}")
for i, name in enumerate(names):
    o, n = med["old"][i], med["new"][i]
    print(f"{name:14}{o:10.2f}{n:10.2f}{(n / o if o else float('nan')):10.2f}")
print(f"tables: {sys.argv[3]}")
EOF
