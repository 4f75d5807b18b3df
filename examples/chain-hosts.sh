#!/usr/bin/env bash
# Sets up a 3-host PoV chain on 127.0.0.1 for the README's chain quick start:
#   examples/chain-hosts.sh [DIR]        (default ./chain-hosts)
# It writes host keys a/ b/ c/ (each trusting the others and the client),
# a client identity client/, wallets alice and bob, a trainer key and a rater
# key (the genesis authority that countersigns work receipts), genesis.toml
# (alice holds 1,000,000; a, b, c form the committee) and a.toml b.toml c.toml
# (roles directory, ledger, block_generator, data_node, trainer, script; every host dials the
# others).
# Then, in three terminals:
#   aicon host --config DIR/a.toml     (and b.toml, c.toml)
# and drive it:
#   aicon chain receipt --trainer-key DIR/keys/trainer.key \
#     --verifier-key DIR/keys/rater.key --units 100 --connect 127.0.0.1:$BASE \
#     --data-dir DIR/client
#   aicon wallet transfer --key DIR/wallets/alice.key --to $(cat DIR/wallets/bob.id) \
#     --amount 25 --connect 127.0.0.1:$BASE --data-dir DIR/client
# Ports: AICON_PORT_BASE (default 7200) for a, +1 for b, +2 for c; or each
# one with AICON_PORT_A, AICON_PORT_B, AICON_PORT_C.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
aicon=${AICON:-$repo/build/aicon}
dir=${1:-chain-hosts}
base=${AICON_PORT_BASE:-7200}
mkdir -p "$dir/wallets" "$dir/keys"
names=(a b c)
declare -A id port
for i in 0 1 2; do
  n=${names[$i]}
  [[ -f "$dir/$n/node.key" ]] || "$aicon" keygen --data-dir "$dir/$n" >/dev/null 2>&1
  var="AICON_PORT_${n^^}"
  port[$n]=${!var:-$((base + i))}
done
[[ -f "$dir/client/node.key" ]] || "$aicon" keygen --data-dir "$dir/client" >/dev/null 2>&1
# Every host trusts the other hosts and the client; the client trusts every host.
for n in "${names[@]}"; do
  for m in "${names[@]}" client; do
    [[ "$n" == "$m" ]] && continue
    id[$m]=$("$aicon" trust "$dir/$m/node.crt" --data-dir "$dir/$n" 2>/dev/null)
  done
  id[$n]=$("$aicon" trust "$dir/$n/node.crt" --data-dir "$dir/client" 2>/dev/null)
done
for k in wallets/alice wallets/bob keys/trainer keys/rater; do
  [[ -f "$dir/$k.key" ]] || "$aicon" wallet new --key "$dir/$k.key" > "$dir/$k.id" 2>/dev/null
done
cat > "$dir/genesis.toml" <<TOML
# The chain's genesis: every host of this chain must use the same file.
time_ms = $(( $(date +%s) * 1000 ))
committee_size = 3          # generator + validators drawn per height from the candidates
initial_difficulty = 100    # verified work units block 1 needs
authorities = ["$(cat "$dir/keys/rater.id")"]   # may countersign work receipts, mint, slash

[difficulty]
target_interval_ms = 2000   # retarget toward one block per 2 s
window_blocks = 10          # every 10 blocks
clamp_factor = 4            # by at most x4

[[candidate]]
node = "${id[a]}"
weight = 1
[[candidate]]
node = "${id[b]}"
weight = 1
[[candidate]]
node = "${id[c]}"
weight = 1

[[allocation]]
wallet = "$(cat "$dir/wallets/alice.id")"
balance = 1000000
stake = 0
TOML
for n in "${names[@]}"; do
  connect=""
  allow="\"${id[client]}\""
  for m in "${names[@]}"; do
    [[ "$n" == "$m" ]] && continue
    connect+="  { address = \"127.0.0.1:${port[$m]}\", node = \"${id[$m]}\" },"$'\n'
  done
  cat > "$dir/$n.toml" <<TOML
[host]
data_dir = "$n"
listen = "127.0.0.1:${port[$n]}"
site = "site-$n"
roles = ["directory", "ledger", "block_generator", "data_node", "trainer", "script", "job"]
data_files = ["$repo/tests/data"]   # the only local files a job may name (TrainConfig.dataFile)
# The operator's client and its job hosts: their unpaid jobs need no allocator's lease.
trainer_clients = ["${id[client]}", "${id[a]}", "${id[b]}", "${id[c]}"]

[peers]
allow = [$allow]
connect = [
$connect]

[chain]
genesis = "genesis.toml"
TOML
  echo "host $n ${id[$n]} -> $dir/$n.toml (port ${port[$n]})"
done
echo "alice $(cat "$dir/wallets/alice.id")  bob $(cat "$dir/wallets/bob.id")"
echo "run:  $aicon host --config $dir/a.toml   (and b.toml, c.toml)"
