#!/usr/bin/env bash
# The whole test suite, from a clean checkout on Debian 12: set-up, style, lints, tests.
# Tests that need root (runuser, sshd, namespaces) run when this is run as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# sql_ext is its own cargo workspace: rusqlite's `loadable_extension` must never be unified
# with the other crates' rusqlite (SPEC §1), so it is checked and built in its own invocations.
ext=(--manifest-path sql_ext/Cargo.toml)

echo "== cargo fmt"
cargo fmt --all --check
cargo fmt "${ext[@]}" --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy "${ext[@]}" --all-targets --locked -- -D warnings
echo "== cargo build (the tests load the built module and extension and run the built binaries)"
cargo build --workspace --locked
cargo build "${ext[@]}" --locked
echo "== packages (the package tests install the .deb into a throwaway root)"
packaging/build-deb.sh
packaging/build-rpm.sh
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
