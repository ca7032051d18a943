#!/bin/sh
# deps.sh — install the Debian packages quotagate needs, only those missing.
# Usage: scripts/deps.sh [build|test|bench]   (each set includes the ones before it)
# As root it runs apt-get; otherwise it uses sudo when available, else prints what to install.
set -eu
set_name=${1:-build}
BUILD="gcc make pkg-config libssl-dev libyaml-dev libsqlite3-dev ca-certificates openssl curl python3"
TEST="libcmocka-dev clang libclang-rt-14-dev"
BENCH="nginx-light wrk valgrind"
case "$set_name" in
  build) want="$BUILD" ;;
  test)  want="$BUILD $TEST" ;;
  bench) want="$BUILD $TEST $BENCH" ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "quotagate: installing missing Debian packages:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "quotagate: not root and no sudo; please run: apt-get install$missing" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists may be stale or empty; refresh once, quietly.
$SUDO apt-get update -qq >/dev/null || echo "quotagate: apt-get update failed; trying the install anyway" >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
