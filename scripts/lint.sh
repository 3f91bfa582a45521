#!/usr/bin/env bash
# The checks CI runs before the tests (configured in pyproject.toml): ruff's lint and format check,
# the import contracts (lint-imports: imports go one way, no Spark to answer a photo, no circles),
# mypy on the lower layers (storage, embedding, config, schemas). Every check runs; any failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

failed=""
.venv/bin/ruff check . || failed="$failed [ruff check]"
.venv/bin/ruff format --check . || failed="$failed [ruff format --check]"
.venv/bin/lint-imports --no-logo || failed="$failed [lint-imports]"
.venv/bin/mypy || failed="$failed [mypy]"
if [ -n "$failed" ]; then
  printf '[lint] failed:%s\n' "$failed" >&2
  exit 1
fi
printf '[lint] ok\n' >&2
