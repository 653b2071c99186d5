#!/usr/bin/env bash
# The stages of a logveil run chained by the shell, tasks run in parallel with `xargs -P`:
# the engine-free version of the contract the Spark job uses (docs/SCALING.md). Its outputs are
# byte-identical to `logveil run` with the same arguments.
#
#   contrib/stages.sh [--logveil PATH] [--tasks N] [--parallel P] [--work DIR] -- RUN ARGS…
#
# RUN ARGS are what `logveil run` takes (--pipeline, --input, --output, --date, --buckets, …).
# --tasks: shard tasks (inputs are dealt to them in turn; default 2); --parallel: tasks at a
# time (default 2); --work: the work directory (default: a new private one under $TMPDIR; it
# is removed however the script ends).
set -euo pipefail

logveil=logveil
tasks=2
parallel=2
work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --logveil) logveil="$2"; shift 2 ;;
    --tasks) tasks="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "stages.sh: unknown option $1 (run arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$work" ]]; then
  # `stage plan` makes the work directory itself, inside a private one of ours.
  parent="$(mktemp -d "${TMPDIR:-/tmp}/logveil-work.XXXXXX")"
  work="$parent/work"
  # Pseudonymous intermediates never outlive the job, whatever happens to it.
  trap 'rm -rf "$parent"' EXIT
else
  [[ ! -e "$work" ]] || { echo "stages.sh: --work $work exists; give a new path (it is removed when the job ends)" >&2; exit 2; }
  trap 'rm -rf "$work"' EXIT
fi

plan="$("$logveil" stage plan --work "$work" "$@")"
files="$(sed -n 's/^files=//p' <<<"$plan")"
buckets="$(sed -n 's/^buckets=//p' <<<"$plan")"

shard_all() {
  # Task t takes inputs t, t+tasks, t+2·tasks, …
  for ((t = 0; t < tasks && t < files; t++)); do
    list=""
    for ((i = t; i < files; i += tasks)); do list="${list:+$list,}$i"; done
    printf '%s %s\n' "$t" "$list"
  done | xargs -P "$parallel" -n 2 sh -c '"$0" stage shard --work "$1" --task "t$2" --inputs "$3"' "$logveil" "$work"
}

shard_all
gathered="$("$logveil" stage gather --work "$work")"
for _ in 1 2; do
  [[ "$gathered" == reshard ]] || break
  # The keys grew (days the inputs reach beyond those derived, or a managed key ring's new
  # masters): the shard stage once more with them.
  shard_all
  gathered="$("$logveil" stage gather --work "$work")"
done
[[ "$gathered" != reshard ]] || { echo "stages.sh: gather asked for the shard stage a third time" >&2; exit 1; }
seq 0 $((buckets - 1)) | xargs -P "$parallel" -I{} "$logveil" stage reduce --work "$work" --bucket {}
"$logveil" stage merge --work "$work"
