# Sourced by the comparison scripts (run from the repository root): builds the release `vm` and
# the tokio peers, and sets `root`, `peers` (../shared/peers), `vm` and `tokio_bin` (the peers'
# release directory; PEER_TARGET overrides where they are built, /tmp/peer-tokio by default).
root=$(pwd)
peers=$root/../shared/peers
vm=$root/target/release/vm
# With the test natives: blocking.vasm calls `sleep_blocking` (the feature adds table rows only).
cargo build --release -q -p vm-cli --features test-natives
export CARGO_TARGET_DIR=${PEER_TARGET:-/tmp/peer-tokio}
(cd "$peers/tokio" && cargo build --release -q)
tokio_bin=$CARGO_TARGET_DIR/release
unset CARGO_TARGET_DIR
