#!/usr/bin/env bash
# Lint, format check and type check; fails on any violation. Tools: pip install -r tools/lint-requirements.txt
# (mypy also needs torch). `tools/lint.sh --fix` rewrites what the formatters and ruff can fix.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t cxx < <(git ls-files 'csrc/*.cpp' 'csrc/*.h' 'csrc/*.cu' 'csrc/*.cuh' 'tests/*.h' 'tests/*.cpp')
if [[ "${1:-}" == "--fix" ]]; then
  ruff check --fix .
  ruff format .
  clang-format -i "${cxx[@]}"
else
  ruff check .
  ruff format --check .
  clang-format --dry-run -Werror "${cxx[@]}"
fi
mypy
