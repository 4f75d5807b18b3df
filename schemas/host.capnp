# What a host's gatekeeper answers about the host itself.
@0xa35c2f8c66b5a498;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct HelloRequest {
  # Sent right after a link comes up: proves which NodeId is on the other end
  # (CAF never says which allowed host is on a link).
  nonce @0 :Data; # 32 fresh random bytes chosen by the asker
}

struct HelloResponse {
  node @0 :Data;          # the answering host's NodeId (32 bytes)
  signature @1 :Data;     # ed25519 over "aicon-hello-v1" ‖ nonce ‖ node (64 bytes)
  roles @2 :List(Text);   # roles the host runs
  site @3 :Text;          # the operator's site name
  version @4 :Text;       # aicon version
}

struct StatusRequest {
  # Asks a host for its operator status.
}

struct PeerStatus {
  node @0 :Data;        # NodeId (32 bytes)
  address @1 :Text;     # host:port the link was made to
  up @2 :Bool;          # whether the link is up now
  roles @3 :List(Text); # roles the peer announced
  site @4 :Text;        # the peer's site name
  rttMs @5 :Float64;    # smoothed round trip of pings (at first: of the signed hello)
  rttSamples @6 :UInt32; # pings answered since the link came up
}

struct StatusResponse {
  node @0 :Data;                # this host's NodeId
  roles @1 :List(Text);         # roles running here
  peers @2 :List(PeerStatus);   # configured and learned peers
  runningActors @3 :UInt32;     # actors alive in this host's actor system
  malformedDropped @4 :UInt64;  # malformed or unexpected messages counted
  requestsServed @5 :UInt64;    # requests routed to roles by the gatekeeper
  site @6 :Text;                # the operator's site name
  listenPort @7 :UInt16;        # the TLS port this host listens on
  members @8 :List(MemberStatus); # the federation as gossip shows it (this host included)
  badBlocks @9 :UInt64;         # blocks peers served in catch-up that failed verification
}

struct LinkRtt {
  node @0 :Data;        # a peer (32 bytes)
  ms @1 :Float64;       # smoothed round trip of pings to it
}

struct MemberState {
  # What one host says about itself, signed by it; gossip spreads these, so
  # no host can speak for another.
  node @0 :Data;          # NodeId (32 bytes)
  address @1 :Text;       # host:port it listens on
  site @2 :Text;
  roles @3 :List(Text);
  incarnation @4 :UInt64; # its start (ms since the epoch): a restart outranks older states
  heartbeat @5 :UInt64;   # bumped every gossip round while it runs
  rtts @6 :List(LinkRtt); # its measured round trips to its up peers
  signature @7 :Data;     # Ed25519 by `node` over member_signing_bytes
}

struct Gossip {
  # Push-pull: sent to a peer's directory, answered with the receiver's view.
  members @0 :List(MemberState);
  agesMs @1 :List(UInt64); # per member: since the sender last saw its heartbeat advance
}

struct Ping {
  nonce @0 :UInt64;     # answered with a Pong carrying the same nonce
}

struct Pong {
  nonce @0 :UInt64;
}

struct MemberStatus {
  node @0 :Data;
  address @1 :Text;
  site @2 :Text;
  roles @3 :List(Text);
  up @4 :Bool;            # its heartbeat advanced within member_down_ms
  heartbeat @5 :UInt64;
  incarnation @6 :UInt64;
  sinceMs @7 :UInt64;     # since its heartbeat last advanced (as seen here)
}
