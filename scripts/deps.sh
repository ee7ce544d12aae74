#!/usr/bin/env bash
# Install the Debian packages gpuproxyd needs to build and test, when they
# are missing.  As root it installs them; otherwise it prints the exact
# apt-get line to run.
set -euo pipefail

packages=(
  build-essential pkg-config
  libuv1-dev libcurl4-openssl-dev libjansson-dev libssl-dev   # the daemon
  libsqlite3-dev libpq-dev                                     # the store's two engines
  postgresql                                                   # the store tests start a real server
  libcriterion-dev                                             # unit tests
  clang libclang-rt-dev                                        # fuzzers (libFuzzer) and sanitizers
  prometheus                                                   # promtool checks the /metrics exposition
  openssl ca-certificates curl                                 # TLS test certificates, the CLI's checks
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "gpuproxyd needs these Debian packages; run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
