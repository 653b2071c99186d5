#!/usr/bin/env bash
# Throughput of each stage of a staged run (docs/SCALING.md), one core each, beside
# `logveil run` on the same files. Release build; not run in CI.
#
#   benches/stages.sh [LINES_MILLIONS]        (default 2)
#
# Environment:
#   LOGVEIL_BENCH_DIR   cache for the generated logs (default ~/.cache/logveil-bench)
#   LOGVEIL_BIN         the logveil binary (default target/release/logveil, built if missing)
#   LOGVEIL_BUCKETS     buckets of both runs, at least (default 8; logveil takes one per 32 MiB
#                       of input if that is more)
#
# The logs (7 days, one plain file a day, from sample-data/generate.py) are made once and
# cached. Every stage command runs alone with `--threads 1`, timed with /usr/bin/time: CPU
# seconds (user + sys) and peak RSS per task. "Lines per core-second" of a stage is the input's
# lines over the CPU seconds of all its tasks: what one core of a cluster does in that stage.
set -euo pipefail
die() { echo "stages.sh: $*" >&2; exit 1; }
cd "$(dirname "$0")/.."
root=$(pwd)
millions=${1:-2}
bench_dir=${LOGVEIL_BENCH_DIR:-$HOME/.cache/logveil-bench}
logveil=${LOGVEIL_BIN:-$root/target/release/logveil}
buckets=${LOGVEIL_BUCKETS:-8}
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
if [[ ! -x $logveil ]]; then
  cargo build --release --quiet
fi

size=$(python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$millions")
gen_hash=$(sha256sum sample-data/generate.py | cut -c1-12)
logs=$bench_dir/days-${size}M-$gen_hash
if [[ ! -s $logs/lines ]]; then
  days=7
  visitors=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * 1e6 / ($days * 11.0))))" "$millions")
  echo "==> generating ~${size} M lines as $days daily files into $logs (once; cached)"
  rm -rf "$logs.tmp" && mkdir -p "$logs.tmp"
  python3 sample-data/generate.py --out "$logs.tmp" --days "$days" --visitors-per-day "$visitors" --plain > /dev/null
  cat "$logs.tmp"/access-*.log | wc -l > "$logs.tmp/lines"
  rm -rf "$logs" && mv "$logs.tmp" "$logs"
fi
lines=$(cat "$logs/lines")
files=$(ls "$logs"/access-*.log | wc -l)

work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-stages-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME=$work/state

# timed NAME CMD...: appends "NAME cpu_seconds peak_kib wall_seconds" to $work/times; the
# command's output goes to $work/stdout.
timed() {
  local name=$1
  shift
  /usr/bin/time -f "%U %S %M %e" -o "$work/t" "$@" > "$work/stdout"
  read -r user sys rss wall < "$work/t"
  echo "$name $(python3 -c "print($user + $sys)") $rss $wall" >> "$work/times"
}

# One run first, so the managed key ring has its masters and every later run is alike.
"$logveil" run --pipeline pipelines/demo.toml --input "$logs/access-*.log" --output "$work/warm" --threads 2 > /dev/null
timed "run(1-thread)" "$logveil" run --pipeline pipelines/demo.toml --input "$logs/access-*.log" --output "$work/out-run" \
  --threads 1 --buckets "$buckets"

w=$work/w
timed plan "$logveil" stage plan --work "$w" --pipeline pipelines/demo.toml --input "$logs/access-*.log" \
  --output "$work/out-staged" --threads 1 --buckets "$buckets"
# At least one bucket per 32 MiB of input: the plan may choose more than asked.
buckets=$(sed -n 's/^buckets=//p' "$work/stdout")
for ((i = 0; i < files; i++)); do
  timed shard "$logveil" stage shard --work "$w" --task "t$i" --inputs "$i"
done
timed gather "$logveil" stage gather --work "$w"
for ((b = 0; b < buckets; b++)); do
  timed reduce "$logveil" stage reduce --work "$w" --bucket "$b"
done
du -sk "$w/shard" | awk '{print "shard-output-kib", $1}' >> "$work/sizes"
du -sk "$w/reduce" | awk '{print "reduce-output-kib", $1}' >> "$work/sizes"
timed merge "$logveil" stage merge --work "$w"

(cd "$work/out-run" && find . -name '*.parquet' | sort | xargs sha256sum) > "$work/h1"
(cd "$work/out-staged" && find . -name '*.parquet' | sort | xargs sha256sum) > "$work/h2"
same=$(cmp -s "$work/h1" "$work/h2" && echo "byte-identical" || echo "DIFFERENT")

python3 - "$work/times" "$work/sizes" "$lines" "$files" "$buckets" "$same" <<'PY'
import sys, collections
times, sizes, lines, files, buckets, same = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:]
cpu, rss, tasks = collections.defaultdict(float), collections.defaultdict(int), collections.Counter()
for line in open(times):
    name, c, r, w = line.split()
    cpu[name] += float(c); rss[name] = max(rss[name], int(r)); tasks[name] += 1
print(f"input: {lines:,} lines in {files} files; staged run in {buckets} buckets; tables {same} to logveil run")
print(f"{'stage':<16}{'tasks':>6}{'CPU s':>9}{'lines per core-s':>18}{'peak RSS MiB/task':>19}")
for name in ["plan", "shard", "gather", "reduce", "merge", "run(1-thread)"]:
    rate = lines / cpu[name] if cpu[name] > 0 else float("inf")
    print(f"{name:<16}{tasks[name]:>6}{cpu[name]:>9.2f}{rate:>18,.0f}{rss[name] / 1024:>19.0f}")
staged = sum(cpu[n] for n in ["plan", "shard", "gather", "reduce", "merge"])
print(f"{'staged, all':<16}{'':>6}{staged:>9.2f}{lines / staged:>18,.0f}")
for line in open(sizes):
    k, v = line.split()
    print(f"{k}: {int(v) / 1024:.1f} MiB")
PY
