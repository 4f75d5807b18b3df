# Trainers: the messages of the actor ring's allreduce.
@0xc7a93e55d2b10f48;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct RingChunk {
  # One chunk of one segment, sent to the right neighbour. Its answer (a
  # RingAck) is the sender's credit back: a rank has at most ring_credits
  # chunks unanswered, so no mailbox grows without bound.
  ring @0 :Data;        # id of the ring (a job's session), 32 bytes
  rank @1 :UInt32;      # the receiving rank
  collective @2 :UInt64;# sequence number of the allreduce on this ring (from 1)
  phase @3 :UInt8;      # 0 = reduce-scatter, 1 = all-gather
  step @4 :UInt32;      # 0 .. ranks-2 within the phase
  chunk @5 :UInt32;     # index of the chunk within its segment
  values @6 :Data;      # float32, little-endian
}

struct RingAck {
  collective @0 :UInt64;
}
