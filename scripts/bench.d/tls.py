#!/usr/bin/env python3
"""TLS benchmark (issue 9): mailsink beside node smtp-server, both with
STARTTLS on the same ECDSA P-256 certificate (made by openssl), driven by
examples/tlsload.rs on loopback. Run by `scripts/bench --tls [--quick]
[--reps N]`.

Workloads, interleaved per repetition (for rep: for workload: for server):
  sessions    32 long TLS sessions, pipelined 1 KiB messages (b-like)
  handshakes  one message per connection, 16 at a time: handshakes/s (d-like)
  plain       the sessions workload without TLS (examples/loadgen): the
              baseline that shows what TLS adds per message
  hold        64 TLS sessions open and idle: the server's RSS
Figures: messages (or handshakes) per second, server CPU ms per message
(utime+stime of the server process over the run), RSS. Medians over reps.
Each run gets a fresh Maildir; they are deleted only at the end.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class Server:
    def __init__(self, kind, work, cert, key, tag):
        self.md = os.path.join(work, "md", tag)
        self.err = open(os.path.join(work, f"{tag}.log"), "w+")
        if kind == "mailsink":
            argv = [os.path.join(REPO, "target/release/mailsink"), "--listen", "127.0.0.1:0",
                    "--maildir", self.md, "--hostname", "bench.example",
                    "--tls-cert", cert, "--tls-key", key]
            env = dict(os.environ, RUST_LOG="warn,mailsink::server=info")
        else:
            argv = ["node", os.path.join(HERE, "node-sink.js"), "--listen", "127.0.0.1:0",
                    "--maildir", self.md, "--tls-key", key, "--tls-cert", cert]
            env = os.environ
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err, env=env)
        self.port = None
        deadline = time.time() + 15
        while time.time() < deadline and self.port is None:
            self.err.seek(0)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.err.read())
            if m:
                self.port = int(m.group(1))
            elif self.p.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if self.port is None:
            self.stop()
            self.err.seek(0)
            raise RuntimeError(f"{kind} did not start: {self.err.read()[-2000:]}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def run_load(server, workload, n, tools):
    addr = f"127.0.0.1:{server.port}"
    if workload == "plain":
        argv = [tools["loadgen"], "--addr", addr, "--conns", "32", "--messages", str(n),
                "--size", "1024"]
    else:
        conns = {"sessions": 32, "handshakes": 16}[workload]
        argv = [tools["tlsload"], "--addr", addr, "--mode", workload, "--conns", str(conns),
                "--messages", str(n)]
    before = cpu_secs(server.p.pid)
    t0 = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    secs = time.time() - t0
    cpu = cpu_secs(server.p.pid) - before
    if out.returncode != 0:
        raise RuntimeError(f"{workload}: {out.stdout[-500:]} {out.stderr[-1000:]}")
    m = re.search(r"(?:per_sec|msgs_per_sec)=([0-9.]+)", out.stdout)
    return {"rate": float(m.group(1)) if m else n / secs, "cpu_ms": 1000 * cpu / n}


def run_hold(server, tools, conns=64):
    base = status_kib(server.p.pid, "VmRSS")
    p = subprocess.Popen([tools["tlsload"], "--addr", f"127.0.0.1:{server.port}", "--mode", "hold",
                          "--conns", str(conns), "--secs", "2"], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if "holding" not in line:
        p.wait(30)
        raise RuntimeError(f"hold: {line!r}")
    time.sleep(0.5)
    held = status_kib(server.p.pid, "VmRSS")
    p.wait(60)
    return {"rss_base_mib": base / 1024, "rss_mib": held / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repetition, smaller counts")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only", default="mailsink,node")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    reps = a.reps or (1 if a.quick else 3)
    counts = {"sessions": 2000, "handshakes": 300, "plain": 2000} if a.quick else \
        {"sessions": 10000, "handshakes": 1000, "plain": 10000}
    servers = [s for s in a.only.split(",") if s]
    if not a.no_build:
        log("bench --tls: building mailsink, tlsload and loadgen (release)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "tlsload",
                        "--example", "loadgen", "--bin", "mailsink"], cwd=REPO, check=True)
    if "node" in servers and not os.path.isdir(os.path.join(HERE, "node_modules", "smtp-server")):
        log("bench --tls: installing smtp-server from npm into scripts/bench.d/node_modules")
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund",
                        "--no-package-lock", "--omit=dev"], cwd=HERE, check=True)
    tools = {"tlsload": os.path.join(REPO, "target/release/examples/tlsload"),
             "loadgen": os.path.join(REPO, "target/release/examples/loadgen")}
    work = tempfile.mkdtemp(prefix="mailsink-bench-tls.", dir=os.path.join(REPO, "target"))
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", "/CN=localhost",
                    "-days", "2", "-out", cert], check=True, capture_output=True)
    results = {}  # (workload, server) -> [dict]
    problems = []
    run_no = 0
    try:
        for rep in range(reps):
            for w in ["sessions", "handshakes", "plain", "hold"]:
                for s in servers:
                    run_no += 1
                    srv = Server(s, work, cert, key, f"{w}-{s}-{rep}-{run_no}")
                    try:
                        r = run_hold(srv, tools) if w == "hold" else run_load(srv, w, counts[w], tools)
                        results.setdefault((w, s), []).append(r)
                        log(f"  [rep {rep}] {w} {s}: {r}")
                    except Exception as e:  # reported, the run goes on
                        problems.append(f"{w}/{s} rep {rep}: {e}")
                        log(f"  [rep {rep}] {w} {s}: FAILED {e}")
                    finally:
                        srv.stop()
    finally:
        report(results, servers, reps, counts, problems)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def med(results, w, s, key):
    v = [r[key] for r in results.get((w, s), []) if key in r]
    return statistics.median(v) if v else None


def report(results, servers, reps, counts, problems):
    f = lambda v, spec: "n/a" if v is None else format(v, spec)
    print(f"\nTLS benchmark, {reps} repetition(s), medians; {os.cpu_count()} CPUs (shared machine)\n")
    print("| workload | server | msg/s (handshakes/s) | server CPU ms/msg |")
    print("| --- | --- | --- | --- |")
    for w in ["sessions", "handshakes", "plain"]:
        for s in servers:
            print(f"| {w} ({counts[w]}) | {s} | {f(med(results, w, s, 'rate'), '.0f')} | "
                  f"{f(med(results, w, s, 'cpu_ms'), '.3f')} |")
    print("\n| server | RSS idle MiB | RSS with 64 TLS sessions MiB |")
    print("| --- | --- | --- |")
    for s in servers:
        print(f"| {s} | {f(med(results, 'hold', s, 'rss_base_mib'), '.1f')} | "
              f"{f(med(results, 'hold', s, 'rss_mib'), '.1f')} |")
    print()
    for s in servers:
        tls, plain = med(results, "sessions", s, "cpu_ms"), med(results, "plain", s, "cpu_ms")
        if tls is not None and plain is not None:
            print(f"{s}: TLS adds {tls - plain:.3f} CPU ms per message in long sessions "
                  f"({tls:.3f} vs {plain:.3f} plain)")
    checks = []
    ms_rss = med(results, "hold", "mailsink", "rss_mib")
    if ms_rss is not None:
        checks.append((ms_rss < 32, f"mailsink RSS with 64 TLS sessions {ms_rss:.1f} MiB < 32 MiB"))
    for w in ["sessions", "handshakes"]:
        a, b = med(results, w, "mailsink", "cpu_ms"), med(results, w, "node", "cpu_ms")
        if a is not None and b is not None:
            checks.append((a < b, f"{w}: mailsink CPU {a:.3f} ms/msg < node {b:.3f} ms/msg"))
    for ok, text in checks:
        print(("PASS " if ok else "MISS ") + text)
    for p in problems:
        print("PROBLEM " + p)


if __name__ == "__main__":
    sys.exit(main())
