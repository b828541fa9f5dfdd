#!/usr/bin/env bash
# The whole test suite, from a clean checkout on Debian 12: set-up, style, lints, tests.
# Tests that need root (runuser, sshd, namespaces) run when this is run as root, as CI does;
# otherwise they are listed as ignored, with the reason.
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
# Tests that need root are marked ignored with the reason, so that a normal user's run lists
# them as not run; as root (CI) they run too.
ignored=()
[[ $(id -u) -eq 0 ]] && ignored=(-- --include-ignored)
cargo test --workspace --locked --no-fail-fast "${ignored[@]}"
