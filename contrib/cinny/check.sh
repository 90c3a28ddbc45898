#!/usr/bin/env bash
# Cinny against Roost, in headless Debian Chromium: register, log in, create a room,
# send a message (and the same in an encrypted room). See docs/clients.md.
#
#   contrib/cinny/check.sh CINNY_CHECKOUT [OUT_DIR]
#
# CINNY_CHECKOUT is a checkout of https://github.com/cinnyapp/cinny (never committed
# here); it is built with npm once (REBUILD=1 builds again). Roost runs as `make run`
# runs it (homeserver.yaml, an embedded PostgreSQL under its own data dir, or
# ROOST_DSN), on 127.0.0.1:$ROOST_PORT; Cinny's build is served on
# 127.0.0.1:$CINNY_PORT. Screenshots, report.json and the logs land in OUT_DIR.
# Needs: node 20+ and npm, python3, Debian's chromium (apt-get install chromium).
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CINNY=$(cd "$1" && pwd)
OUT=${2:-$REPO/_cinny_check}
ROOST_PORT=${ROOST_PORT:-18008}
CINNY_PORT=${CINNY_PORT:-18080}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

test -x "$CHROMIUM" || { echo "no Chromium at $CHROMIUM: apt-get install chromium" >&2; exit 2; }
test -f "$CINNY/package.json" || { echo "$CINNY is not a Cinny checkout" >&2; exit 2; }

echo "== building Cinny in $CINNY"
if [ ! -f "$CINNY/dist/index.html" ] || [ -n "${REBUILD:-}" ]; then
    (cd "$CINNY" && npm ci --no-audit --no-fund && npm run build)
fi

echo "== Cinny's config: Roost as its only homeserver, hash routes (a static server suffices)"
rm -rf "$OUT/cinny-dist"
cp -r "$CINNY/dist" "$OUT/cinny-dist"
python3 - "$OUT/cinny-dist/config.json" "http://127.0.0.1:$ROOST_PORT" <<'PY'
import json, sys
path, server = sys.argv[1], sys.argv[2]
config = json.load(open(path))
config.update({"defaultHomeserver": 0, "homeserverList": [server], "allowCustomHomeservers": False,
               "hashRouter": {"enabled": True, "basename": "/"}})
json.dump(config, open(path, "w"), indent=2)
PY

echo "== the driver's packages (playwright-core)"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

echo "== Roost, as make run starts it, on 127.0.0.1:$ROOST_PORT (log: $OUT/roost.log)"
make -s -C "$REPO" .venv/.installed
"$REPO/.venv/bin/python" - "$REPO/homeserver.yaml" "$OUT" "$ROOST_PORT" "${ROOST_DSN:-}" <<'PY'
import sys, yaml
source, out, port, dsn = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = yaml.safe_load(open(source))
config["data_dir"] = f"{out}/data"
config["signing_key_path"] = f"{out}/data/{config['server_name']}.signing.key"
config["public_baseurl"] = f"http://127.0.0.1:{port}/"
config["listeners"]["client"].update({"bind_address": "127.0.0.1", "port": port})
if dsn:
    config["database"]["dsn"] = dsn
yaml.safe_dump(config, open(f"{out}/homeserver.yaml", "w"), sort_keys=False)
PY
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$REPO/.venv/bin/roost" run -c "$OUT/homeserver.yaml" >"$OUT/roost.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$ROOST_PORT/_matrix/client/versions" >/dev/null && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { echo "Roost stopped; see $OUT/roost.log" >&2; tail -20 "$OUT/roost.log" >&2; exit 1; }
    sleep 1
done

echo "== Cinny served on 127.0.0.1:$CINNY_PORT"
python3 -m http.server --bind 127.0.0.1 --directory "$OUT/cinny-dist" "$CINNY_PORT" >"$OUT/http.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 30); do curl -sf "http://127.0.0.1:$CINNY_PORT/" >/dev/null && break; sleep 0.5; done

echo "== driving Cinny in $CHROMIUM"
node "$HERE/drive.mjs" --cinny "http://127.0.0.1:$CINNY_PORT" --out "$OUT" --chromium "$CHROMIUM"
