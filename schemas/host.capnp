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
  rttMs @5 :Float64;    # round trip of the signed hello when the link last came up
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
}
