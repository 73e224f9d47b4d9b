#!/usr/bin/env python3
"""scripts/bench --neighbour (issue 13): workloads a and b against mailsink
(--sync files, the default), mailsink --sync filesystem (one syncfs per
round, the behaviour before issue 13) and node smtp-server, each alone and
beside a bulk writer on the same file system (`dd if=/dev/zero bs=1M
count=N` in a loop, no fsync), interleaved, medians over repetitions. Also
the bulk writer's own rate alone and beside each server.

Reuses run.py's one-run machinery (servers, smtp-source, stored counts).
Only processes started here are ever signalled.
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402

SERVERS = ["mailsink", "mailsink-syncfs", "node"]
LABEL = {"mailsink": "mailsink (--sync files)",
         "mailsink-syncfs": "mailsink --sync filesystem (before)",
         "node": "node smtp-server"}
base.STORING.add("mailsink-syncfs")
base.SERVER_LABEL["mailsink-syncfs"] = LABEL["mailsink-syncfs"]
# name: (description, full params, quick params)
WORKLOADS = {
    "a": ("1 session x {m} msgs of 1 KiB", dict(s=1, m=500, l=1024, d=True),
          dict(s=1, m=200, l=1024, d=True)),
    "b": ("32 sessions, {m} msgs of 1 KiB", dict(s=32, m=4000, l=1024, d=True),
          dict(s=32, m=2000, l=1024, d=True)),
}


class Bulk:
    """The neighbour: dd of `mb` MiB into one file, again and again, until
    stopped; the file is deleted at the end. rate() is MB/s over whole dd
    runs (the one running when stop() is called is allowed to finish)."""

    def __init__(self, path, mb):
        self.path, self.mb = path, mb
        self.stop_flag = threading.Event()
        self.runs, self.secs = 0, 0.0
        self.thread = threading.Thread(target=self.loop)

    def loop(self):
        while not self.stop_flag.is_set():
            t = time.monotonic()
            p = base.spawn(["dd", "if=/dev/zero", f"of={self.path}", "bs=1M",
                            f"count={self.mb}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            rc, _ = base.reap(p, 600)
            if rc != 0:
                break
            self.runs += 1
            self.secs += time.monotonic() - t

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def rate(self):
        return self.runs * self.mb * 1.048576 / self.secs if self.secs else None


def settle(limit_kib=65536, secs=15.0):
    """Before each run: write back what earlier runs (and the bulk writer)
    left dirty, so that no server pays for its predecessor. sync(1) here is
    the benchmark's doing, not the server's."""
    subprocess.run(["sync"], check=False)
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        with open("/proc/meminfo") as f:
            dirty = sum(int(line.split()[1]) for line in f
                        if line.startswith(("Dirty:", "Writeback:")))
        if dirty < limit_kib:
            return
        time.sleep(0.2)  # waiting for the kernel's writeback, bounded


class Neighbour(base.Bench):
    def __init__(self, args):  # no storage floor or idle probe: not used here
        self.args = args
        self.quick = args.quick
        self.results, self.problems = [], []
        self.run_no = 0
        self.t0 = time.monotonic()
        self.bulk_alone = []

    def server_argv(self, server, maildir):
        if server == "mailsink-syncfs":
            argv, port = super().server_argv("mailsink", maildir)
            return argv + ["--sync", "filesystem"], port
        return super().server_argv(server, maildir)

    def bulk(self):
        return Bulk(os.path.join(self.args.workdir, "bulk"), self.args.bulk_mb)

    def run(self):
        for rep in range(1, self.args.reps + 1):
            settle()
            b = self.bulk().start()
            while b.runs < 2 and b.thread.is_alive():
                time.sleep(0.2)  # two whole dd runs, nothing else going on
            b.stop()
            self.bulk_alone.append(b.rate())
            base.log(f"  [rep {rep}] bulk writer alone: {b.rate():.0f} MB/s")
            for w in self.args.workloads:
                desc, full, quick = WORKLOADS[w]
                params = quick if self.quick else full
                k = (rep - 1) % len(SERVERS)
                order = SERVERS[k:] + SERVERS[:k]
                for beside in (False, True):
                    for s in order:
                        if time.monotonic() - self.t0 > self.args.max_minutes * 60:
                            self.problems.append(f"time budget used up at rep {rep} {w}/{s}")
                            return
                        settle()
                        bulk = self.bulk().start() if beside else None
                        if bulk:
                            time.sleep(1.0)  # let its dirty pages pile up first
                        wl = f"{w}+bulk" if beside else w
                        res = self.run_one(rep, wl, s, "source", params)
                        if bulk:
                            bulk.stop()
                            res["bulk_mb_s"] = bulk.rate()
                            base.log(f"    bulk writer beside it: {bulk.rate() or 0:.0f} MB/s")

    def med(self, w, s, key="msgs_per_s"):
        return self.median(w, s, key)

    def report(self):
        a = self.args
        out = [f"Neighbour benchmark: medians of {a.reps} run(s); bulk writer: dd "
               f"bs=1M count={a.bulk_mb} in a loop on the same file system, no fsync.", "",
               "| workload | server | alone msg/s | beside the bulk writer msg/s | kept | "
               "bulk writer MB/s beside it |",
               "| --- | --- | ---: | ---: | ---: | ---: |"]
        for w in a.workloads:
            desc = WORKLOADS[w][0].format(m=(WORKLOADS[w][2] if a.quick else WORKLOADS[w][1])["m"])
            for s in SERVERS:
                alone, beside = self.med(w, s), self.med(w + "+bulk", s)
                bulk = self.med(w + "+bulk", s, "bulk_mb_s")
                kept = f"{beside / alone:.0%}" if alone and beside else "n/a"
                f = lambda v: f"{v:.0f}" if v else "n/a"  # noqa: E731
                out.append(f"| {w}) {desc} | {LABEL[s]} | {f(alone)} | {f(beside)} | {kept} | {f(bulk)} |")
        ba = [r for r in self.bulk_alone if r]
        out.append("")
        out.append(f"Bulk writer alone: {statistics.median(ba):.0f} MB/s (median of "
                   f"{', '.join(f'{r:.0f}' for r in ba)})." if ba else "Bulk writer alone: n/a")
        checks = []

        def ratio(x, y):
            return x / y if x and y else None

        def verdict(name, value, need, fmt="{:.2f}"):
            ok = value is not None and value >= need
            checks.append(f"- {name}: {fmt.format(value) if value is not None else 'n/a'} "
                          f"(need >= {fmt.format(need)}): {'PASS' if ok else 'MISS'}")
        if "b" in a.workloads:
            verdict("b beside the bulk writer / b alone, mailsink",
                    ratio(self.med("b+bulk", "mailsink"), self.med("b", "mailsink")), 0.5, "{:.0%}")
            verdict("b beside the bulk writer, mailsink / node",
                    ratio(self.med("b+bulk", "mailsink"), self.med("b+bulk", "node")), 2.0, "{:.2f}x")
            verdict("b alone, mailsink --sync files / --sync filesystem",
                    ratio(self.med("b", "mailsink"), self.med("b", "mailsink-syncfs")), 0.9, "{:.0%}")
        bulk_after = statistics.median([r["bulk_mb_s"] for r in self.results if r["server"] == "mailsink"
                                        and r.get("bulk_mb_s")] or [0]) or None
        bulk_before = statistics.median([r["bulk_mb_s"] for r in self.results
                                         if r["server"] == "mailsink-syncfs"
                                         and r.get("bulk_mb_s")] or [0]) or None
        checks.append(f"- bulk writer beside mailsink: {bulk_after or 0:.0f} MB/s with --sync files, "
                      f"{bulk_before or 0:.0f} MB/s with --sync filesystem "
                      f"(alone {statistics.median(ba) if ba else 0:.0f} MB/s): reported, not gated")
        bad = [r for r in self.results if not r["ok"]]
        checks.append(f"- every run stored every message: {'PASS' if not bad else 'MISS'}")
        others = [r.get("foreign_cpu", 0) for r in self.results]
        checks.append(f"- CPU used by other processes during the runs: median "
                      f"{statistics.median(others) if others else 0:.0%} of both cores")
        for p in self.problems:
            checks.append(f"- problem: {p}")
        return "\n".join(out), "\n".join(checks)


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench --neighbour")
    ap.add_argument("--quick", action="store_true", help="1 repetition, smaller counts")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--workloads", default="a,b")
    ap.add_argument("--bulk-mb", type=int, default=2000, help="MiB per dd run (default 2000)")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/var/tmp"))
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--max-minutes", type=float, default=20)
    ap.add_argument("--out")
    ap.add_argument("--mailsink", default=os.path.join(base.REPO, "target/release/mailsink"))
    ap.add_argument("--loadgen", default="")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.reps = a.reps or (1 if a.quick else 3)
    a.workloads = [w for w in a.workloads.split(",") if w in WORKLOADS]
    a.delete_each = False
    a.workdir = os.path.join(os.path.abspath(a.workdir), f"mailsink-neighbour.{os.getpid()}")
    os.makedirs(a.workdir)
    base.signal.signal(base.signal.SIGTERM, base.on_signal)
    base.signal.signal(base.signal.SIGINT, base.on_signal)
    n = Neighbour(a)
    try:
        base.log(f"bench: neighbour mode, {a.reps} repetition(s) of {','.join(a.workloads)}; "
                 f"work dir {a.workdir}")
        n.run()
        table, checks = n.report()
    finally:
        base.cleanup_children()
        n.cleanup()
    print(table)
    print()
    print(checks)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n\n" + checks + "\n")
    base.log(f"bench: done in {(time.monotonic() - n.t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
