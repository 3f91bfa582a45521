#!/usr/bin/env bash
# Sets up fruitlens on a fresh machine: a JDK 17+ for Spark (Debian package if missing), a system
# BLAS/LAPACK for Spark ML (optional, speeds up its optimizers in `train`), uv, and the locked
# Python environment (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq || return 1; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

java_major() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || { echo 0; return; }
  "$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -n1 |
    awk '{ if ($1 == 1) print $2; else print $1 }'
}

if [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  say "no JDK 17+ found: installing openjdk-17-jre-headless"
  apt_install openjdk-17-jre-headless || {
    say "could not install a JDK: install Java 17+ yourself (or set JAVA_HOME) and rerun"; exit 1; }
fi

# Spark ML's JVM loads the system's libblas.so.3 / liblapack.so.3 (dev.ludovic.netlib's JNIBLAS) when
# they are there; `train` reports which BLAS ran (report.json "blas").
if ! ldconfig -p 2>/dev/null | grep -q 'libblas.so.3' || ! ldconfig -p 2>/dev/null | grep -q 'liblapack.so.3'; then
  say "installing a system BLAS/LAPACK for Spark ML (optional)"
  apt_install libopenblas0-pthread liblapack3 || say "no system BLAS: Spark ML falls back to Java (slower train on Spark)"
fi

if ! command -v uv >/dev/null 2>&1; then
  say "installing uv"
  python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# Bytecode compiled once here: where Python may not write its cache (PYTHONDONTWRITEBYTECODE, a
# read-only install) every process would otherwise compile pyspark, pandas... again: 1.5 s per
# CLI start and per Spark Python worker (bench/featurize_bench.py, docs/benchmarks.md).
uv sync --frozen --quiet --compile-bytecode "$@" || {
  say "compiling bytecode failed: installing without it (every process then compiles at start)"
  uv sync --frozen --quiet "$@"; }
.venv/bin/python -m compileall -q src >/dev/null || true  # the editable fruitlens itself
say "ready: .venv/bin/fruitlens --help"
