# Common types shared by every aicon protocol, and the envelope that carries
# them between actors.
#
# The envelope (runtime/envelope.hpp) is the one CAF message type every role
# sends and receives. On the wire (CAF's BASP, inside TLS) it is:
#
#   typeId  : UInt64   the Cap'n Proto struct id of the body (e.g. the @0x...
#                      id that `capnp compile` assigns to EchoRequest)
#   length  : varint   number of bytes that follow (a multiple of 8)
#   words   : bytes    a Cap'n Proto message in the standard flat-array
#                      serialization (segment table, then segments)
#
# A receiver checks, in this order: length <= envelope_bytes_max, length is a
# multiple of 8, typeId is the struct it expects, the segment table is sound,
# and every pointer is in bounds within the traversal and nesting limits. Any
# failure is answered with an ErrorReply (requests) or dropped and counted
# (one-way messages); it never changes state.
@0xa847659f25322435;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct NodeId {
  # A host or wallet identity: a libsodium ed25519 public key.
  key @0 :Data; # exactly 32 bytes
}

struct Hash {
  # A BLAKE2b-256 digest.
  bytes @0 :Data; # exactly 32 bytes
}

struct Amount {
  # A token amount in the chain's smallest unit; never negative.
  units @0 :UInt64; # smallest units (1 token = 10^9 units)
}

struct Signature {
  # A detached ed25519 signature made with libsodium's crypto_sign_detached.
  bytes @0 :Data; # exactly 64 bytes
}

enum ErrorCode {
  # Mirrors aicon::errc (runtime/error.hpp); ordinals are only ever appended.
  none @0;             # not an error
  malformedMessage @1; # bytes that are not a valid Cap'n Proto message
  unexpectedType @2;   # a valid message of a type this receiver does not take
  messageTooLarge @3;  # over envelope_bytes_max
  unknownRole @4;      # no such role on that host
  unknownNode @5;      # no such peer known to the directory
  peerDown @6;         # the link to the peer is down
  timeout @7;          # no answer within the request timeout
  forbidden @8;        # the author is not allowed to do this
  badSignature @9;     # a signature that does not verify
  invalidArgument @10; # a well-formed request with a value out of range
  internal @11;        # a bug on the answering side
  notFound @12;        # no such record (block, asset, ...)
  busy @13;            # out of capacity for now (a full pool, every slot taken): back off
  cancelled @14;       # stopped on purpose (a cancelled job)
  alreadyExists @15;   # done once already (a job rated, an id taken): do not repeat
}

enum RetryAdvice {
  # What a caller should do about an error.
  giveUp @0;  # the same request will fail the same way
  retry @1;   # a transient failure: retry now
  backOff @2; # retry later (peer down, overloaded)
}

struct ErrorReply {
  # The answer to any request that could not be served.
  code @0 :ErrorCode;    # what went wrong
  message @1 :Text;      # a sentence for a person, naming what was wrong
  retry @2 :RetryAdvice; # what the caller should do about it
}
