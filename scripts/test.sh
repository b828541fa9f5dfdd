#!/usr/bin/env bash
# The whole test suite, from a clean checkout on Debian 12: set-up, style, lints, tests.
# Tests that need root (runuser, sshd, namespaces) run when this is run as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (the PAM tests load the built module and run the built binaries)"
cargo build --workspace --locked
echo "== cargo test"
cargo test --workspace --locked
