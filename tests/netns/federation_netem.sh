#!/usr/bin/env bash
# integration.netns: the federation suite run inside a network namespace of
# its own whose loopback delays every packet by `tc netem`. Every host still
# listens and dials on 127.0.0.1 (the namespace's own loopback), so nothing
# leaves the machine and the machine's loopback is untouched. Exits 77
# (reported by ctest as skipped) with the reason when the machine does not
# allow it: not root, no iproute2, namespaces refused, or no netem qdisc.
set -uo pipefail

bin=${1:?usage: federation_netem.sh PATH/TO/aicon_integration_tests}
delay_ms=${AICON_NETEM_DELAY_MS:-5}

skip() {
  echo "netns test skipped: $*"
  exit 77
}

command -v ip >/dev/null || skip "iproute2's 'ip' is not installed"
command -v tc >/dev/null || skip "iproute2's 'tc' is not installed"
[[ $(id -u) -eq 0 ]] || skip "creating a network namespace needs root (CAP_NET_ADMIN)"

ns=aicon-netem-$$
err=$(mktemp)
trap 'ip netns del "$ns" 2>/dev/null; rm -f "$err"' EXIT

ip netns add "$ns" 2>"$err" || skip "'ip netns add' failed: $(tr '\n' ' ' <"$err")"
ip netns exec "$ns" ip link set lo up 2>"$err" \
  || skip "'ip link set lo up' in the namespace failed: $(tr '\n' ' ' <"$err")"
ip netns exec "$ns" tc qdisc add dev lo root netem delay "${delay_ms}ms" 2>"$err" \
  || skip "'tc qdisc add dev lo root netem' failed (this kernel has no netem qdisc?): $(tr '\n' ' ' <"$err")"

echo "namespace $ns: loopback delayed ${delay_ms} ms per packet by netem"
AICON_NETEM_DELAY_MS=$delay_ms ip netns exec "$ns" "$bin" --run_test=federation
