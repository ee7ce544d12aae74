#!/usr/bin/python3
"""Memory cost of idle client connections on a proxy.

Opens N TCP connections to 127.0.0.1:PORT, waits, and reports the growth of
the resident memory (sum of VmRSS from /proc/PID/status) of the given
processes -- and of their child processes, e.g. nginx workers -- divided by
the number of connections still open.

  --mode idle     connect and send nothing
  --mode request  send one complete keep-alive request on each connection,
                  read the whole response, then leave the connection idle

Only user-space memory is counted (VmRSS); kernel socket buffers are not.

  bench/idle_memory.py --port 8081 --pids 1234 [-n 10000] [--mode request]
"""

import argparse
import json
import os
import resource
import socket
import sys
import time

CHAT_BODY = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'


def children(pid):
    """Direct children of pid (from /proc/*/stat)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # field 4 (ppid) follows the ")" that closes the command name
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def all_pids(pids, with_children):
    seen = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        if with_children:
            todo.extend(children(pid))
    return sorted(seen)


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            raise SystemExit(f"process {pid} is gone")
    return total


def _more(sock, buf, deadline, what):
    if time.monotonic() > deadline:
        raise TimeoutError(what)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError(f"closed inside the {what}")
    return buf + chunk


def read_chunked(sock, buf, deadline):
    """Consumes a chunked body (with optional trailers)."""
    pos = 0
    while True:
        while b"\r\n" not in buf[pos:]:
            buf = _more(sock, buf, deadline, "chunk size")
        end = buf.index(b"\r\n", pos)
        size = int(buf[pos:end].split(b";")[0].strip() or b"0", 16)
        pos = end + 2
        if size == 0:
            while buf[pos:pos + 2] != b"\r\n" and b"\r\n\r\n" not in buf[pos:]:
                buf = _more(sock, buf, deadline, "chunked trailer")
            return
        while len(buf) < pos + size + 2:
            buf = _more(sock, buf, deadline, "chunk data")
        pos += size + 2


def read_response(sock, deadline):
    """Reads one HTTP/1.1 response; returns (status, keep_alive)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("response headers")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    keep_alive = "close" not in headers.get("connection", "")
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            if time.monotonic() > deadline:
                raise TimeoutError("response body")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the response body")
            body += chunk
    elif "chunked" in headers.get("transfer-encoding", ""):
        read_chunked(sock, body, deadline)
    elif status not in (204, 304) and status >= 200:
        keep_alive = False  # body delimited by close: the connection cannot stay
    return status, keep_alive


def alive(sock):
    # Non-blocking peek: with a timeout set, Python would first wait for the
    # socket to become readable.
    sock.setblocking(False)
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1", "localhost"],
                    help="loopback only")
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose RSS is summed")
    ap.add_argument("--no-children", action="store_true", help="do not add child processes")
    ap.add_argument("-n", "--connections", type=int, default=10000)
    ap.add_argument("--mode", choices=["idle", "request"], default="idle")
    ap.add_argument("--method", default="POST")
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--body", default=CHAT_BODY, help="request body (POST/PUT); '' for none")
    ap.add_argument("--wait", type=float, default=2.0, help="seconds idle before measuring")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on the whole run")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    args = ap.parse_args()

    want = args.connections + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            print(f"warning: fd limit {new} < {want}; opening fewer connections",
                  file=sys.stderr)
            args.connections = new - 200

    pids = all_pids([int(p) for p in args.pids.split(",") if p.strip()], not args.no_children)
    deadline = time.monotonic() + args.timeout

    request = b""
    if args.mode == "request":
        body = args.body.encode()
        lines = [f"{args.method} {args.path} HTTP/1.1", f"Host: {args.host}:{args.port}",
                 "Connection: keep-alive"]
        if body or args.method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    time.sleep(0.5)
    before = rss_bytes(pids)

    family = socket.AF_INET6 if args.host == "::1" else socket.AF_INET
    socks, errors, bad_status, closed_by_server = [], 0, 0, 0
    first_error = None
    for _ in range(args.connections):
        if time.monotonic() > deadline:
            print("warning: time bound reached while connecting", file=sys.stderr)
            break
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((args.host, args.port))
            if request:
                s.sendall(request)
                status, keep = read_response(s, min(deadline, time.monotonic() + 5))
                if not 200 <= status < 300:
                    bad_status += 1
                if not keep:
                    closed_by_server += 1
            socks.append(s)
        except (OSError, TimeoutError, ValueError, IndexError) as e:
            errors += 1
            first_error = first_error or repr(e)
            s.close()
            if errors > 100:
                print(f"too many errors ({first_error}); stopping", file=sys.stderr)
                break
    opened = len(socks)

    time.sleep(args.wait)
    open_now = sum(1 for s in socks if alive(s))
    pids_after = all_pids([int(p) for p in args.pids.split(",") if p.strip()], not args.no_children)
    after = rss_bytes(pids_after)
    for s in socks:
        s.close()

    delta = after - before
    per_conn = delta / open_now if open_now else None
    result = {
        "label": args.label, "port": args.port, "mode": args.mode, "pids": pids_after,
        "requested": args.connections, "opened": opened, "open_at_measure": open_now,
        "connect_errors": errors, "first_error": first_error, "non_2xx": bad_status,
        "closed_by_server": closed_by_server,
        "rss_before": before, "rss_after": after, "rss_delta": delta,
        "bytes_per_conn": per_conn,
        "valid": bool(open_now) and errors == 0 and bad_status == 0 and open_now == args.connections,
    }
    label = f"{args.label} " if args.label else ""
    per = f"{per_conn:,.0f}" if per_conn is not None else "n/a"
    print(f"{label}{args.mode}: {open_now}/{args.connections} connections open, "
          f"RSS {before / 1024:,.0f} KiB -> {after / 1024:,.0f} KiB, {per} bytes/connection"
          + ("" if result["valid"] else
             f"  [INVALID: errors={errors} non2xx={bad_status} closed={args.connections - open_now}"
             f"{' first error ' + first_error if first_error else ''}]"))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
