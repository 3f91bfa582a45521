#!/usr/bin/env bash
# Sets up fruitlens, runs the checks (scripts/lint.sh: ruff, import contracts, mypy), then every test
# (real Spark in local mode, real files, models from ../shared). Arguments go to pytest; only the tests:
# .venv/bin/python -m pytest ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh

# The page's browser test (tests/serve/test_page.py) drives Debian's chromium with Playwright (never
# `playwright install`: it downloads its own browser build).
if [ ! -x /usr/bin/chromium ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
  printf '[test] installing chromium (apt) for the browser test\n' >&2
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || printf '[test] could not install chromium: the browser test will fail\n' >&2
fi

# The services sharing their limits (tests/serve/test_processes.py) run Debian's redis-server.
if ! command -v redis-server >/dev/null; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
  printf '[test] installing redis-server (apt) for the shared-limits tests\n' >&2
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
    || printf '[test] could not install redis-server: the shared-limits tests will fail\n' >&2
fi

exec .venv/bin/python -m pytest "$@"
