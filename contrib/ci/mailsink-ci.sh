#!/usr/bin/env bash
# A CI step with mailsink as the mail sink: start it with --events and
# --exit-after, send, wait for the line, and let it stop by itself.
# Needs mailsink on PATH (or MAILSINK=path), curl and python3 (for JSON).
set -euo pipefail
MAILSINK=${MAILSINK:-mailsink}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

# 1. Start: port 0 (the log says which), one JSON line per event, and stop
#    by itself once 2 messages are stored.
"$MAILSINK" --listen 127.0.0.1:0 --maildir "$work/Maildir" \
    --events "$work/events.jsonl" --exit-after 2 \
    --fail 'rcpt:*@bounce.test=550 5.1.1 No such user' 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/log"; exit 1; }

# 2. The application under test sends mail (here: curl).
printf 'Subject: Welcome\r\nMessage-ID: <w1@app.test>\r\n\r\nHello!\r\n' >"$work/mail.txt"
curl -sS "smtp://127.0.0.1:$port" --mail-from app@app.test \
    --mail-rcpt new.user@example.test -T "$work/mail.txt"
# A recipient the sink refuses on purpose: the application must cope.
if curl -sS "smtp://127.0.0.1:$port" --mail-from app@app.test \
    --mail-rcpt gone@bounce.test -T "$work/mail.txt" 2>"$work/curl.err"; then
    echo "the refused recipient was accepted" >&2; exit 1
fi

# 3. The event is there as soon as the 250 was: no sleep, no polling.
python3 - "$work/events.jsonl" <<'EOF'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
stored = [e for e in events if e["event"] == "stored"]
refused = [e for e in events if e["event"] == "refused"]
assert stored[0]["to"] == ["new.user@example.test"], stored
assert stored[0]["subject"] == "Welcome", stored
assert refused[0]["reply"] == "550 5.1.1 No such user", refused
print("stored:", stored[0]["files"][0])
print("refused:", refused[0]["address"], refused[0]["reply"])
EOF

# 4. The second stored message ends the run: exit 0, like SIGTERM.
curl -sS "smtp://127.0.0.1:$port" --mail-from app@app.test \
    --mail-rcpt other@example.test -T "$work/mail.txt"
wait "$pid"
echo "mailsink exited $?"
