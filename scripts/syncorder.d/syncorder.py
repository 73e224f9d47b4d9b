#!/usr/bin/env python3
"""Proof of the storage order from a system-call trace (issue 13).

Runs mailsink under `strace -f -ttt -y` while parallel clients send
messages, then checks, for every message the server logged as stored:

  1. its tmp file was synced (fsync/fdatasync of that file, or a syncfs)
     after the last write to it and before the move into new/;
  2. the move (rename/renameat2/link into new/) succeeded before new/ was
     synced (fsync/fdatasync of new/, or a syncfs);
  3. that sync returned before the `250 ... queued as <id>` reply was
     written to the client's socket.

"Before" is the order of events in strace's output: one output file with
-f shows a call where it starts, and its end either on the same line (no
other event in between) or on its `<... resumed>` line.

  syncorder.py run --binary PATH [--expect-broken] [--sync MODE] [...]
  syncorder.py check TRACE LOG        check a trace already taken
  syncorder.py self-test              the checker against made-up traces
"""
import argparse
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

SYSCALLS = "openat,write,writev,sendto,sendmsg,fsync,fdatasync,syncfs,rename,renameat,renameat2,link,linkat"
LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<ts>\d+\.\d+)\s+(?P<rest>.*)$")
START = re.compile(r"^(?P<name>\w+)\((?P<args>.*)$")
RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)$")
FDPATH = re.compile(r"^(\d+)<(.*?)>")
RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)")


class Call:
    def __init__(self, pid, name, start):
        self.pid, self.name, self.start, self.end = pid, name, start, None
        self.args = ""
        self.ret = None


def parse(lines):
    """Calls with their start and end positions (line numbers)."""
    calls, open_by_pid = [], {}
    for i, raw in enumerate(lines):
        m = LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, rest = m.group("pid"), m.group("rest")
        r = RESUMED.match(rest)
        if r:
            c = open_by_pid.pop(pid, None)
            if c is None or c.name != r.group("name"):
                continue
            c.args += r.group("args")
            c.end = i
        else:
            s = START.match(rest)
            if not s:
                continue  # signals, exits
            c = Call(pid, s.group("name"), i)
            c.args = s.group("args")
            calls.append(c)
            if rest.endswith("<unfinished ...>"):
                c.args = c.args[: -len("<unfinished ...>")]
                open_by_pid[pid] = c
                continue
            c.end = i
        res = RESULT.search(c.args)
        if res and res.group(1) != "?":
            c.ret = int(res.group(1))
    return [c for c in calls if c.end is not None]


def first_fd_path(args):
    m = FDPATH.match(args)
    return m.group(2) if m else None


def quoted(args):
    return re.findall(r'"((?:[^"\\]|\\.)*)"', args)


def check(lines, stored):
    """stored: {queue id: [file names in new/]}. Returns a list of problems
    (empty: the order holds for every message)."""
    calls = parse(lines)
    writes, syncs, moves, replies = {}, [], {}, {}
    for c in calls:
        if c.name in ("write", "writev", "sendto", "sendmsg"):
            path = first_fd_path(c.args)
            if path is None:
                continue
            if path.startswith(("TCP:", "TCPv6:", "socket:")):
                for q in quoted(c.args):
                    for qid in re.findall(r"250 2\.0\.0 Ok: queued as (\S+?)\\r\\n", q):
                        replies.setdefault(qid, c)
            else:
                writes.setdefault(path, []).append(c)
        elif c.name in ("fsync", "fdatasync", "syncfs") and c.ret == 0:
            syncs.append((c, first_fd_path(c.args), c.name == "syncfs"))
        elif c.name in ("rename", "renameat", "renameat2", "link", "linkat") and c.ret == 0:
            names = quoted(c.args)
            if len(names) >= 2:
                moves[os.path.basename(names[-1])] = (c, names[0], os.path.dirname(names[-1]))
    problems = []
    if not stored:
        problems.append("no stored message in the log")
    for qid, files in sorted(stored.items()):
        reply = replies.get(qid)
        if reply is None:
            problems.append(f"{qid}: no 250 reply found in the trace")
            continue
        for name in files:
            move = moves.get(name)
            if move is None:
                problems.append(f"{qid}: no move into new/ of {name}")
                continue
            mv, tmp, newdir = move
            tmp = os.path.realpath(tmp) if os.path.isabs(tmp) else tmp
            last_write = max((w.end for w in writes.get(tmp, [])), default=-1)
            if last_write < 0:
                problems.append(f"{qid}: no write to {tmp} in the trace")
            file_synced = any(
                (fs or p == tmp) and s.start > last_write and s.end < mv.start
                for s, p, fs in syncs)
            if not file_synced:
                problems.append(f"{qid}: {name} moved into new/ before its file was synced")
            dir_synced = any(
                (fs or p == newdir) and s.start > mv.end and s.end < reply.start
                for s, p, fs in syncs)
            if not dir_synced:
                problems.append(f"{qid}: 250 sent before new/ was synced after the move of {name}")
    return problems


def stored_from_log(text):
    stored = {}
    for m in re.finditer(r"stored id=(\S+) .* file=(\S+)", text):
        # names hold ",S=": a new name starts with "<secs>.M<usec>P"
        stored[m.group(1)] = re.split(r",(?=\d+\.M\d+P)", m.group(2))
    return stored


def send_all(port, clients, per_client):
    errors = []

    def client(k):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                for j in range(per_client):
                    s.sendmail("a@x.test", [f"b{k}@y.test"],
                               f"Subject: order {k} {j}\r\n\r\nbody {k} {j}\r\n")
        except Exception as e:  # noqa: BLE001 - reported
            errors.append(f"client {k}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def stop(p):
    """SIGTERM to mailsink (strace's child, which we started through it);
    strace ends with it. strace itself only if mailsink never started."""
    kids = []
    try:
        with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        pass
    for k in kids:
        os.kill(k, 15)
    if not kids and p.poll() is None:
        p.terminate()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run(a):
    work = tempfile.mkdtemp(prefix="syncorder.")
    maildir = os.path.join(work, "Maildir")
    trace, log = os.path.join(work, "trace"), os.path.join(work, "server.log")
    env = dict(os.environ, RUST_LOG="info")
    if a.expect_broken:
        env["MAILSINK_DEBUG_BREAK_SYNC_ORDER"] = "1"
    argv = ["strace", "-f", "-ttt", "-yy", "-qq", "-s", "256", "-e", "trace=" + SYSCALLS,
            "-o", trace, a.binary, "--listen", "127.0.0.1:0", "--maildir", maildir,
            "--sync", a.sync] + (["--per-recipient"] if a.per_recipient else [])
    with open(log, "wb") as lf:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, env=env)
    try:
        port, deadline = None, time.monotonic() + 60
        while port is None and time.monotonic() < deadline and p.poll() is None:
            with open(log, errors="replace") as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            port = int(m.group(1)) if m else None
            if port is None:
                time.sleep(0.05)  # polling the log file for the bound port
        if port is None:
            sys.exit("syncorder: the server did not start")
        errors = send_all(port, a.clients, a.messages)
    finally:
        stop(p)
    with open(log, errors="replace") as f:
        stored = stored_from_log(f.read())
    with open(trace, errors="replace") as f:
        lines = f.readlines()
    want = a.clients * a.messages
    problems = errors + check(lines, stored)
    if len(stored) != want:
        problems.append(f"{len(stored)} messages logged as stored, {want} sent")
    label = f"{os.path.basename(a.binary)} --sync {a.sync}" + (" --per-recipient" if a.per_recipient else "") + (" (broken on purpose)" if a.expect_broken else "")
    print(f"syncorder: {label}: {len(stored)} messages, {len(lines)} trace lines, "
          f"{len(problems)} problem(s)")
    for pr in problems[:10]:
        print("  " + pr)
    if a.keep:
        print(f"syncorder: trace and log kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if a.expect_broken:
        broken = [pr for pr in problems if "before new/ was synced" in pr]
        if not broken:
            sys.exit("syncorder: FAIL: the checker did not catch the broken order")
        print(f"syncorder: PASS: the checker caught the broken order ({len(broken)} message(s))")
    else:
        if problems:
            sys.exit("syncorder: FAIL")
        print(f"syncorder: PASS: file synced -> moved -> new/ synced -> 250, for all {want}")


# ---- the checker against made-up traces --------------------------------
GOOD = """\
10 1.000001 openat(AT_FDCWD, "/m/tmp/F1", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 7</m/tmp/F1>
10 1.000002 write(7</m/tmp/F1>, "Return-Path: <a@x>\\n"..., 300) = 300
11 1.000003 fdatasync(7</m/tmp/F1> <unfinished ...>
12 1.000004 write(9<TCP:[127.0.0.1:1->127.0.0.1:2]>, "354 End data\\r\\n", 14) = 14
11 1.000005 <... fdatasync resumed>) = 0
10 1.000006 renameat2(AT_FDCWD, "/m/tmp/F1", AT_FDCWD, "/m/new/F1,S=300", RENAME_NOREPLACE) = 0
10 1.000007 fsync(8</m/new>) = 0
12 1.000008 write(9<TCP:[127.0.0.1:1->127.0.0.1:2]>, "250 2.0.0 Ok: queued as Q1\\r\\n", 29) = 29
"""


def self_test():
    stored = {"Q1": ["F1,S=300"]}
    cases = {
        "the good order": (GOOD, None),
        "the file synced after the move": (
            GOOD.replace("11 1.000005 <... fdatasync resumed>) = 0\n", "")
                .replace("10 1.000007 fsync", "11 1.000065 <... fdatasync resumed>) = 0\n10 1.000007 fsync"),
            "before its file was synced"),
        "no sync of the file": (
            GOOD.replace("11 1.000003 fdatasync(7</m/tmp/F1> <unfinished ...>\n", "")
                .replace("11 1.000005 <... fdatasync resumed>) = 0\n", ""),
            "before its file was synced"),
        "new/ synced before the move": (
            GOOD.replace("10 1.000006 renameat2", "10 1.000006 XX").replace(
                "10 1.000007 fsync(8</m/new>) = 0\n",
                "10 1.000007 fsync(8</m/new>) = 0\n10 1.000007 renameat2(AT_FDCWD, \"/m/tmp/F1\", "
                "AT_FDCWD, \"/m/new/F1,S=300\", RENAME_NOREPLACE) = 0\n"),
            "before new/ was synced"),
        "250 before new/ is synced": (
            GOOD.replace("10 1.000007 fsync(8</m/new>) = 0\n", "") +
            "10 1.000009 fsync(8</m/new>) = 0\n",
            "before new/ was synced"),
        "250 while the sync of new/ is still running": (
            GOOD.replace("10 1.000007 fsync(8</m/new>) = 0\n", "10 1.000007 fsync(8</m/new> <unfinished ...>\n") +
            "10 1.000009 <... fsync resumed>) = 0\n",
            "before new/ was synced"),
        "a failed sync of new/": (GOOD.replace("fsync(8</m/new>) = 0", "fsync(8</m/new>) = -1 EIO (Input/output error)"),
                                  "before new/ was synced"),
        "no 250 at all": (GOOD.replace("queued as Q1", "queued as Q2"), "no 250 reply"),
        "a syncfs covers both": (
            GOOD.replace("fdatasync(7</m/tmp/F1>", "syncfs(7</m/tmp/F1>").replace("fdatasync resumed", "syncfs resumed")
                .replace("fsync(8</m/new>)", "syncfs(8</m/new>)"),
            None),
    }
    failed = 0
    for name, (text, want) in cases.items():
        problems = check(text.splitlines(True), stored)
        ok = (not problems) if want is None else any(want in p for p in problems)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {problems or 'order holds'}")
        failed += not ok
    if failed:
        sys.exit(f"syncorder: self-test FAILED ({failed} case(s))")
    print(f"syncorder: self-test PASS ({len(cases)} cases)")


def main():
    ap = argparse.ArgumentParser(prog="syncorder.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--binary", required=True)
    r.add_argument("--sync", default="files")
    r.add_argument("--clients", type=int, default=8)
    r.add_argument("--messages", type=int, default=15, help="per client")
    r.add_argument("--expect-broken", action="store_true")
    r.add_argument("--per-recipient", action="store_true")
    r.add_argument("--keep", action="store_true", help="keep the trace and the log")
    c = sub.add_parser("check")
    c.add_argument("trace")
    c.add_argument("log")
    sub.add_parser("self-test")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
    elif a.cmd == "check":
        with open(a.log, errors="replace") as f:
            stored = stored_from_log(f.read())
        with open(a.trace, errors="replace") as f:
            problems = check(f.readlines(), stored)
        print("\n".join(problems) or "order holds")
        sys.exit(1 if problems else 0)
    else:
        self_test()


if __name__ == "__main__":
    main()
