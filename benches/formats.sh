#!/usr/bin/env bash
# Lines per second of `logveil run` per input format, on the same traffic: the combined log
# of benches/compare.sh rewritten by benches/convert.py as nginx JSON, Caddy JSON, W3C (IIS),
# CloudFront, a custom nginx `log_format` and JSON through a field mapping. Not run in CI.
#
#   benches/formats.sh [LINES_MILLIONS]      (default 1)
#
# Environment: LOGVEIL_BENCH_DIR (cache, default ~/.cache/logveil-bench), LOGVEIL_BIN
# (default target/release/logveil, built if missing), LOGVEIL_BENCH_ROUNDS (default 3: every
# format once per round, alternately; the median is reported), LOGVEIL_BENCH_THREADS (2).
#
# Prints per format: median wall seconds, lines/s, CPU seconds, peak RSS, the ratio of its
# time to combined's (the issue's goal: JSON and W3C within 2x), and whether its tables are
# byte-identical to combined's.
set -euo pipefail
die() { echo "formats.sh: $*" >&2; exit 1; }
cd "$(dirname "$0")/.."
root=$(pwd)
millions=${1:-1}
[[ $millions =~ ^[0-9]+([.][0-9]+)?$ ]] || die "LINES_MILLIONS must be a number like 1 or 0.2"
rounds=${LOGVEIL_BENCH_ROUNDS:-3}
threads=${LOGVEIL_BENCH_THREADS:-2}
bench_dir=${LOGVEIL_BENCH_DIR:-$HOME/.cache/logveil-bench}
logveil=${LOGVEIL_BIN:-$root/target/release/logveil}
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
if [[ ! -x $logveil ]]; then
  echo "==> building logveil (release; about 30 min on 2 cores from clean)"
  cargo build --release --quiet
fi
mkdir -p "$bench_dir"
size=$(python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$millions")
gen_hash=$(sha256sum sample-data/generate.py | cut -c1-12)
combined="$bench_dir/access-${size}M-$gen_hash.log"
if [[ ! -s $combined ]]; then
  # The same log as compare.sh makes (and caches) for this size.
  echo "==> generating $combined (once; cached)"
  days=7
  visitors=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * 1e6 / ($days * 11.0))))" "$millions")
  tmp=$(mktemp -d "$bench_dir/gen.XXXXXX")
  python3 sample-data/generate.py --out "$tmp" --days "$days" --visitors-per-day "$visitors" --plain > /dev/null
  cat "$tmp"/access-*.log > "$tmp/all.log"
  wc -l < "$tmp/all.log" | tr -d ' ' > "$combined.lines"
  mv "$tmp/all.log" "$combined"
  rm -rf "$tmp"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-formats.XXXXXX")
trap 'rm -rf "$work"' EXIT
lines=$(wc -l < "$combined")
formats="combined nginx_json caddy w3c cloudfront custom json"
for f in $formats; do
  [[ $f == combined ]] && continue
  converted="$bench_dir/$(basename "$combined" .log).$f.log"
  if [[ ! -s $converted ]]; then
    echo "==> converting to $f (once; cached)"
    python3 benches/convert.py "$f" < "$combined" > "$converted.part" && mv "$converted.part" "$converted"
  fi
done
input_of() { [[ $1 == combined ]] && echo "$combined" || echo "$bench_dir/$(basename "$combined" .log).$1.log"; }
pipeline_of() { # FORMAT -> a pipeline file
  local p="$work/$1.toml"
  {
    echo 'site = "example.ru"'
    echo "inputs = [\"$(input_of "$1")\"]"
    echo 'site_hosts = ["example.ru", "www.example.ru", "shop.example.ru"]'
    echo 'time_zone = "Europe/Moscow"'
    echo 'key = "ephemeral"'
    echo 'k = 5'
    echo "state_dir = \"$work/state-$1\""
    case $1 in
      custom) echo "log_format = '\$remote_addr [\$time_local] \"\$request\" \$status \$body_bytes_sent \"\$http_referer\" \"\$http_user_agent\" rt=\$request_time \"\$host\"'" ;;
      json)
        echo 'format = "json"'
        echo '[json_fields]'
        echo 'client = "client.ip"'
        echo 'time = "@timestamp"'
        echo 'method = "http.method"'
        echo 'url = "http.url"'
        echo 'status = "http.status"'
        echo 'bytes = "http.bytes"'
        echo 'referrer = "http.referrer"'
        echo 'user_agent = "http.agent"' ;;
      *) echo "format = \"$1\"" ;;
    esac
  } > "$p"
  echo "$p"
}
echo "==> $lines lines of the same traffic per format, $rounds rounds, --threads $threads"
for r in $(seq 1 "$rounds"); do
  for f in $formats; do
    out="$work/out-$f"
    rm -rf "$out" "$work/state-$f"
    /usr/bin/time -v "$logveil" run --pipeline "$(pipeline_of "$f")" --input "$(input_of "$f")" \
      --output "$out" --threads "$threads" > /dev/null 2> "$work/time-$f-$r.txt" \
      || { cat "$work/time-$f-$r.txt" >&2; die "logveil failed on $f"; }
    (cd "$out" && find . -name '*.parquet' | sort | xargs sha256sum) > "$work/hashes-$f.txt"
  done
done
python3 - "$work" "$lines" "$rounds" $formats <<'PY'
import re, statistics, sys
work, lines, rounds, formats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def parse(path):
    t = open(path).read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.+)", t).group(1)
    secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    cpu = float(re.search(r"User time \(seconds\): (.+)", t).group(1)) + float(re.search(r"System time \(seconds\): (.+)", t).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    return secs, cpu, rss
res = {}
for f in formats:
    runs = [parse(f"{work}/time-{f}-{r}.txt") for r in range(1, rounds + 1)]
    res[f] = tuple(statistics.median(x[i] for x in runs) for i in range(3))
ref = open(f"{work}/hashes-combined.txt").read()
base = res["combined"][0]
print(f"{'format':<12}{'wall s':>9}{'lines/s':>12}{'CPU s':>9}{'peak MiB':>10}{'× combined':>12}  same tables")
for f in formats:
    wall, cpu, rss = res[f]
    same = "yes" if open(f"{work}/hashes-{f}.txt").read() == ref else "no"
    print(f"{f:<12}{wall:>9.2f}{lines / wall:>12,.0f}{cpu:>9.2f}{rss / 1024:>10.0f}{wall / base:>12.2f}  {same}")
PY
