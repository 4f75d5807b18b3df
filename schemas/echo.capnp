# The echo role: answers a request with its own payload. Used by `aicon ping`,
# the message benchmark and the integration tests of location transparency.
@0xdbb6dfa213fe4053;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct EchoRequest {
  seq @0 :UInt64;       # caller's sequence number, echoed back
  payload @1 :Data;     # echoed back unchanged
  forwardTo @2 :Text;   # if set, the echo role sends the request (with this
                        # field cleared) to this directory name, e.g.
                        # "echo@<node>", and returns that answer: lets a test
                        # make an actor on one host talk to another host
  delayMs @3 :UInt32;   # answer only after this many milliseconds (tests of
                        # requests pending while a peer dies); at most 60000
}

struct EchoResponse {
  seq @0 :UInt64;       # the request's seq
  payload @1 :Data;     # the request's payload
  node @2 :Data;        # NodeId (32 bytes) of the host that answered
}
