#!/usr/bin/env bash
# Side-by-side speed and memory of logveil, GoAccess and hand-written DuckDB SQL on one large
# plain combined-format log. Not run in CI.
#
#   benches/compare.sh [LINES_MILLIONS]        (default 5, e.g. 0.2 for a quick try)
#
# Environment:
#   LOGVEIL_BENCH_DIR      cache for the generated log and the DuckDB venv
#                          (default ~/.cache/logveil-bench)
#   LOGVEIL_BENCH_ROUNDS   rounds; each round runs every tool once, alternately (default 3)
#   LOGVEIL_BENCH_THREADS  logveil --threads and DuckDB's threads (default 2)
#   LOGVEIL_BENCH_TOOLS    which tools to run (default "logveil goaccess duckdb")
#   LOGVEIL_BIN            the logveil binary (default target/release/logveil, built if missing);
#                          the deploy build is `cargo build --profile release-lto`, then
#                          LOGVEIL_BIN=target/release-lto/logveil (docs/PERFORMANCE.md gives both)
#
# The log (about LINES_MILLIONS million lines, ~260 bytes a line) is made once by
# sample-data/generate.py and cached under the name of its size and of the generator's hash.
# Installs what is missing and says so: goaccess and time (Debian packages, needs root) and
# DuckDB (pip, into a venv in the cache directory).
#
# What each tool does:
#   logveil  runs pipelines/demo.toml: parse, filter, pseudonymise, sessionise, all tables, Parquet;
#   GoAccess builds its full report (all panels) as JSON (single-threaded in Debian's 1.7);
#   DuckDB   runs benches/compare.sql: only the daily overview figures (visitors, visits,
#            pageviews) with regular expressions and window functions.
# Each is timed with /usr/bin/time -v: wall and user+sys CPU seconds, maximum RSS.
set -euo pipefail

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

cd "$(dirname "$0")/.."
root=$(pwd)

millions=${1:-5}
[[ $millions =~ ^[0-9]+([.][0-9]+)?$ ]] || die "LINES_MILLIONS must be a number like 5 or 0.2, not '$millions'"
rounds=${LOGVEIL_BENCH_ROUNDS:-3}
threads=${LOGVEIL_BENCH_THREADS:-2}
tools=${LOGVEIL_BENCH_TOOLS:-logveil goaccess duckdb}
bench_dir=${LOGVEIL_BENCH_DIR:-$HOME/.cache/logveil-bench}
logveil=${LOGVEIL_BIN:-$root/target/release/logveil}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "LOGVEIL_BENCH_ROUNDS must be a positive integer"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "LOGVEIL_BENCH_THREADS must be a positive integer"
for t in $tools; do
  case $t in logveil | goaccess | duckdb) ;; *) die "unknown tool '$t' in LOGVEIL_BENCH_TOOLS" ;; esac
done
command -v python3 > /dev/null || die "python3 is needed (for the log generator and the report)"

work=$(mktemp -d "${TMPDIR:-/tmp}/logveil-compare.XXXXXX")
gen_tmp=""
cleanup() {
  rm -rf "$work"
  [[ -z $gen_tmp ]] || rm -rf "$gen_tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- installs ------------------------------------------------------------------------------
apt_updated=""
apt_install() { # PACKAGE...
  [[ $(id -u) == 0 ]] || die "$* missing: install it (apt-get install $*) or run as root"
  command -v apt-get > /dev/null || die "$* missing and there is no apt-get: install it by hand"
  if [[ -z $apt_updated ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" > "$work/apt.log" 2>&1 \
    || { cat "$work/apt.log" >&2; die "apt-get install $* failed"; }
}

if [[ ! -x /usr/bin/time ]]; then
  say "installing GNU time (/usr/bin/time, Debian package 'time') with apt-get"
  apt_install time
fi

want() { [[ " $tools " == *" $1 "* ]]; }

if want goaccess && ! command -v goaccess > /dev/null; then
  say "installing goaccess (Debian package) with apt-get"
  apt_install goaccess
fi

venv=$bench_dir/venv
if want duckdb && ! "$venv/bin/python" -c 'import duckdb' 2> /dev/null; then
  say "installing DuckDB with pip into a venv: $venv"
  mkdir -p "$bench_dir"
  if ! python3 -m venv "$venv" 2> "$work/venv.log"; then
    say "python3 -m venv failed; installing Debian's python3-venv with apt-get"
    apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check duckdb || die "pip install duckdb failed"
fi

if want logveil && [[ ! -x $logveil ]]; then
  [[ -z ${LOGVEIL_BIN:-} ]] || die "LOGVEIL_BIN=$LOGVEIL_BIN is not an executable file"
  command -v cargo > /dev/null || die "$logveil is missing and cargo is not installed"
  say "$logveil is missing: running 'cargo build --release' (a release build takes long: many minutes on 2 cores)"
  cargo build --release || die "cargo build --release failed"
  [[ -x $logveil ]] || die "cargo build --release did not produce $logveil"
fi

# --- the log -------------------------------------------------------------------------------
mkdir -p "$bench_dir"
size=$(python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$millions")
gen_hash=$(sha256sum sample-data/generate.py | cut -c1-12)
log=$bench_dir/access-${size}M-$gen_hash.log
days=7
if [[ ! -s $log || ! -s $log.lines ]]; then
  # ~11 lines per visitor-day (see generate.py); 7 days from 2026-11-02, rotated at 04:00.
  visitors=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * 1e6 / ($days * 11.0))))" "$millions")
  need_mib=$(python3 -c "import sys; print(round(float(sys.argv[1]) * 1e6 * 260 * 2 / 2**20) + 64)" "$millions")
  free_mib=$(df -Pm "$bench_dir" | awk 'NR == 2 {print $4}')
  ((free_mib >= need_mib)) || die "need about $need_mib MiB free in $bench_dir for the log, have $free_mib MiB"
  say "generating a ~${size} M line log ($days days x $visitors visitors a day) into $log (once; cached)"
  gen_tmp=$(mktemp -d "$bench_dir/gen.XXXXXX")
  python3 sample-data/generate.py --out "$gen_tmp" --days "$days" --visitors-per-day "$visitors" \
    --plain > "$gen_tmp/generate.txt" || die "sample-data/generate.py failed"
  cat "$gen_tmp"/access-*.log > "$gen_tmp/all.log"
  wc -l < "$gen_tmp/all.log" | tr -d ' ' > "$gen_tmp/all.lines"
  mv "$gen_tmp/all.lines" "$log.lines"
  mv "$gen_tmp/all.log" "$log"
  rm -rf "$gen_tmp"
  gen_tmp=""
else
  say "using the cached log $log"
fi
lines=$(cat "$log.lines")
bytes=$(stat -c %s "$log")

# --- the machine ---------------------------------------------------------------------------
cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2> /dev/null || true)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2> /dev/null || true)
echo
echo "machine: $(nproc) CPUs ($(nproc --all) online), ${cpu:-unknown CPU model}, ${mem:-? GiB} RAM"
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other load skews the figures)"
echo "input:   $log"
echo "         $lines lines, $((bytes / 1048576)) MiB, plain text"
want logveil && echo "logveil: $("$logveil" --version 2> /dev/null || echo '?'), --threads $threads"
want goaccess && echo "goaccess: $(goaccess --version 2> /dev/null | head -1 | sed 's/^GoAccess - //; s/\.$//')"
want duckdb && echo "duckdb:  $("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)'), threads $threads"
echo "rounds:  $rounds (tools alternate within each round)"
echo

# Read the log once so that no tool pays for the first read from disk.
say "reading the log once into the page cache"
cat "$log" > /dev/null

cat > "$work/duckdb_run.py" << 'PY'
import sys

import duckdb

sql_file, log_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET VARIABLE log_file = ?", [log_file])
with open(sql_file, encoding="utf-8") as f:
    rows = con.sql(f.read()).fetchall()
for day, visitors, visits, pageviews in rows:
    print(f"{day}\t{visitors}\t{visits}\t{pageviews}")
PY

# --- the runs ------------------------------------------------------------------------------
results=$work/results.tsv
: > "$results"

measure() { # TOOL ROUND COMMAND...
  local tool=$1 round=$2
  shift 2
  local tv=$work/time-$tool-$round.txt out=$work/out-$tool-$round.txt err=$work/err-$tool-$round.txt
  # The page cache again, untimed, before every run: a VM's kernel may reclaim idle page cache
  # (this machine's does, by DAMON), and a log read two minutes ago came from disk again.
  cat "$log" > /dev/null
  if ! /usr/bin/time -v -o "$tv" "$@" > "$out" 2> "$err"; then
    echo "compare.sh: $tool failed (round $round): $*" >&2
    tail -n 20 "$err" >&2
    exit 1
  fi
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
           n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tv")
  cpu=$(awk -F': ' '/User time \(seconds\)/ {u = $2} /System time \(seconds\)/ {s = $2}
          END {printf "%.2f", u + s}' "$tv")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
  [[ -n $wall && -n $cpu && -n $rss ]] || die "could not read /usr/bin/time's report for $tool: $tv"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$round" "$wall" "$cpu" "$rss" >> "$results"
  printf '    %-9s %8.2f s wall %8.2f s CPU %8.0f MiB peak RSS\n' "$tool" "$wall" "$cpu" "$((rss / 1024))"
}

for round in $(seq 1 "$rounds"); do
  say "round $round/$rounds"
  for tool in $tools; do
    case $tool in
      logveil)
        measure logveil "$round" "$logveil" run --pipeline pipelines/demo.toml --input "$log" \
          --output "$work/logveil-out" --threads "$threads"
        if [[ $round == 1 ]]; then
          mv "$work/logveil-out" "$work/logveil-first"
        else
          rm -rf "$work/logveil-out"
        fi
        ;;
      goaccess)
        measure goaccess "$round" goaccess "$log" --log-format=COMBINED -o "$work/goaccess.json" \
          --no-progress --no-parsing-spinner --no-global-config
        [[ -s $work/goaccess.json ]] || die "goaccess wrote no JSON report"
        rm -f "$work/goaccess.json"
        ;;
      duckdb)
        measure duckdb "$round" "$venv/bin/python" "$work/duckdb_run.py" "$root/benches/compare.sql" \
          "$log" "$threads"
        ;;
    esac
  done
done

# --- the report ----------------------------------------------------------------------------
echo
if want duckdb; then
  echo "DuckDB (benches/compare.sql), per local day: date, visitors, visits, pageviews"
  sed 's/^/    /' "$work/out-duckdb-1.txt"
  echo
fi
if want logveil; then
  echo "logveil's summary (round 1):"
  grep -E '^(lines|filtered|dates):' "$work/out-logveil-1.txt" | sed 's/^/    /' || true
  echo
fi
if want logveil && want duckdb; then
  # logveil's overview tables against DuckDB's figures (untimed).
  "$venv/bin/python" - "$work/logveil-first" "$work/out-duckdb-1.txt" << 'PY' || echo "    (could not compare: see above)"
import sys

import duckdb

out, duck = sys.argv[1], sys.argv[2]
lv = {str(d): (v, n, p) for d, v, n, p in duckdb.sql(
    f"SELECT date, visitors, visits, pageviews FROM read_parquet('{out}/overview/*/*.parquet',"
    " hive_partitioning = true) ORDER BY date").fetchall()}
dk = {}
for line in open(duck, encoding="utf-8"):
    d, *v = line.split("\t")
    dk[d] = tuple(int(x) for x in v)
print("logveil's overview vs DuckDB: visitors, visits, pageviews")
same = True
for d in sorted(set(lv) | set(dk)):
    a, b = lv.get(d), dk.get(d)
    ok = a == b
    same &= ok
    print(f"    {d}  logveil {a}  duckdb {b}  {'same' if ok else 'DIFFERENT'}")
print("    every day the same" if same else
      "    some days differ: see the rules at the top of benches/compare.sql")
print()
PY
fi

python3 - "$results" "$lines" << 'PY'
import statistics
import sys

results, lines = sys.argv[1], int(sys.argv[2])
runs = {}
for row in open(results):
    tool, _, wall, cpu, rss = row.split("\t")
    runs.setdefault(tool, []).append((float(wall), float(cpu), int(rss)))
med = {}
for tool, rs in runs.items():
    wall = statistics.median(r[0] for r in rs)
    cpu = statistics.median(r[1] for r in rs)
    rss = max(r[2] for r in rs) / 1024
    med[tool] = (wall, cpu, lines / wall if wall > 0 else float("inf"), rss)
n = len(next(iter(runs.values())))
print(f"{lines:,} lines, median of {n} run{'s' if n > 1 else ''} (peak RSS: the largest of the runs)")
print(f"{'tool':<10}{'wall s':>10}{'CPU s':>10}{'lines/s':>14}{'peak RSS MiB':>15}")
for tool, (wall, cpu, lps, rss) in med.items():
    print(f"{tool:<10}{wall:>10.2f}{cpu:>10.2f}{lps:>14,.0f}{rss:>15,.0f}")
if "logveil" in med:
    lw, lc, ll, lr = med["logveil"]
    for other in ("goaccess", "duckdb"):
        if other in med:
            ow, oc, ol, orss = med[other]
            print(f"logveil vs {other}: lines/s ratio {ll / ol:.2f} (above 1: logveil is faster), "
                  f"CPU-seconds ratio {lc / oc:.2f} (below 1: logveil uses less CPU), "
                  f"peak RSS ratio {lr / orss:.2f}")
PY
echo
echo "Caveats:"
want logveil && echo "  logveil ran with --threads $threads and computes all its tables, pseudonymised, into Parquet."
want goaccess && echo "  GoAccess $(goaccess --version | head -1 | sed 's/^GoAccess - //; s/\.$//') parses on one thread and builds its whole report (JSON)."
want duckdb && echo "  DuckDB ran with $threads threads and computes only the daily overview figures; its time includes starting Python."
echo "  Other load on the machine (see the load average above) slows every tool."
