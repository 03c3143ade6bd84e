#!/bin/bash
# Heap allocations per request, counted by valgrind's dhat (deterministic, unlike timings on a
# shared machine): runs `sigil serve` under dhat twice, driving 200 and then 800 sequential
# requests of one kind over one keep-alive connection, and prints the difference per request
# (start-up and background work cancel out).
#
#   benches/allocations/measure.sh target/release/sigil token        # client_secret_basic
#   benches/allocations/measure.sh target/release/sigil introspect   # as the API's own client
#   benches/allocations/measure.sh target/release/sigil authzen      # one AuthZEN evaluation
set -euo pipefail
bin=$(realpath "$1")
kind=${2:-token}
here=$(dirname "$(realpath "$0")")

blocks() { # N -> total heap blocks allocated by the server while serving N requests
    local dir port vpid
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    valgrind --tool=dhat --dhat-out-file="$dir/dhat.json" "$bin" serve --listen "127.0.0.1:$port" \
        --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
    vpid=$!
    export SIGIL_URL="http://127.0.0.1:$port" SIGIL_DATA_DIR="$dir/data"
    for _ in $(seq 240); do
        curl -fs -o /dev/null "$SIGIL_URL/readyz" && break
        sleep 0.5
    done
    "$bin" user create --username alice >/dev/null
    "$bin" agent create --name bot --owner alice --ceiling read >/dev/null
    "$bin" workload create --name api --owner alice --kind service >/dev/null
    "$bin" resource create --uri https://api.example.com --name api --owner alice --scope read --server api >/dev/null
    if [ "$kind" = authzen ]; then
        "$bin" policy upload "$here/authzen.cedar" --schema "$here/authzen.cedarschema" --activate >/dev/null
    fi
    python3 "$here/drive.py" "$SIGIL_URL" "$1" "$kind" \
        "$("$bin" client create --identity bot --secret --output json)" \
        "$("$bin" client create --identity api --secret --output json)"
    kill -TERM "$vpid"
    wait "$vpid" || true
    python3 -c "import json,sys; print(sum(p['tbk'] for p in json.load(open(sys.argv[1]))['pps']))" "$dir/dhat.json"
    rm -rf "$dir"
}

few=$(blocks 200)
many=$(blocks 800)
echo "$kind: $(( (many - few) / 600 )) heap allocations per request ($few for 200, $many for 800)"
