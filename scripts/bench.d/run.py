#!/usr/bin/env python3
"""Benchmark driver for scripts/bench (which installs the peers and builds
first, then runs this).

Runs each workload against each server on 127.0.0.1, interleaved
(for rep: for workload: for server), with a fresh Maildir on the real disk per
run, and reports medians plus mailsink/peer ratios as a markdown table.
Only processes started here are ever signalled.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_SIZE = 26214400
SERVERS = ["mailsink", "smtp-sink", "aiosmtpd", "node"]
# mailsink with its test hooks (issue 10), run only when --only names them:
# the cost of --events and --keep beside the plain run, and --keep with
# 100 000 messages already kept (beside plain mailsink on the same 100 000).
HOOKS = {
    "mailsink-events": (["--events", "{rundir}/events.jsonl"], 0),
    "mailsink-keep": (["--keep", "1000"], 0),
    "mailsink-100k": ([], 100000),
    "mailsink-keep100k": (["--keep", "100000"], 100000),
}
HOOK_BASE = {"mailsink-events": "mailsink", "mailsink-keep": "mailsink",
             "mailsink-keep100k": "mailsink-100k"}
STORING = {"mailsink", "aiosmtpd", "node"} | set(HOOKS)  # smtp-sink discards: the reference
SERVER_LABEL = {
    "mailsink-events": "mailsink --events FILE",
    "mailsink-keep": "mailsink --keep 1000",
    "mailsink-100k": "mailsink, 100 000 in new/",
    "mailsink-keep100k": "mailsink --keep 100000, 100 000 in new/",
    "mailsink": "mailsink",
    "smtp-sink": "smtp-sink",
    "aiosmtpd": "aiosmtpd",
    "node": "node smtp-server",
}
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 60.0
CLIENT_TIMEOUT = 600.0

# name: (description, kind, full params, quick params)
WORKLOADS = {
    "a": ("1 session x {m} msgs of 1 KiB", "source",
          dict(s=1, m=2000, l=1024, d=True), dict(s=1, m=500, l=1024, d=True)),
    "b": ("32 sessions, {m} msgs of 1 KiB", "source",
          dict(s=32, m=10000, l=1024, d=True), dict(s=32, m=2000, l=1024, d=True)),
    "c": ("8 sessions, {m} msgs of 1 MiB", "source",
          dict(s=8, m=200, l=1048576, d=True), dict(s=8, m=50, l=1048576, d=True)),
    "d": ("{m} connections x 1 msg of 1 KiB, 16 at a time", "source",
          dict(s=16, m=2000, l=1024, d=False), dict(s=16, m=500, l=1024, d=False)),
    "e": ("pipelined (loadgen), 32 conns, {m} msgs of 1 KiB", "loadgen",
          dict(conns=32, m=10000, size=1024), dict(conns=32, m=2000, size=1024)),
    # issue 8: the same as e, each message sent as 2 pipelined BDAT chunks
    "f": ("pipelined BDAT (loadgen), 32 conns, {m} msgs of 1 KiB in 2 chunks", "loadgen",
          dict(conns=32, m=10000, size=1024, bdat=2),
          dict(conns=32, m=2000, size=1024, bdat=2)),
}
MEMCHECK = dict(conns=64, m=64, size=26000000)

STARTED = {}  # pid -> Popen, every process this driver started and has not reaped


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cleanup_children(*_):
    for pid, p in list(STARTED.items()):
        if p.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        STARTED.pop(pid, None)


def on_signal(signum, _frame):
    cleanup_children()
    log(f"bench: interrupted by signal {signum}")
    sys.exit(130)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    STARTED[p.pid] = p
    return p


def reap(p, timeout):
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait(timeout=10)
        STARTED.pop(p.pid, None)
        return rc, True
    STARTED.pop(p.pid, None)
    return rc, False


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return int(fields[11]), int(fields[12])


def system_busy_secs():
    """CPU seconds all CPUs spent busy since boot (not idle, not iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def own_cpu_secs():
    """CPU seconds of this driver plus every child it has reaped."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def proc_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def background_busy(secs=2.0):
    """Share of all CPUs busy over `secs` while this driver runs nothing."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = sample()
    time.sleep(secs)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def storage_floor(parent, tag, n=1000):
    """What the kernel charges to store small files here, with no SMTP at all:
    returns (cpu ms/file without fsync, cpu ms/file and files/s with an fsync
    of the file and of new/ per file, mean microseconds of the creating open)."""
    out = []
    for sync in (False, True):
        # left in place until the end of the bench (see Bench.cleanup)
        d = os.path.join(parent, f"floor-{tag}-{'fsync' if sync else 'nofsync'}")
        os.makedirs(os.path.join(d, "tmp"))
        os.makedirs(os.path.join(d, "new"))
        dfd = os.open(os.path.join(d, "new"), os.O_RDONLY)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        create_ns = 0
        for i in range(n):
            tmp = os.path.join(d, "tmp", str(i))
            c0 = time.perf_counter_ns()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            create_ns += time.perf_counter_ns() - c0
            os.write(fd, b"x" * 1300)
            if sync:
                os.fsync(fd)
            os.close(fd)
            os.link(tmp, os.path.join(d, "new", str(i)))
            os.unlink(tmp)
            if sync:
                os.fsync(dfd)
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        os.close(dfd)
        cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000.0 / n
        out.append((cpu, n / wall, create_ns / n / 1000.0))
    return out[0][0], out[1][0], out[1][1], out[0][2]


def fill_maildir(maildir, n):
    """n small messages in new/, named as mailsink names them and dated in
    the past, for the --keep runs at 100 000 (made without fsync: quick)."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    t0 = int(time.time()) - 10 * n
    body = b"Subject: prefill\n\nx\n"
    for i in range(n):
        name = f"{t0 + 10 * i}.M0P1Q{i}Rprefill.bench,S={len(body)}"
        with open(os.path.join(maildir, "new", name), "wb") as f:
            f.write(body)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(p, errfile, port=None):
    """Returns the port once the server is ready, or raises."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    pat = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"server exited with {p.returncode} before listening")
        if port is None:
            with open(errfile, errors="replace") as f:
                m = pat.search(f.read())
            if m:
                return int(m.group(1))
        else:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(2)
                    s.recv(512)  # the greeting
                    s.sendall(b"QUIT\r\n")
                return port
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("server did not start listening in time")


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.results = []  # dicts
        self.problems = []
        self.run_no = 0
        self.t0 = time.monotonic()
        self.idle_start = background_busy()
        self.floor_start = storage_floor(args.workdir, "start")

    # ---- servers -------------------------------------------------------
    def server_argv(self, server, maildir):
        if server in HOOKS:
            argv, _ = self.server_argv("mailsink", maildir)
            rundir = os.path.dirname(maildir)
            return argv + [a.format(rundir=rundir) for a in HOOKS[server][0]], None
        if server == "mailsink":
            return [self.args.mailsink, "--listen", "127.0.0.1:0", "--maildir", maildir,
                    "--workers", str(self.args.workers), "--max-size", str(MAX_SIZE)], None
        if server == "smtp-sink":
            port = free_port()
            argv = ["smtp-sink"]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            argv += ["-m", "1024", f"127.0.0.1:{port}", "1024"]
            return argv, port
        if server == "aiosmtpd":
            return [sys.executable, os.path.join(HERE, "aiosmtpd-sink.py"), "--listen",
                    "127.0.0.1:0", "--maildir", maildir, "--max-size", str(MAX_SIZE)], None
        if server == "node":
            return ["node", os.path.join(HERE, "node-sink.js"), "--listen", "127.0.0.1:0",
                    "--maildir", maildir, "--max-size", str(MAX_SIZE)], None
        raise ValueError(server)

    # ---- clients -------------------------------------------------------
    def client_argv(self, kind, params, port):
        if kind == "source":
            argv = ["smtp-source", "-s", str(params["s"]), "-m", str(params["m"]),
                    "-l", str(params["l"]), "-M", "bench.example",
                    "-f", "sender@bench.example", "-t", "sink@bench.example"]
            if params["d"]:
                argv.append("-d")
            return argv + [f"127.0.0.1:{port}"]
        return [self.args.loadgen, "--addr", f"127.0.0.1:{port}", "--conns",
                str(params["conns"]), "--messages", str(params["m"]), "--size",
                str(params["size"])] + (["--bdat", str(params["bdat"])] if params.get("bdat") else [])

    # ---- one run -------------------------------------------------------
    def run_one(self, rep, workload, server, kind, params):
        self.run_no += 1
        tag = f"{workload}-{server}-r{rep}-{self.run_no}"
        rundir = os.path.join(self.args.workdir, tag)
        maildir = os.path.join(rundir, "Maildir")
        os.makedirs(rundir)
        errfile = os.path.join(rundir, "server.log")
        res = {"rep": rep, "workload": workload, "server": server, "messages": params["m"],
               "ok": True, "notes": []}
        env = dict(os.environ)
        if server.startswith("mailsink"):
            env.setdefault("RUST_LOG", "info")
        prefill = HOOKS.get(server, ([], 0))[1]
        if prefill:
            fill_maildir(maildir, prefill)
        argv, port = self.server_argv(server, maildir)
        busy0, own0, wall0 = system_busy_secs(), own_cpu_secs(), time.monotonic()
        with open(errfile, "wb") as ef:
            p = spawn(argv, stdin=subprocess.DEVNULL, stdout=ef, stderr=subprocess.STDOUT,
                      env=env, cwd=rundir)
        client_out = ""
        try:
            port = wait_listening(p, errfile, port)
            res["start_s"] = time.monotonic() - wall0
            cpu0 = proc_cpu_ticks(p.pid)
            cargv = self.client_argv(kind, params, port)
            t_start = time.monotonic()
            c = spawn(cargv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, cwd=rundir)
            try:
                out, _ = c.communicate(timeout=CLIENT_TIMEOUT)
                timed_out = False
            except subprocess.TimeoutExpired:
                c.kill()
                out, _ = c.communicate()
                timed_out = True
            STARTED.pop(c.pid, None)
            wall = time.monotonic() - t_start
            client_out = out.decode(errors="replace")
            cpu1 = proc_cpu_ticks(p.pid)
            res["user_ms_per_msg"] = (cpu1[0] - cpu0[0]) * 1000.0 / CLK_TCK / params["m"]
            res["sys_ms_per_msg"] = (cpu1[1] - cpu0[1]) * 1000.0 / CLK_TCK / params["m"]
            hwm = proc_hwm_kib(p.pid)
            res["wall_s"] = wall
            res["client_rc"] = c.returncode
            res["rss_mib"] = hwm / 1024.0 if hwm is not None else None
            res["cpu_ms_per_msg"] = res["user_ms_per_msg"] + res["sys_ms_per_msg"]
            res["msgs_per_s"] = params["m"] / wall
            if kind == "loadgen":
                m = re.search(r"loadgen: messages=(\d+) failed=(\d+) secs=([\d.]+) "
                              r"msgs_per_sec=([\d.]+) p50_ms=([\d.naN]+) p99_ms=([\d.naN]+)",
                              client_out)
                if c.returncode == 3:
                    res["ok"] = False
                    res["unsupported"] = True
                    res["notes"].append("no CHUNKING" if params.get("bdat") else "no PIPELINING")
                elif m:
                    res["msgs_per_s"] = float(m.group(4))
                    res["p50_ms"] = float(m.group(5))
                    res["p99_ms"] = float(m.group(6))
                    if int(m.group(2)):
                        res["notes"].append(f"{m.group(2)} failed")
            if timed_out:
                res["ok"] = False
                res["notes"].append(f"client timed out after {CLIENT_TIMEOUT:.0f}s")
            elif c.returncode != 0 and not res.get("unsupported"):
                res["ok"] = False
                res["notes"].append(f"client exit {c.returncode}")
        except Exception as e:  # noqa: BLE001 - reported, run marked bad
            res["ok"] = False
            res["notes"].append(f"error: {e}")
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            rc, killed = reap(p, SERVER_STOP_TIMEOUT)
        res["server_rc"] = rc
        # CPU that neither this driver nor its server and client used during
        # the run (other processes, and kernel threads), as a share of all CPUs
        foreign = (system_busy_secs() - busy0) - (own_cpu_secs() - own0)
        res["foreign_cpu"] = max(0.0, foreign) / max(
            1e-9, (time.monotonic() - wall0) * (os.cpu_count() or 1))
        if killed:
            res["ok"] = False
            res["notes"].append("server ignored SIGTERM; killed")
        elif server != "smtp-sink" and rc != 0:
            res["ok"] = False
            res["notes"].append(f"server exit {rc}")
        with open(errfile, errors="replace") as f:
            slog = f.read()
        m = None
        for m in re.finditer(r"shutdown: stored (\d+) messages?(?:, (\d+) fsyncs?)?", slog):
            pass
        if m and m.group(2) is not None:
            res["fsync_per_msg"] = int(m.group(2)) / max(1, int(m.group(1)))
        if server in STORING and not res.get("unsupported"):
            newdir = os.path.join(maildir, "new")
            stored = len(os.listdir(newdir)) if os.path.isdir(newdir) else 0
            res["stored"] = stored
            want = params["m"] + prefill
            if server in ("mailsink-keep", "mailsink-keep100k"):
                want = min(want, int(HOOKS[server][0][1]))
            if stored != want:
                res["ok"] = False
                res["notes"].append(f"{stored} in new/, expected {want}")
            if server == "mailsink-events":
                with open(os.path.join(rundir, "events.jsonl")) as f:
                    lines = sum(1 for line in f if '"event":"stored"' in line)
                if lines != params["m"]:
                    res["ok"] = False
                    res["notes"].append(f"{lines} stored events for {params['m']} messages")
        if not res["ok"] and not res.get("unsupported"):
            keep = os.path.join(self.args.workdir, "failed-logs")
            os.makedirs(keep, exist_ok=True)
            with open(os.path.join(keep, tag + ".log"), "w") as f:
                f.write(f"server: {' '.join(argv)}\n--- client output ---\n{client_out}\n"
                        f"--- server log (last 200 lines) ---\n")
                f.write("\n".join(slog.splitlines()[-200:]) + "\n")
            self.problems.append(f"{workload}/{SERVER_LABEL[server]} rep {rep}: "
                                 f"{'; '.join(res['notes'])} (log: {keep}/{tag}.log)")
        if self.args.delete_each:
            shutil.rmtree(rundir, ignore_errors=True)
        self.results.append(res)
        log(self.describe(res))
        return res

    def describe(self, r):
        if r.get("unsupported"):
            return f"  [rep {r['rep']}] {r['workload']} {r['server']}: skipped ({'; '.join(r['notes'])})"
        parts = [f"  [rep {r['rep']}] {r['workload']} {r['server']}:"]
        if "msgs_per_s" in r:
            parts.append(f"{r['msgs_per_s']:.0f} msg/s")
        if r.get("rss_mib") is not None:
            parts.append(f"RSS {r['rss_mib']:.1f} MiB")
        if "cpu_ms_per_msg" in r:
            parts.append(f"CPU {r['cpu_ms_per_msg']:.3f} ms/msg "
                         f"(user {r['user_ms_per_msg']:.3f} sys {r['sys_ms_per_msg']:.3f})")
        if "fsync_per_msg" in r:
            parts.append(f"{r['fsync_per_msg']:.2f} fsync/msg")
        if "p50_ms" in r:
            parts.append(f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
        if "stored" in r:
            parts.append(f"stored {r['stored']}/{r['messages']}")
        if "foreign_cpu" in r:
            parts.append(f"[others used {r['foreign_cpu']:.0%} CPU]")
        if r["notes"]:
            parts.append("!! " + "; ".join(r["notes"]))
        return " ".join(parts)

    def cleanup(self):
        """Deletes the Maildirs (counted right after each run) and the floor
        files, keeping only logs of failed runs."""
        w = self.args.workdir
        if not os.path.isdir(w):
            return
        for name in os.listdir(w):
            if name != "failed-logs":
                shutil.rmtree(os.path.join(w, name), ignore_errors=True)
        try:
            os.rmdir(w)
        except OSError:
            log(f"bench: logs of failed runs kept in {w}/failed-logs")

    # ---- the whole plan -----------------------------------------------
    def over_budget(self):
        return time.monotonic() - self.t0 > self.args.max_minutes * 60

    def run(self):
        reps = self.args.reps
        for rep in range(1, reps + 1):
            for w in self.args.workloads:
                desc, kind, full, quick = WORKLOADS[w]
                params = quick if self.quick else full
                # rotate the order each repetition, so that no server always
                # runs first (right after the previous workload's load)
                order = self.args.servers[(rep - 1) % len(self.args.servers):] + \
                    self.args.servers[:(rep - 1) % len(self.args.servers)]
                for s in order:
                    if self.over_budget():
                        self.problems.append(
                            f"time budget of {self.args.max_minutes} min used up; "
                            f"stopped before rep {rep} {w}/{s}")
                        return
                    self.run_one(rep, w, s, kind, params)
        if self.args.memcheck and "mailsink" in self.args.servers and not self.over_budget():
            log("memory check: 64 clients x 25 MiB message against mailsink")
            self.run_one(1, "mem", "mailsink", "loadgen", MEMCHECK)

    # ---- report --------------------------------------------------------
    def runs(self, w, s, good_only=True):
        return [r for r in self.results if r["workload"] == w and r["server"] == s
                and (r["ok"] or not good_only)]

    def median(self, w, s, key):
        vals = [r[key] for r in self.runs(w, s) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def ratio(self, w, peer, ours="mailsink"):
        """Median over reps of ours/peer msg/s, each pair from the same rep."""
        ours = {r["rep"]: r["msgs_per_s"] for r in self.runs(w, ours)}
        theirs = {r["rep"]: r["msgs_per_s"] for r in self.runs(w, peer)}
        rs = [ours[k] / theirs[k] for k in ours if k in theirs and theirs[k] > 0]
        if not rs:
            return None, []
        return statistics.median(rs), rs

    def report(self):
        a = self.args
        out = []
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        fstype = subprocess.run(["stat", "-f", "-c", "%T", a.workdir], capture_output=True,
                                text=True).stdout.strip()
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or "uncommitted"
        mode = "quick" if self.quick else "full"
        out.append(f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores "
                   f"({cpu}), Linux {platform.release()}, Maildir on {fstype} "
                   f"(real fsync), mailsink {rev}, `scripts/bench` {mode} run: "
                   f"{a.reps} repetition(s), interleaved, medians shown. "
                   f"Clients: Postfix `smtp-source` (no pipelining) for a-d, "
                   f"`examples/loadgen.rs` for e. mailsink ran with "
                   f"`--workers {a.workers} --max-size {MAX_SIZE}`.")
        busy_end = background_busy()
        floor_end = storage_floor(a.workdir, "end")
        out.append("")
        out.append("Storage floor on this disk (a Python loop storing 1000 files of 1.3 KB, "
                   "no SMTP): "
                   + "; ".join(f"{when}: {f[0]:.3f} ms CPU/file without fsync "
                               f"(creating open() {f[3]:.0f} µs), "
                               f"{f[1]:.3f} ms CPU/file and {f[2]:.0f} files/s with an fsync "
                               f"of the file and of new/ per file"
                               for when, f in (("before", self.floor_start),
                                               ("after", floor_end)))
                   + ".")
        foreign = sorted(r["foreign_cpu"] for r in self.results if "foreign_cpu" in r)
        if foreign and (max(self.idle_start, busy_end) > 0.10
                        or statistics.median(foreign) > 0.10):
            out.append("")
            out.append(f"Warning: the machine was not idle. Other processes (and kernel "
                       f"threads) used {self.idle_start:.0%} of its CPU just before the "
                       f"runs, {busy_end:.0%} just after, and during the runs "
                       f"{statistics.median(foreign):.0%} in the median run "
                       f"({foreign[-1]:.0%} at most). Absolute figures are noisy; "
                       f"the interleaved ratios less so.")
        out.append("")
        out.append("| workload | server | msg/s | RSS MiB | CPU ms/msg | fsync/msg | p50 / p99 ms | stored |")
        out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for w in a.workloads:
            desc, kind, full, quick = WORKLOADS[w]
            params = quick if self.quick else full
            wdesc = f"{w}) " + desc.format(m=params["m"])
            for s in a.servers:
                allr = self.runs(w, s, good_only=False)
                if not allr:
                    continue
                if all(r.get("unsupported") for r in allr):
                    why = "no CHUNKING" if WORKLOADS[w][2].get("bdat") else "no PIPELINING"
                    out.append(f"| {wdesc} | {SERVER_LABEL[s]} | n/a ({why}) | | | | | |")
                    continue
                good = self.runs(w, s)
                bad = [r for r in allr if not r["ok"]]

                def fmt(key, spec, none="n/a"):
                    v = self.median(w, s, key)
                    return format(v, spec) if v is not None else none
                lat = "—"
                if kind == "loadgen" and self.median(w, s, "p50_ms") is not None:
                    lat = f"{fmt('p50_ms', '.2f')} / {fmt('p99_ms', '.2f')}"
                fs = fmt("fsync_per_msg", ".2f") if s != "smtp-sink" else "—"
                if s in STORING:
                    stored = "all" if not bad else f"**MISSING in {len(bad)} of {len(allr)} runs**"
                else:
                    stored = "n/a (discards)" if not bad else f"**FAILED {len(bad)} of {len(allr)} runs**"
                if not good:
                    out.append(f"| {wdesc} | {SERVER_LABEL[s]} | **failed** | | | | | {stored} |")
                    continue
                out.append(f"| {wdesc} | {SERVER_LABEL[s]} | {fmt('msgs_per_s', '.0f')} | "
                           f"{fmt('rss_mib', '.1f')} | {fmt('cpu_ms_per_msg', '.3f')} | {fs} | "
                           f"{lat} | {stored} |")
        out.append("")
        if "mailsink" in a.servers:
            out.append("Throughput ratio mailsink / peer (median of per-repetition ratios, "
                       "range in brackets):")
            out.append("")
            for w in a.workloads:
                parts = []
                for s in a.servers:
                    if s == "mailsink" or s in HOOKS:
                        continue
                    med, rs = self.ratio(w, s)
                    if med is None:
                        continue
                    rng = f" [{min(rs):.2f}–{max(rs):.2f}]" if len(rs) > 1 else ""
                    parts.append(f"{SERVER_LABEL[s]} {med:.2f}×{rng}")
                if parts:
                    out.append(f"- {w}: " + ", ".join(parts))
            out.append("")
            if "e" in a.workloads and "f" in a.workloads:  # issue 8: BDAT beside DATA
                pairs = {r["rep"]: r["msgs_per_s"] for r in self.runs("e", "mailsink")}
                rs = [r["msgs_per_s"] / pairs[r["rep"]] for r in self.runs("f", "mailsink")
                      if pairs.get(r["rep"])]
                if rs:
                    rng = f" [{min(rs):.2f}–{max(rs):.2f}]" if len(rs) > 1 else ""
                    out.append(f"mailsink BDAT / DATA throughput (f / e): "
                               f"{statistics.median(rs):.2f}×{rng}")
                    out.append("")
        hook_lines = []
        for w in a.workloads:
            for s, base in HOOK_BASE.items():
                if s in a.servers and base in a.servers:
                    med, rs = self.ratio(w, base, ours=s)
                    if med is not None:
                        rng = f" [{min(rs):.2f}–{max(rs):.2f}]" if len(rs) > 1 else ""
                        hook_lines.append(f"- {w}: {SERVER_LABEL[s]} / {SERVER_LABEL[base]}: "
                                          f"{med:.2f}×{rng}")
            for s in ("mailsink-100k", "mailsink-keep100k"):
                st = self.median(w, s, "start_s")
                if s in a.servers and st is not None:
                    hook_lines.append(f"- {w}: {SERVER_LABEL[s]}: listening {st:.2f} s after "
                                      f"the start")
        if hook_lines:
            out.append("Cost of the test hooks (throughput ratio to the same server without "
                       "them, median of per-repetition ratios):")
            out.append("")
            out.extend(hook_lines)
            out.append("")
        mem = self.runs("mem", "mailsink", good_only=False)
        if mem:
            r = mem[0]
            rss = f"{r['rss_mib']:.1f} MiB" if r.get("rss_mib") is not None else "n/a"
            status = "all 64 stored" if r["ok"] else "; ".join(r["notes"])
            extra = ""
            if "msgs_per_s" in r and r["ok"]:
                extra = f", {r['msgs_per_s']:.1f} msg/s"
            out.append(f"Memory check: 64 concurrent clients × one 25 MiB message "
                       f"(`--max-size {MAX_SIZE}`): mailsink peak RSS **{rss}**{extra} ({status}).")
            out.append("")
        out.append("Notes: smtp-sink discards messages (no storage: the protocol-speed "
                   "reference). aiosmtpd uses its stock `Mailbox` handler (Python's "
                   "`mailbox.Maildir`, which does not fsync) and does not offer PIPELINING. "
                   "The node peer (nodemailer `smtp-server`, `scripts/bench.d/node-sink.js`) "
                   "stores as mailsink does: tmp file, fsync, link into new/, fsync new/; "
                   "smtp-server waits 100 ms before its greeting (a fixed early-talker "
                   "check), which caps it near 160 connections/s in d. "
                   "msg/s is messages over the client's wall time; for e it is loadgen's own figure, "
                   "timed from when all 32 sessions have said EHLO, and its latency runs from "
                   "the final dot to the 250. "
                   "RSS is VmHWM of the server process; CPU is its utime+stime over the run; "
                   "fsync/msg is the server's own count of sync calls (for mailsink, a "
                   "syncfs counts as one). "
                   + ("Each Maildir is counted right after its run and deleted at the end "
                      "of the bench: on ext4 without a journal, file creation right after "
                      "thousands of deletions is many times slower (the inode allocator "
                      "skips recently freed inodes), which would handicap whichever server "
                      "ran next." if not self.args.delete_each else
                      "Each Maildir was deleted right after its run (--delete-each)."))
        if self.problems:
            out.append("")
            out.append("Problems:")
            out.append("")
            for pr in self.problems:
                out.append(f"- {pr}")
        table = "\n".join(out)

        checks = self.targets()
        lines = ["", "Targets:"]
        for name, verdict, detail in checks:
            lines.append(f"  {verdict:4} {name}: {detail}")
        return table, "\n".join(lines), checks

    def targets(self):
        a = self.args
        checks = []
        have = set(a.servers)

        def ratio_check(w, peer, need):
            name = f"{w}: mailsink >= {need}x {SERVER_LABEL[peer]}"
            if w not in a.workloads or "mailsink" not in have or peer not in have:
                return (name, "n/a", "not run")
            med, rs = self.ratio(w, peer)
            if med is None:
                return (name, "MISS", "no good run pair")
            return (name, "PASS" if med >= need else "MISS", f"{med:.2f}x")
        checks.append(ratio_check("a", "node", 3))
        checks.append(ratio_check("b", "node", 5))
        checks.append(ratio_check("b", "smtp-sink", 0.5))
        checks.append(ratio_check("c", "node", 2))
        checks.append(ratio_check("d", "smtp-sink", 0.4))
        checks.append(ratio_check("d", "aiosmtpd", 5))
        for w in ("a", "b", "d"):
            name = f"{w}: mailsink peak RSS <= 16 MiB (worst repetition)"
            rs = [r["rss_mib"] for r in self.runs(w, "mailsink", good_only=False)
                  if r.get("rss_mib") is not None]
            if w not in a.workloads or "mailsink" not in have:
                checks.append((name, "n/a", "not run"))
            elif not rs:
                checks.append((name, "MISS", "no measurement"))
            else:
                checks.append((name, "PASS" if max(rs) <= 16 else "MISS", f"{max(rs):.1f} MiB"))
        mem = self.runs("mem", "mailsink", good_only=False)
        name = "64 x 25 MiB: mailsink peak RSS <= 128 MiB"
        if not mem:
            checks.append((name, "n/a", "not run"))
        else:
            r = mem[0]
            if r.get("rss_mib") is None:
                checks.append((name, "MISS", "no measurement"))
            else:
                v = "PASS" if r["rss_mib"] <= 128 and r["ok"] else "MISS"
                note = "" if r["ok"] else " (" + "; ".join(r["notes"]) + ")"
                checks.append((name, v, f"{r['rss_mib']:.1f} MiB{note}"))
        name = "b: mailsink CPU <= 0.1 ms/msg"
        if "b" not in a.workloads or "mailsink" not in have:
            checks.append((name, "n/a", "not run"))
        else:
            v = self.median("b", "mailsink", "cpu_ms_per_msg")
            if v is None:
                checks.append((name, "MISS", "no good run"))
            else:
                checks.append((name, "PASS" if v <= 0.1 else "MISS", f"{v:.3f} ms/msg"))
        for s, base in HOOK_BASE.items():
            if s not in have:
                continue
            name = f"b: {SERVER_LABEL[s]} costs < 10% of {SERVER_LABEL[base]}'s msg/s"
            med, _ = self.ratio("b", base, ours=s) if "b" in a.workloads else (None, [])
            if med is None:
                checks.append((name, "n/a", "not run"))
            else:
                checks.append((name, "PASS" if med >= 0.9 else "MISS", f"{med:.2f}x"))
            bad = [r for r in self.results if r["server"] == s and not r["ok"]]
            checks.append((f"{SERVER_LABEL[s]}: every run stored and kept what it should",
                           "PASS" if not bad else "MISS",
                           "ok" if not bad else f"{len(bad)} bad run(s)"))
        if "mailsink" in have:
            bad = [r for r in self.results if r["server"] == "mailsink" and not r["ok"]]
            checks.append(("mailsink stored every message, every run",
                           "PASS" if not bad else "MISS",
                           "ok" if not bad else f"{len(bad)} bad run(s)"))
        return checks


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench")
    ap.add_argument("--quick", action="store_true",
                    help="1 repetition, smaller message counts")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    ap.add_argument("--only", help="comma-separated servers: " + ",".join(SERVERS + list(HOOKS)))
    ap.add_argument("--workloads", default="a,b,c,d,e,f", help="comma-separated, of a,b,c,d,e,f (f: BDAT)")
    ap.add_argument("--no-memcheck", dest="memcheck", action="store_false",
                    help="skip the 64 x 25 MiB memory check")
    ap.add_argument("--out", help="also write the markdown report to this file")
    ap.add_argument("--json", help="write raw per-run results to this file")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/var/tmp"),
                    help="parent of the per-run Maildirs (real disk, not tmpfs)")
    ap.add_argument("--delete-each", action="store_true",
                    help="delete each Maildir right after counting it, not at the end")
    ap.add_argument("--workers", type=int, default=64, help="mailsink --workers")
    ap.add_argument("--max-minutes", type=float, default=30,
                    help="stop starting new runs after this many minutes")
    ap.add_argument("--mailsink", default=os.path.join(REPO, "target/release/mailsink"))
    ap.add_argument("--loadgen", default=os.path.join(REPO, "target/release/examples/loadgen"))
    a = ap.parse_args()
    a.reps = a.reps if a.reps else (1 if a.quick else 3)
    if not 1 <= a.reps <= 10:
        ap.error("--reps must be 1..10")
    a.servers = SERVERS if not a.only else [s.strip() for s in a.only.split(",") if s.strip()]
    for s in a.servers:
        if s not in SERVERS and s not in HOOKS:
            ap.error(f"unknown server {s!r} in --only (known: {', '.join(SERVERS + list(HOOKS))})")
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    for w in a.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (known: {','.join(WORKLOADS)})")
    fstype = subprocess.run(["stat", "-f", "-c", "%T", a.workdir], capture_output=True,
                            text=True).stdout.strip()
    if fstype in ("tmpfs", "ramfs"):
        ap.error(f"--workdir {a.workdir} is on {fstype}; fsync would not reach a disk")
    a.workdir = os.path.join(os.path.abspath(a.workdir),
                             f"mailsink-bench.{os.getpid()}")
    os.makedirs(a.workdir)
    # room to keep every Maildir until the end?
    need = 2 << 30
    for w in a.workloads:
        _, kind, full, quick = WORKLOADS[w]
        prm = quick if a.quick else full
        size = prm.get("l", prm.get("size", 1024)) + 2048
        need += prm["m"] * size * len(STORING & set(a.servers)) * a.reps
    if a.memcheck:
        need += MEMCHECK["m"] * MEMCHECK["size"]
    st = os.statvfs(a.workdir)
    if not a.delete_each and st.f_bavail * st.f_frsize < need:
        log(f"bench: less than {need >> 20} MiB free under {a.workdir}; "
            f"deleting each Maildir right after its run")
        a.delete_each = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bench = Bench(a)
    try:
        log(f"bench: {a.reps} repetition(s) of workloads {','.join(a.workloads)} against "
            f"{', '.join(a.servers)}; work dir {a.workdir}")
        bench.run()
        cleanup_children()
        table, verdicts, _ = bench.report()
    finally:
        cleanup_children()
        bench.cleanup()
    print(table)
    print(verdicts)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n" + verdicts + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(bench.results, f, indent=1)
    log(f"bench: done in {(time.monotonic() - bench.t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
