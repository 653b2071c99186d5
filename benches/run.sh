#!/usr/bin/env bash
# End-to-end throughput of `logveil run` on the realistic sample, repeated N times as one
# input (so a run lasts long enough to time). Release build; not run in CI.
#   benches/run.sh [copies]      (default 20 copies ≈ 1.1 M lines)
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
# Copies are distinct (their paths get a per-copy prefix), so none is skipped as a
# duplicate input.
for i in $(seq 1 "$copies"); do
  zcat sample-data/realistic/*.log.gz | sed "s/\"GET \//\"GET \/c$i\//" | gzip -1 > "$work/copy-$i.log.gz"
done
lines=$(zcat "$work"/copy-*.log.gz | wc -l)
bytes=$(zcat "$work"/copy-*.log.gz | wc -c)
echo "input: $copies copies, $lines lines, $bytes bytes decompressed"
/usr/bin/time -v target/release/logveil run --pipeline pipelines/demo.toml --input "$work/copy-*.log.gz" \
  --output "$work/out" 2> "$work/time.txt" > /dev/null
wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
echo "wall: $wall  max RSS: ${rss} KiB"
python3 - "$lines" "$bytes" "$wall" <<'PY'
import sys
lines, nbytes, wall = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
print(f"{lines / secs:,.0f} lines/s, {nbytes / secs / 1e6:,.1f} MB/s decompressed")
PY
