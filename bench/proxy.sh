#!/usr/bin/env bash
# Throughput and latency of gpuproxyd against nginx and HAProxy, all three in
# front of the same static nginx upstream (and the upstream hit directly).
#
#   bash bench/proxy.sh                        # from the repo root
#   DURATION=3 ROUNDS=1 bash bench/proxy.sh    # quick check
#
# Env: DURATION (per wrk run, default 10s), ROUNDS (default 3), WARMUP
# (default 1s), GPUPROXYD_BIN (default build/gpuproxyd), OUT_JSON (write raw
# results there), KEEP_TMP=1 (keep the temp dir with configs and logs).
#
# bench/memory.sh sources this file for its helpers; main only runs when the
# file is executed.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
GPUPROXYD_BIN=${GPUPROXYD_BIN:-build/gpuproxyd}
STARTED_PIDS=()
CHILD_PID=""
BENCH_TMP=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- lifecycle

bench_init() {
    BENCH_TMP=$(mktemp -d /tmp/gpuproxyd-bench.XXXXXX)
    mkdir -p "$BENCH_TMP/tmp" "$BENCH_TMP/res"
    trap bench_cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
    # gpuproxyd (and the memory test) need more fds than the usual 1024.
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
    for tool in nginx haproxy wrk curl; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install nginx-light haproxy wrk curl)"
    done
}

# Daemons run under setsid (own session): a Ctrl-C in the terminal stops the
# script, whose EXIT trap then stops them in order.
#
# Kill a process and its direct children (nginx workers), TERM first, then
# KILL after a bounded wait.
stop_pid() {
    local pid=$1 kids i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$? i
    trap - EXIT
    if [[ -n $CHILD_PID ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[$i]}"
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then
            log "configs and logs kept in $BENCH_TMP"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

# run_child OUTFILE CMD...: runs CMD in the background (its stdout and
# stderr to OUTFILE, or inherited if OUTFILE is -) and waits for it.  A signal
# then runs the script's trap at once: bash defers traps while a foreground
# command runs, and drops SIGINT entirely when that command (wrk) catches it.
run_child() {
    local rc=0 out=$1
    shift
    if [[ $out == - ]]; then
        "$@" &
    else
        "$@" >"$out" 2>&1 &
    fi
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# N distinct free loopback ports (bound together, then released).
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# render TEMPLATE OUT KEY=VALUE...   (replaces @KEY@)
render() {
    local tpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$tpl" >"$out"
}

user_line() {
    # nginx drops to "nobody" when started as root; keep root so it can use
    # the private temp dir.  Non-root runs need no user directive.
    if [[ $(id -u) == 0 ]]; then echo "user root;"; else echo ""; fi
}

# wait_http NAME PID URL TIMEOUT_S [METHOD]  -> waits for a 2xx answer
wait_http() {
    local name=$1 pid=$2 url=$3 timeout_s=$4 method=${5:-GET} deadline code
    deadline=$((SECONDS + timeout_s))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up; its log:"
            tail -n 30 "$BENCH_TMP/$name.log" >&2 || true
            return 1
        fi
        if [[ $method == POST ]]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -X POST \
                -H 'Content-Type: application/json' --data "$CHAT_BODY" "$url" || true)
        else
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        fi
        [[ $code == 2* ]] && return 0
        sleep 0.05
    done
    log "$name not ready after ${timeout_s}s ($url, last status ${code:-none}); its log:"
    tail -n 30 "$BENCH_TMP/$name.log" >&2 || true
    return 1
}

CHAT_BODY='{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
CHAT_PATH=/v1/chat/completions

start_upstream() {
    UP_PORT=$(free_ports 1)
    render "$BENCH_DIR/conf/nginx-upstream.conf.in" "$BENCH_TMP/upstream.conf" \
        DIR="$BENCH_TMP" PORT="$UP_PORT" USER_LINE="$(user_line)"
    setsid nginx -p "$BENCH_TMP/" -e "$BENCH_TMP/upstream.error.log" -c "$BENCH_TMP/upstream.conf" \
        >"$BENCH_TMP/upstream.log" 2>&1 &
    UP_PID=$!
    STARTED_PIDS+=("$UP_PID")
    wait_http upstream "$UP_PID" "http://127.0.0.1:$UP_PORT$CHAT_PATH" 10 POST ||
        die "static upstream (nginx) did not start"
    log "upstream nginx pid $UP_PID on 127.0.0.1:$UP_PORT"
}

start_nginx_proxy() {
    NGINX_PORT=$(free_ports 1)
    render "$BENCH_DIR/conf/nginx-proxy.conf.in" "$BENCH_TMP/nginx-proxy.conf" \
        DIR="$BENCH_TMP" PORT="$NGINX_PORT" UPPORT="$UP_PORT" USER_LINE="$(user_line)"
    setsid nginx -p "$BENCH_TMP/" -e "$BENCH_TMP/nginx-proxy.error.log" -c "$BENCH_TMP/nginx-proxy.conf" \
        >"$BENCH_TMP/nginx.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
    wait_http nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT$CHAT_PATH" 10 POST ||
        die "nginx proxy did not start"
    log "nginx proxy pid $NGINX_PID on 127.0.0.1:$NGINX_PORT"
}

start_haproxy() {
    HAPROXY_PORT=$(free_ports 1)
    render "$BENCH_DIR/conf/haproxy.cfg.in" "$BENCH_TMP/haproxy.cfg" \
        DIR="$BENCH_TMP" PORT="$HAPROXY_PORT" UPPORT="$UP_PORT"
    setsid haproxy -db -f "$BENCH_TMP/haproxy.cfg" >"$BENCH_TMP/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    STARTED_PIDS+=("$HAPROXY_PID")
    wait_http haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT$CHAT_PATH" 10 POST ||
        die "haproxy did not start"
    log "haproxy pid $HAPROXY_PID on 127.0.0.1:$HAPROXY_PORT"
}

# Sets GPD_PORT (model port), GPD_MAIN_PORT, GPD_PID, or GPD_NA (reason) and
# returns 1 when gpuproxyd is missing or does not come up.
start_gpuproxyd() {
    local bin
    GPD_NA=""
    GPD_PID=""
    bin=$GPUPROXYD_BIN
    [[ $bin == /* ]] || bin="$PWD/$bin"
    if [[ ! -x $bin ]]; then
        GPD_NA="$GPUPROXYD_BIN not found (build it with make)"
        log "gpuproxyd: $GPD_NA -> n/a"
        return 1
    fi
    read -r GPD_MAIN_PORT GPD_PORT < <(free_ports 2)
    render "$BENCH_DIR/conf/gpuproxyd.toml.in" "$BENCH_TMP/gpuproxyd.toml" \
        MAINPORT="$GPD_MAIN_PORT" MODELPORT="$GPD_PORT" UPPORT="$UP_PORT"
    # The model port is a kernel-chosen free port, usually outside the
    # default custom range: widen the range around it.
    (cd "$BENCH_TMP" && PORT_CUSTOM_MIN=$GPD_PORT PORT_CUSTOM_MAX=$((GPD_PORT + 1)) \
        exec setsid "$bin" --config "$BENCH_TMP/gpuproxyd.toml") >"$BENCH_TMP/gpuproxyd.log" 2>&1 &
    GPD_PID=$!
    STARTED_PIDS+=("$GPD_PID")
    if ! wait_http gpuproxyd "$GPD_PID" "http://127.0.0.1:$GPD_MAIN_PORT/readyz" 30 GET; then
        GPD_NA="did not become ready (see log above)"
        stop_pid "$GPD_PID"
        return 1
    fi
    if ! wait_http gpuproxyd "$GPD_PID" "http://127.0.0.1:$GPD_PORT$CHAT_PATH" 5 POST; then
        log "gpuproxyd: ready, but POST $CHAT_PATH on the model port did not answer 2xx" \
            "(continuing; its runs will be flagged)"
    fi
    log "gpuproxyd pid $GPD_PID, main 127.0.0.1:$GPD_MAIN_PORT, model port 127.0.0.1:$GPD_PORT"
    return 0
}

# Checks one answer through a target: 200 and a chat completion body.
sanity_check() {
    local name=$1 port=$2 out
    out=$(curl -s --max-time 5 -w '\n%{http_code} %{content_type}' -X POST \
        -H 'Content-Type: application/json' --data "$CHAT_BODY" \
        "http://127.0.0.1:$port$CHAT_PATH" || true)
    if [[ $(tail -n1 <<<"$out") == 200\ application/json* && $out == *'"chat.completion"'* ]]; then
        return 0
    fi
    log "WARNING: $name answered unexpectedly: status $(tail -n1 <<<"$out"), body $(head -c 200 <<<"$out" | tr '\n' ' ')"
    return 1
}

# ---------------------------------------------------------------- benchmark

# run_wrk OUTFILE PORT THREADS CONNS DURATION
run_wrk() {
    local out=$1 port=$2 t=$3 c=$4 d=$5 secs rc=0
    secs=${d%s}
    [[ $secs =~ ^[0-9]+$ ]] || secs=60
    run_child "$out" timeout --kill-after=5 $((secs + 30)) \
        wrk -t"$t" -c"$c" -d"$d" --latency -s "$BENCH_DIR/conf/chat.lua" \
        "http://127.0.0.1:$port$CHAT_PATH" || rc=$?
    if ((rc != 0)); then
        echo "wrk exit status $rc" >>"$out"
    fi
}

# Parses the wrk outputs in $BENCH_TMP/res, prints the Markdown table and
# writes the JSON.
report() {
    "$PY" - "$BENCH_TMP/res" "$ROUNDS" "$DURATION" "${OUT_JSON:-}" "${GPD_NA:-}" "$TARGETS_ALL" <<'EOF'
import json, os, re, statistics, sys, platform, subprocess

resdir, rounds, duration, out_json, gpd_na, targets = sys.argv[1:7]
rounds = int(rounds)
targets = targets.split()
UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}

def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    return round(float(m.group(1)) * UNIT[m.group(2)], 2) if m else None

def parse(path):
    r = {"file": os.path.basename(path), "rps": None, "lat_mean_us": None,
         "lat_p99_us": None, "lat_p50_us": None, "requests": None, "non2xx": 0,
         "socket_errors": 0, "errors": []}
    try:
        text = open(path).read()
    except OSError:
        r["errors"].append("missing output")
        return r
    if m := re.search(r"Requests/sec:\s*([0-9.]+)", text):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s*Latency\s+(\S+)", text, re.M):
        r["lat_mean_us"] = to_us(m.group(1))
    if m := re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", text, re.M):
        r["lat_p99_us"] = to_us(m.group(1))
    if m := re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", text, re.M):
        r["lat_p50_us"] = to_us(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        r["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r["socket_errors"] = sum(int(x) for x in m.groups())
    if r["non2xx"]:
        r["errors"].append(f"{r['non2xx']} non-2xx responses")
    if r["socket_errors"]:
        r["errors"].append(f"socket errors ({m.group(0)})")
    if not r["requests"]:
        r["errors"].append("no requests completed")
    if None in (r["rps"], r["lat_mean_us"], r["lat_p99_us"]):
        r["errors"].append("could not parse wrk output")
    if m := re.search(r"wrk exit status (\d+)", text):
        r["errors"].append(f"wrk exit status {m.group(1)}")
    r["valid"] = not r["errors"]
    return r

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

raw = {}
for t in targets:
    raw[t] = {}
    for mode in ("c32", "c1"):
        raw[t][mode] = [parse(os.path.join(resdir, f"r{i}_{t}_{mode}.txt"))
                        for i in range(1, rounds + 1)] if t != "gpuproxyd" or not gpd_na else []

summary = {}
for t in targets:
    runs = raw[t]
    if t == "gpuproxyd" and gpd_na:
        summary[t] = {"available": False, "reason": gpd_na}
        continue
    s = {"available": True}
    for mode in ("c32", "c1"):
        s[f"rps_{mode}"] = med(r["rps"] for r in runs[mode])
        s[f"mean_{mode}_us"] = med(r["lat_mean_us"] for r in runs[mode])
        s[f"p99_{mode}_us"] = med(r["lat_p99_us"] for r in runs[mode])
        s[f"p50_{mode}_us"] = med(r["lat_p50_us"] for r in runs[mode])
    errs = [f"{r['file']}: {e}" for mode in ("c32", "c1") for r in runs[mode] for e in r["errors"]]
    s["valid"] = not errs
    s["errors"] = errs
    if t != "direct" and summary.get("direct", {}).get("available"):
        diffs = []
        for a, d in zip(runs["c1"], raw["direct"]["c1"]):
            if a["lat_mean_us"] is not None and d["lat_mean_us"] is not None:
                diffs.append(a["lat_mean_us"] - d["lat_mean_us"])
        s["added_c1_us"] = med(diffs)   # median over rounds of (proxy - direct)
        d50 = [a["lat_p50_us"] - d["lat_p50_us"] for a, d in zip(runs["c1"], raw["direct"]["c1"])
               if a["lat_p50_us"] is not None and d["lat_p50_us"] is not None]
        s["added_c1_p50_us"] = med(d50)   # same with medians: less sensitive to noise
    summary[t] = s

def f(x, nd=0):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"

print()
print(f"## Proxy benchmark ({rounds} round(s), {duration} per run, "
      f"c32 = wrk -t2 -c32, c1 = wrk -t1 -c1; medians over rounds; latencies in us)")
print()
print("| target | req/s c32 | mean c32 | p99 c32 | mean c1 | p99 c1 | added c1 vs direct | status |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for t in targets:
    s = summary[t]
    if not s["available"]:
        print(f"| {t} | n/a | n/a | n/a | n/a | n/a | n/a | n/a: {s['reason']} |")
        continue
    added = "-" if t == "direct" else f(s.get("added_c1_us"), 1)
    status = "ok" if s["valid"] else "INVALID: " + "; ".join(s["errors"])[:200]
    print(f"| {t} | {f(s['rps_c32'])} | {f(s['mean_c32_us'], 1)} | {f(s['p99_c32_us'], 1)} | "
          f"{f(s['mean_c1_us'], 1)} | {f(s['p99_c1_us'], 1)} | {added} | {status} |")
print()

ratios = {}
g = summary.get("gpuproxyd", {})
flag = "" if g.get("valid", True) else " [gpuproxyd runs INVALID]"
best = max((t for t in ("nginx", "haproxy") if summary.get(t, {}).get("rps_c32")),
           key=lambda t: summary[t]["rps_c32"], default=None)
if g.get("available") and g.get("rps_c32") and best:
    ratios["rps_vs_best"] = g["rps_c32"] / summary[best]["rps_c32"]
    print(f"- gpuproxyd req/s / max(nginx, haproxy) = {ratios['rps_vs_best']:.3f} "
          f"({f(g['rps_c32'])} vs {best} {f(summary[best]['rps_c32'])}){flag}")
else:
    print("- gpuproxyd req/s / max(nginx, haproxy) = n/a")
ng = summary.get("nginx", {})
if g.get("available") and g.get("added_c1_us") is not None and ng.get("added_c1_us") is not None:
    ga, na = g["added_c1_us"], ng["added_c1_us"]
    ratios["added_latency_diff_vs_nginx_us"] = ga - na
    ratios["added_latency_ratio_vs_nginx"] = ga / na if na > 0 else None
    rtxt = f"{ga / na:.2f}x" if na > 0 else "n/a (nginx adds <= 0 us)"
    print(f"- gpuproxyd added latency at c1 = {ga:.1f} us vs nginx {na:.1f} us "
          f"({ga - na:+.1f} us, {rtxt}){flag}")
else:
    print("- gpuproxyd added latency at c1 vs nginx = n/a")
invalid = [t for t in targets if summary[t].get("available") and not summary[t]["valid"]]
if invalid:
    print(f"- INVALID runs (errors or non-2xx): {', '.join(invalid)}; do not use their numbers")
print()

if out_json:
    def ver(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            return None
    doc = {"rounds": rounds, "duration": duration, "cpus": os.cpu_count(),
           "kernel": platform.release(),
           "versions": {"nginx": ver(["nginx", "-v"]), "haproxy": ver(["haproxy", "-v"]),
                        "wrk": ver(["wrk", "--version"])},
           "summary": summary, "ratios": ratios, "runs": raw}
    with open(out_json, "w") as fh:
        json.dump(doc, fh, indent=2)
    print(f"raw results written to {out_json}", file=sys.stderr)
sys.exit(0)
EOF
}

main() {
    DURATION=${DURATION:-10s}
    [[ $DURATION =~ ^[0-9]+$ ]] && DURATION="${DURATION}s"
    ROUNDS=${ROUNDS:-3}
    WARMUP=${WARMUP:-1s}
    [[ $WARMUP =~ ^[0-9]+$ ]] && WARMUP="${WARMUP}s"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
    [[ $DURATION =~ ^[1-9][0-9]*s$ ]] || die "DURATION must be seconds, like 10 or 10s"
    if [[ -n ${OUT_JSON:-} && $OUT_JSON != /* ]]; then OUT_JSON="$PWD/$OUT_JSON"; fi

    bench_init
    log "temp dir $BENCH_TMP; DURATION=$DURATION ROUNDS=$ROUNDS; $(nproc) CPUs"

    start_upstream
    start_nginx_proxy
    start_haproxy
    local have_gpd=1
    start_gpuproxyd || have_gpd=0

    declare -A PORT=([direct]=$UP_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
    local targets=(direct nginx haproxy)
    if ((have_gpd)); then
        PORT[gpuproxyd]=$GPD_PORT
        targets+=(gpuproxyd)
    fi
    TARGETS_ALL="direct nginx haproxy gpuproxyd"

    local t r
    for t in "${targets[@]}"; do
        sanity_check "$t" "${PORT[$t]}" || log "WARNING: $t runs will likely be flagged invalid"
    done
    for t in "${targets[@]}"; do
        log "warm-up $t ($WARMUP)"
        run_wrk "$BENCH_TMP/res/warmup_$t.txt" "${PORT[$t]}" 2 32 "$WARMUP"
    done

    for ((r = 1; r <= ROUNDS; r++)); do
        for t in "${targets[@]}"; do
            log "round $r/$ROUNDS c32 $t"
            run_wrk "$BENCH_TMP/res/r${r}_${t}_c32.txt" "${PORT[$t]}" 2 32 "$DURATION"
        done
        for t in "${targets[@]}"; do
            log "round $r/$ROUNDS c1  $t"
            run_wrk "$BENCH_TMP/res/r${r}_${t}_c1.txt" "${PORT[$t]}" 1 1 "$DURATION"
        done
    done

    report
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
