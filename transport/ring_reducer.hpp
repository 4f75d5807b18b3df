// The actor ring's allreduce (Horovod's ring-allreduce over CAF actors):
// every rank's buffer is cut into one segment per rank and every segment
// into chunks; reduce-scatter passes partial sums to the right neighbour
// (each chunk forwarded as soon as it is added to, so every link is busy),
// all-gather passes the final segments around. Each RingChunk is a request
// whose answer returns a credit: a rank has at most `credits` chunks
// unanswered, so no mailbox grows without bound (CAF 0.17's send has no
// backpressure). A segment is always summed in ring order starting at its
// own rank, so the result does not depend on timing. A dead or silent
// neighbour aborts the collective with an error after `timeout_ms`.
//
// A rank's neighbour is any actor that takes RingChunk envelopes for it:
// the member itself in one process, or the trainer role of another host
// through the directory. The member code never knows which.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "gpu/reducer.hpp"

namespace aicon::train {

struct ring_options {
  uint32_t chunk_bytes = 256 << 10; ///< pipelining grain
  uint32_t credits = 4;             ///< chunks in flight to the right neighbour
  uint32_t timeout_ms = 10000;      ///< a collective that makes no progress this long fails
  /// Stream transport only: frames in clear after the authenticated
  /// handshake (no AES-GCM), for networks the operator trusts (as NCCL and
  /// Gloo always do). Both ends must agree; a frame says which it is.
  bool plain = false;
  /// Actor transport: the session's token, carried in every RingChunk and
  /// checked by the receiving host's trainer role.
  std::array<uint8_t, 32> token{};
};

using ring_id = std::array<uint8_t, 32>;

/// The ring schedule shared by every transport: `n` floats cut into one
/// segment per rank and each segment into chunks of `chunk_floats`.
/// Reduce-scatter step k sends segment (rank - k) and receives (rank - k - 1);
/// all-gather step k sends (rank + 1 - k) and receives (rank - k). A segment
/// is always summed in ring order starting at its own rank, so the result
/// is the same bits whatever the timing or the transport.
struct ring_schedule {
  uint32_t rank = 0, size = 1;
  size_t n = 0, chunk_floats = 1;

  size_t seg_begin(uint32_t s) const {
    return n * s / size;
  }
  size_t seg_len(uint32_t s) const {
    return seg_begin(s + 1) - seg_begin(s);
  }
  uint32_t chunks(uint32_t s) const {
    return static_cast<uint32_t>((seg_len(s) + chunk_floats - 1) / chunk_floats);
  }
  uint32_t seg_of(uint8_t phase, uint32_t step, bool sending) const {
    int64_t base = phase == 0 ? static_cast<int64_t>(rank) - step - (sending ? 0 : 1)
                              : static_cast<int64_t>(rank) + (sending ? 1 : 0) - step;
    return static_cast<uint32_t>(((base % size) + size) % size);
  }
  /// (first float, floats) of chunk `chunk` of segment `seg`.
  std::pair<size_t, size_t> span_of(uint32_t seg, uint32_t chunk) const {
    size_t begin = seg_begin(seg) + static_cast<size_t>(chunk) * chunk_floats;
    size_t end = std::min(begin + chunk_floats, seg_begin(seg) + seg_len(seg));
    return {begin, end - begin};
  }
  /// Chunks this rank receives in one collective.
  uint64_t expected() const {
    uint64_t e = 0;
    for (uint32_t k = 0; k + 1 < size; ++k)
      e += chunks(seg_of(0, k, false)) + chunks(seg_of(1, k, false));
    return e;
  }
};

/// The actor of rank `rank` of `size` on ring `ring`. It takes RingChunk
/// envelopes from its left neighbour; `connect_ring` gives it its right one.
caf::actor spawn_ring_member(caf::actor_system& sys, const ring_id& ring, uint32_t rank,
                             uint32_t size, const ring_options& opts);

/// Sets `member`'s right neighbour (an actor taking RingChunk for rank + 1).
void connect_ring(const caf::actor& member, const caf::actor& right);

/// gpu::reducer over a ring member: allreduce blocks the calling thread
/// (a trainer's own thread, never a CAF scheduler thread) until the ring
/// is done; the member reads and writes the caller's buffer in place.
class ring_reducer : public gpu::reducer {
public:
  ring_reducer(caf::actor_system& sys, caf::actor member, uint32_t rank, uint32_t size,
               const ring_options& opts);
  std::string allreduce(std::span<float> data, gpu::reduce_op op) override;
  size_t rank() const override {
    return rank_;
  }
  size_t size() const override {
    return size_;
  }

private:
  caf::actor_system& sys_;
  caf::actor member_;
  uint32_t rank_, size_;
  ring_options opts_;
};

} // namespace aicon::train
