#!/usr/bin/env python3
"""Reading benchmark (issue 11): `mailsink list` over a Maildir of stored
1 KiB messages beside `notmuch new`, `mu index` and Python's `mailbox`
reading the same Maildir's headers; and `mailsink wait`'s delay from a
file appearing in new/ to its line on stdout.

The Maildir is made by writing files directly in the server's format: one
message is stored by a real mailsink, and its prepended headers and name
pattern are copied for every other file with a fresh queue id, sequence
number and subject (100 000 files in seconds instead of minutes of SMTP).
The Maildir is deleted only at the end (ext4 is slow to create files after a
mass deletion). Run it as `flock /work/bench.lock scripts/bench --read`.
"""
import argparse, json, os, random, re, shutil, socket, statistics, subprocess, sys, tempfile, time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def start_server(binary, root):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--hostname", "bench.test", "-d", root],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on (\S+):(\d+)", line)
        if m:
            return p, int(m.group(2))
    raise SystemExit("mailsink did not start")


def smtp_send(port, sender, rcpt, text):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rwb")
    def cmd(line, want):
        if line is not None:
            f.write(line.encode() + b"\r\n"); f.flush()
        while True:
            r = f.readline().decode()
            if r[3:4] != "-":
                break
        assert r.startswith(want), (line, r)
        return r
    cmd(None, "220"); cmd("EHLO bench", "250"); cmd(f"MAIL FROM:<{sender}>", "250")
    cmd(f"RCPT TO:<{rcpt}>", "250"); cmd("DATA", "354")
    f.write(text.replace("\n", "\r\n").encode() + b".\r\n"); f.flush()
    r = cmd(None, "250")
    cmd("QUIT", "221"); s.close()
    return r.split()[-1]


def body_1k(i):
    head = (f"From: Sender {i} <s{i}@x.test>\nTo: r{i % 50}@y.test\nSubject: message {i} about "
            f"=?UTF-8?Q?caf=C3=A9?= and things\nMessage-ID: <{i}@x.test>\n"
            "Date: Sat, 05 Dec 2026 20:00:00 +0000\n\n")
    line = "The quick brown fox jumps over the lazy dog, again and again.\n"
    text = head
    while len(text) < 1024 - 300:  # ~300 bytes of prepended headers
        text += line
    return text


def make_maildir(binary, root, n):
    """One message through the server, the rest copied in its format."""
    p, port = start_server(binary, root)
    try:
        smtp_send(port, "s0@x.test", "r0@y.test", body_1k(0))
    finally:
        p.terminate(); p.wait()
    (name,) = os.listdir(os.path.join(root, "new"))
    stored = open(os.path.join(root, "new", name), "rb").read().decode()
    prepended = stored[:stored.index("From: Sender 0")]
    qid = re.search(r" id (\S+)", prepended).group(1)
    m = re.match(r"(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]+)\.(.*),S=\d+$", name)
    secs0, pid, host = int(m.group(1)), m.group(3), m.group(6)
    new = os.path.join(root, "new")
    for i in range(1, n):
        qi = f"{qid[:-6]}{i:06X}"
        data = (prepended.replace(qid, qi).replace("r0@y.test", f"r{i % 50}@y.test")
                .replace("<s0@x.test>", f"<s{i}@x.test>")
                + body_1k(i)).encode()
        secs = secs0 - n + i  # spread over the last n seconds, oldest first
        fname = f"{secs}.M{i % 1000000:06d}P{pid}Q{i}R{random.getrandbits(64):016x}.{host},S={len(data)}"
        with open(os.path.join(new, fname), "wb") as f:
            f.write(data)
    log(f"made {n} messages in {root} (one through mailsink, {n - 1} copied in its format)")


def timed(argv, env=None, reps=3, prep=None, out=subprocess.DEVNULL):
    """Median wall seconds of `reps` runs, the runs, and the largest peak RSS
    in MiB. The RSS comes from GNU time, which forks the tool from its own
    small process: a child forked from this Python process would report
    Python's resident size when that is larger (Linux keeps the high-water
    mark across fork and exec)."""
    runs, rss = [], None
    gnu_time = shutil.which("time") and os.path.exists("/usr/bin/time")
    for _ in range(reps):
        if prep:
            prep()
        with tempfile.NamedTemporaryFile("r") as rss_file:
            cmd = (["/usr/bin/time", "-q", "-f", "%M", "-o", rss_file.name] if gnu_time else []) + argv
            t = time.monotonic()
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
            runs.append(time.monotonic() - t)
            if r.returncode != 0:
                raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
            text = rss_file.read().strip()
            if text.isdigit():
                rss = max(rss or 0, int(text) / 1024)
    return statistics.median(runs), runs, rss


PY_MAILBOX = r"""
import mailbox, sys
from email.parser import BytesHeaderParser
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
parser = BytesHeaderParser()
rows = []
for key in md.iterkeys():
    try:
        with md.get_file(key) as f:
            h = parser.parse(f)
    except FileNotFoundError:
        continue
    rows.append((h["Date"], h["From"], h["To"], str(h["Subject"]), key))
print(len(rows))
"""


def bench_list(binary, root, work, reps, peers):
    env = dict(os.environ)
    results = []
    # Warm the page cache once, as every tool then reads from memory.
    subprocess.run([binary, "list", "-d", root], stdout=subprocess.DEVNULL)
    results.append(("mailsink list", *timed([binary, "list", "-d", root], reps=reps)))
    results.append(("mailsink list --json", *timed([binary, "list", "--json", "-d", root], reps=reps)))
    if "python" in peers:
        results.append(("Python mailbox + BytesHeaderParser",
                        *timed([sys.executable, "-c", PY_MAILBOX, root], reps=reps)))
    if "notmuch" in peers and shutil.which("notmuch"):
        db = os.path.join(work, "notmuch-db")
        cfg = os.path.join(work, "notmuch-config")
        with open(cfg, "w") as f:
            f.write(f"[database]\npath={db}\nmail_root={root}\n[new]\ntags=\n[maildir]\nsynchronize_flags=false\n")
        nenv = dict(env, NOTMUCH_CONFIG=cfg)
        prep = lambda: (shutil.rmtree(db, ignore_errors=True), os.makedirs(db))
        results.append(("notmuch new (index from scratch)",
                        *timed(["notmuch", "new", "--quiet"], env=nenv, reps=1, prep=prep)))
        results.append(("notmuch search --output=messages '*' (reads its index, not the Maildir)",
                        *timed(["notmuch", "search", "--output=messages", "*"], env=nenv, reps=reps)))
    if "mu" in peers and shutil.which("mu"):
        muhome = os.path.join(work, "mu-home")
        def prep():
            shutil.rmtree(muhome, ignore_errors=True)
            subprocess.run(["mu", "init", f"--muhome={muhome}", f"--maildir={root}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        results.append(("mu index (from scratch)",
                        *timed(["mu", "index", f"--muhome={muhome}", "--quiet"], reps=1, prep=prep)))
    return results


def inotify_watches(pid):
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                n += open(f"/proc/{pid}/fdinfo/{fd}").read().count("inotify wd:")
            except OSError:
                pass
    except OSError:
        pass
    return n


def sleeping(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


def bench_wait(binary, root, arrivals):
    """Delay from rename into new/ to the wait's line on stdout."""
    new, tmp = os.path.join(root, "new"), os.path.join(root, "tmp")
    for d in (new, tmp, os.path.join(root, "cur")):
        os.makedirs(d, exist_ok=True)
    delays, idle_cpu = [], []
    for i in range(arrivals):
        p = subprocess.Popen([binary, "wait", "-d", root, "--subject", f"arrival {i} end", "--timeout", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (inotify_watches(p.pid) >= 2 and sleeping(p.pid)):
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("wait did not get ready")
            time.sleep(0.002)
        if i % 50 == 0:  # CPU spent while nothing arrives, over 0.5 s
            t0 = cpu_ticks(p.pid); time.sleep(0.5); idle_cpu.append(cpu_ticks(p.pid) - t0)
        data = f"Return-Path: <a@x.test>\nDelivered-To: b@y.test\nSubject: arrival {i} end\n\nx\n".encode()
        name = f"{int(time.time())}.M{i:06d}P1Q{i}Rbench.bench,S={len(data)}"
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
        t = time.monotonic()
        os.rename(os.path.join(tmp, name), os.path.join(new, name))
        line = p.stdout.readline()
        delays.append(time.monotonic() - t)
        p.wait(timeout=10)
        if b"arrival" not in line:
            raise SystemExit(f"wait printed {line!r}")
    delays.sort()
    pct = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]
    return {"arrivals": arrivals, "median_ms": pct(0.5) * 1e3, "p99_ms": pct(0.99) * 1e3,
            "max_ms": delays[-1] * 1e3, "idle_cpu_ticks_per_0.5s": idle_cpu}


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench --read")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arrivals", type=int, default=200)
    ap.add_argument("--big-arrivals", type=int, default=20,
                    help="wait arrivals into the big Maildir (each waits for its first scan)")
    ap.add_argument("--peers", default="python,notmuch,mu", help="comma-separated: python,notmuch,mu")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/var/tmp"))
    ap.add_argument("--mailsink", default=os.path.join(REPO, "target/release/mailsink"))
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mailsink-read-bench.", dir=a.workdir)
    try:
        root = os.path.join(work, "Maildir")
        t = time.monotonic()
        make_maildir(a.mailsink, root, a.messages)
        log(f"generation took {time.monotonic() - t:.1f} s")
        count = int(subprocess.run([a.mailsink, "list", "--json", "-d", root], capture_output=True)
                    .stdout.count(b"\n"))
        assert count == a.messages, count
        results = bench_list(a.mailsink, root, work, a.reps, a.peers.split(","))
        w = bench_wait(a.mailsink, os.path.join(work, "WaitMaildir"), a.arrivals)
        # The same in the big Maildir: after its first scan a wake reads only
        # the new name, so the delay should not grow with the Maildir.
        wbig = bench_wait(a.mailsink, root, a.big_arrivals) if a.big_arrivals else None
        # Readers of the Maildir itself; a query on notmuch's finished index is shown beside.
        fastest = min((r for r in results if "its index" not in r[0]), key=lambda r: r[1])
        print(f"\n### Reading {a.messages} stored 1 KiB messages (page cache warm; median of {a.reps}, index runs once)\n")
        print("| reader | seconds | messages/s | vs mailsink list | peak RSS MiB |")
        print("| --- | ---: | ---: | ---: | ---: |")
        base = results[0][1]
        for name, med, runs, rss in results:
            print(f"| {name} | {med:.2f} | {a.messages / med:,.0f} | {med / base:.1f}x | {'-' if rss is None else f'{rss:.0f}'} |")
        print(f"\nfastest reader of the Maildir: {fastest[0]} -> {'PASS' if fastest[0].startswith('mailsink') else 'MISS'}")
        print(f"\n### mailsink wait: delay from rename into new/ to output, {w['arrivals']} arrivals\n")
        print(f"median {w['median_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms "
              f"-> {'PASS' if w['p99_ms'] < 100 else 'MISS'} (target p99 < 100 ms); "
              f"CPU while idle: {w['idle_cpu_ticks_per_0.5s']} clock ticks per 0.5 s")
        if wbig:
            print(f"\nin the {a.messages}-message Maildir, {wbig['arrivals']} arrivals: median {wbig['median_ms']:.1f} ms, "
                  f"p99 {wbig['p99_ms']:.1f} ms, max {wbig['max_ms']:.1f} ms")
        if a.json:
            json.dump({"list": [{"reader": n, "median_s": m, "runs": r, "rss_mib": x} for n, m, r, x in results],
                       "wait": w, "wait_big": wbig}, open(a.json, "w"), indent=1)
    finally:
        log(f"removing {work}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
