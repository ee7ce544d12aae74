#!/usr/bin/env bash
# Memory per idle client connection: nginx, HAProxy and gpuproxyd (model
# port), all in front of the same static upstream as bench/proxy.sh.
#
#   bash bench/memory.sh                  # from the repo root
#   N=2000 bash bench/memory.sh           # fewer connections
#
# Each (proxy, mode) pair gets a freshly started proxy, warmed with 1 s of
# wrk traffic, so memory freed by an earlier measurement cannot be reused.
# Modes: "idle" = connect and send nothing; "request" = one complete
# keep-alive POST /v1/chat/completions, response read, then idle.
# Env: N (default 10000), WAIT (default 2 s), GPUPROXYD_BIN, OUT_JSON, KEEP_TMP.

set -euo pipefail
# shellcheck source=bench/proxy.sh
source "$(dirname "${BASH_SOURCE[0]}")/proxy.sh"

N=${N:-10000}
WAIT=${WAIT:-2}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer"
((N <= 19000)) || die "N must be <= 19000 (fd limit 20000 per process)"
if [[ -n ${OUT_JSON:-} && $OUT_JSON != /* ]]; then OUT_JSON="$PWD/$OUT_JSON"; fi

bench_init
log "temp dir $BENCH_TMP; N=$N connections, wait ${WAIT}s; fd limit $(ulimit -n)"
RESULTS="$BENCH_TMP/memory.jsonl"
: >"$RESULTS"
start_upstream

GPD_NA=""
for target in nginx haproxy gpuproxyd; do
    for mode in idle request; do
        case $target in
            nginx) start_nginx_proxy; port=$NGINX_PORT; pid=$NGINX_PID ;;
            haproxy) start_haproxy; port=$HAPROXY_PORT; pid=$HAPROXY_PID ;;
            gpuproxyd)
                if ! start_gpuproxyd; then
                    break
                fi
                port=$GPD_PORT; pid=$GPD_PID ;;
        esac
        run_wrk "$BENCH_TMP/res/mem_warmup_${target}_$mode.txt" "$port" 1 2 1s
        log "$target $mode: $N connections"
        run_child - timeout --kill-after=5 300 "$PY" "$BENCH_DIR/idle_memory.py" --port "$port" --pids "$pid" \
            -n "$N" --mode "$mode" --wait "$WAIT" --label "$target" --json "$RESULTS" ||
            log "WARNING: $target $mode measurement flagged invalid"
        stop_pid "$pid"
    done
done

"$PY" - "$RESULTS" "$N" "${OUT_JSON:-}" "$GPD_NA" <<'EOF'
import json, sys
path, n, out_json, gpd_na = sys.argv[1:5]
rows = [json.loads(line) for line in open(path) if line.strip()]
by = {(r["label"], r["mode"]): r for r in rows}

def cell(r):
    if r is None:
        return "n/a"
    if r["bytes_per_conn"] is None:
        return "INVALID (no connection open)"
    txt = f"{r['bytes_per_conn']:,.0f}"
    if not r["valid"]:
        txt += (f" INVALID ({r['open_at_measure']}/{r['requested']} open, "
                f"{r['connect_errors']} errors, {r['non_2xx']} non-2xx)")
    return txt

print()
print(f"## Memory per idle connection ({n} connections, VmRSS delta of all the proxy's processes)")
print()
print("| proxy | bytes/conn, idle (nothing sent) | bytes/conn, idle after 1 request | baseline RSS (KiB) |")
print("|---|---:|---:|---:|")
for t in ("nginx", "haproxy", "gpuproxyd"):
    a, b = by.get((t, "idle")), by.get((t, "request"))
    base = a or b
    if base is None:
        note = f" ({gpd_na})" if t == "gpuproxyd" and gpd_na else ""
        print(f"| {t} | n/a{note} | n/a | n/a |")
        continue
    print(f"| {t} | {cell(a)} | {cell(b)} | {base['rss_before'] / 1024:,.0f} |")
print()
if out_json:
    with open(out_json, "w") as fh:
        json.dump({"connections": int(n), "results": rows}, fh, indent=2)
    print(f"raw results written to {out_json}", file=sys.stderr)
EOF
