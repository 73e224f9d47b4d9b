#!/usr/bin/env bash
# scripts/bench --read [--messages N] [--reps N] [--arrivals N] [--peers python,notmuch,mu]
# Reading benchmark (issue 11): installs notmuch and mu (maildir-utils) when
# missing, builds mailsink in release, runs scripts/bench.d/read.py.
set -euo pipefail
bd="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$bd/../.." && pwd)"
peers="python,notmuch,mu"
prev=""
for a in "$@"; do
    case "$a" in --peers=*) peers="${a#--peers=}" ;; esac
    [ "$prev" = "--peers" ] && peers="$a"
    prev="$a"
done
need=0
[ -x /usr/bin/time ] || need=1  # GNU time: peak RSS per reader
[[ ",$peers," == *",notmuch,"* ]] && ! command -v notmuch >/dev/null && need=1
[[ ",$peers," == *",mu,"* ]] && ! command -v mu >/dev/null && need=1
if [ "$need" = 1 ]; then
    echo "bench: installing GNU time and the asked-for peers from apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    pkgs="time"
    [[ ",$peers," == *",notmuch,"* ]] && pkgs="$pkgs notmuch"
    [[ ",$peers," == *",mu,"* ]] && pkgs="$pkgs maildir-utils"
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends $pkgs >/dev/null
fi
(cd "$repo" && cargo build --release --quiet)
exec python3 "$bd/read.py" "$@"
