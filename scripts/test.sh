#!/usr/bin/env bash
# The project's test command (README): every unit, property, known-answer and integration test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo test --workspace --locked "$@"
