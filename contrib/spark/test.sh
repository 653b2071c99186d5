#!/usr/bin/env bash
# Opt-in test of the Spark job (pyspark is a ~700 MB install, so CI runs the engine-free
# version of the same contract instead: tests/it/stages.rs). On Spark's `local-cluster[2,1,1024]`
# master (two worker JVMs; needs Java 17), over the sample data split into 5 files:
#   1. 3 buckets, one shard task per file;
#   2. 7 buckets, 2 shard tasks, the first attempt of shard task 1 killed half-way, and the
#      reduce stage run by applyInPandas, as on Spark 3.3 to 3.5;
#   3. a shard task killed at every attempt: the job fails with a message and publishes nothing.
# Runs 1 and 2 must give the Parquet files of `logveil run` on the same inputs, byte for byte.
#
#   contrib/spark/test.sh            (builds logveil in the dev profile; LOGVEIL_BIN=… to skip)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
cache="${XDG_CACHE_HOME:-$HOME/.cache}"
venv="$cache/logveil-spark-venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/logveil-target}"

mkdir -p "$cache"
(
  flock 9
  if ! "$venv/bin/python" -c 'import pyspark, pyarrow, pandas' 2>/dev/null; then
    echo "installing pyspark, pyarrow and pandas into $venv (about 700 MB, once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'pyspark>=4.0' pyarrow 'pandas>=2.2,<3'
  fi
) 9>"$cache/logveil-spark-venv.lock"
command -v java >/dev/null || { echo "Spark needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

if [[ -z "${LOGVEIL_BIN:-}" ]]; then
  cargo build --quiet --locked
  LOGVEIL_BIN="$CARGO_TARGET_DIR/debug/logveil"
fi
export PYSPARK_PYTHON="$venv/bin/python"
export SPARK_HOME="$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" - "$repo" "$tmp/in" <<'PY'
import glob, gzip, os, sys
repo, out = sys.argv[1:]
os.makedirs(out)
lines = b"".join(gzip.open(f).read() for f in sorted(glob.glob(f"{repo}/sample-data/realistic/*.log.gz")))
lines = lines.splitlines(keepends=True)
per = -(-len(lines) // 5)
for i in range(5):
    chunk = b"".join(lines[i * per : (i + 1) * per])
    if i % 2:
        open(f"{out}/part-{i}.log", "wb").write(chunk)
    else:
        gzip.open(f"{out}/part-{i}.log.gz", "wb").write(chunk)
PY

hashes() { (cd "$1" && find . -name '*.parquet' | sort | xargs sha256sum); }

echo "reference: logveil run" >&2
XDG_STATE_HOME="$tmp/state-run" "$LOGVEIL_BIN" run --input "$tmp/in/*" --output "$tmp/out-run" >/dev/null
hashes "$tmp/out-run" >"$tmp/expected"
[[ $(wc -l <"$tmp/expected") -eq 52 ]] || { echo "the reference run wrote $(wc -l <"$tmp/expected") tables, not 52" >&2; exit 1; }

spark() {
  XDG_STATE_HOME="$tmp/state-$1" "$venv/bin/python" contrib/spark/logveil_spark.py \
    --master 'local-cluster[2,1,1024]' --logveil "$LOGVEIL_BIN" --input "$tmp/in/*" --output "$tmp/out-$1" "${@:2}"
}

fail=0
echo "spark: 3 buckets, 5 shard tasks" >&2
spark a --buckets 3 >"$tmp/a.log" 2>"$tmp/a.err" || { tail -5 "$tmp/a.err" >&2; exit 1; }
if diff <(hashes "$tmp/out-a") "$tmp/expected" >/dev/null; then echo "ok: byte-identical to logveil run" >&2; else echo "FAIL: run a differs" >&2; fail=1; fi

echo "spark: 7 buckets, 2 shard tasks, shard task 1 killed once; reduce by applyInPandas (Spark 3.3-3.5's way)" >&2
LOGVEIL_SPARK_PANDAS=1 LOGVEIL_SPARK_FAULT=shard:1 spark b --buckets 7 --shard-tasks 2 >"$tmp/b.log" 2>"$tmp/b.err" || { tail -5 "$tmp/b.err" >&2; exit 1; }
if grep -q 'Lost task\|Python worker exited unexpectedly\|crashed' "$tmp/b.err"; then echo "ok: the task was killed and retried" >&2; else echo "FAIL: no task was lost in run b" >&2; fail=1; fi
if diff <(hashes "$tmp/out-b") "$tmp/expected" >/dev/null; then echo "ok: byte-identical to logveil run" >&2; else echo "FAIL: run b differs" >&2; fail=1; fi

echo "spark: shard task 0 killed at every attempt" >&2
if LOGVEIL_SPARK_FAULT=shard:0:always spark c --buckets 3 >"$tmp/c.log" 2>"$tmp/c.err"; then
  echo "FAIL: run c succeeded" >&2; fail=1
elif grep -q 'nothing was published' "$tmp/c.err" && [[ ! -d "$tmp/out-c/_runs" || -z "$(ls "$tmp/out-c/_runs")" ]]; then
  echo "ok: failed with: $(grep 'failed for good' "$tmp/c.err" | cut -c1-200)" >&2
else
  echo "FAIL: run c did not fail cleanly" >&2; fail=1
fi
# No work directory, and no task directory (they hold the run key and derived keys), is left
# anywhere: not under the temporary directory, not in the workers' work directories (kept for
# days by standalone workers), not even by the tasks that were killed.
left="$(find "${TMPDIR:-/tmp}" "$SPARK_HOME/work" \( -name 'logveil-work-*' -o -name 'logveil-shard-*' -o -name 'logveil-reduce-*' \) 2>/dev/null | head -5 || true)"
if grep -rqs 'logveil derived keys' "$SPARK_HOME/work"; then left="$left derived keys in $SPARK_HOME/work"; fi
if [[ -n "$left" ]]; then
  echo "FAIL: directories outlived the jobs: $left" >&2; fail=1
else
  echo "ok: no work or task directory is left" >&2
fi
exit $fail
