#!/usr/bin/env bash
# Refreshes the user-agent data compiled into logveil from the npm registry.
# Never run at build time: the data is committed, with its licence, and this
# script is how a maintainer updates it deliberately.
#   data/uap/regexes.json                 <- npm uap-core (Apache-2.0), regexes.yaml as JSON
#   data/crawler-user-agents/patterns.json <- npm crawler-user-agents (MIT), the patterns only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent uap-core crawler-user-agents >/dev/null
mkdir uap cua
tar xzf uap-core-*.tgz -C uap
tar xzf crawler-user-agents-*.tgz -C cua
python3 -m venv venv && venv/bin/pip -q install pyyaml
venv/bin/python - "$root" <<'PY'
import json, sys, yaml
root = sys.argv[1]
data = yaml.safe_load(open("uap/package/regexes.yaml"))
json.dump(data, open(f"{root}/data/uap/regexes.json", "w"), ensure_ascii=False, separators=(",", ":"))
pats = [entry["pattern"] for entry in json.load(open("cua/package/crawler-user-agents.json"))]
json.dump(pats, open(f"{root}/data/crawler-user-agents/patterns.json", "w"), separators=(",", ":"))
PY
cp uap/package/LICENSE "$root/data/uap/LICENSE"
cp cua/package/LICENSE "$root/data/crawler-user-agents/LICENSE"
echo "refreshed: uap-core $(node -p "require('./uap/package/package.json').version"), crawler-user-agents $(node -p "require('./cua/package/package.json').version")"
