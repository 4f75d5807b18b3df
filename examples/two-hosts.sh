#!/usr/bin/env bash
# Sets up two hosts that admit each other, for the README's quick start:
#   examples/two-hosts.sh [DIR]        (default ./two-hosts)
# then, in two terminals:
#   aicon host --config DIR/b.toml
#   aicon host --config DIR/a.toml
# and in a third:
#   aicon ping 127.0.0.1:$PORT_B --data-dir DIR/a
# Ports: AICON_PORT_A (default 7100) and AICON_PORT_B (default 7101).
set -euo pipefail
aicon=${AICON:-$(cd "$(dirname "$0")/.." && pwd)/build/aicon}
dir=${1:-two-hosts}
port_a=${AICON_PORT_A:-7100}
port_b=${AICON_PORT_B:-7101}
mkdir -p "$dir"
[[ -f "$dir/a/node.key" ]] || "$aicon" keygen --data-dir "$dir/a" >/dev/null 2>&1
[[ -f "$dir/b/node.key" ]] || "$aicon" keygen --data-dir "$dir/b" >/dev/null 2>&1
# Each host imports the other's certificate (what operators exchange).
id_b=$("$aicon" trust "$dir/b/node.crt" --data-dir "$dir/a" 2>/dev/null)
id_a=$("$aicon" trust "$dir/a/node.crt" --data-dir "$dir/b" 2>/dev/null)
cat > "$dir/b.toml" <<TOML
[host]
data_dir = "b"
listen = "127.0.0.1:$port_b"
site = "site-b"

[peers]
allow = ["$id_a"]
TOML
cat > "$dir/a.toml" <<TOML
[host]
data_dir = "a"
listen = "127.0.0.1:$port_a"
site = "site-a"

[peers]
connect = [ { address = "127.0.0.1:$port_b", node = "$id_b" } ]
TOML
echo "host A $id_a -> $dir/a.toml (port $port_a)"
echo "host B $id_b -> $dir/b.toml (port $port_b)"
echo "run:  $aicon host --config $dir/b.toml"
echo "      $aicon host --config $dir/a.toml"
echo "      $aicon ping 127.0.0.1:$port_b --data-dir $dir/a"
