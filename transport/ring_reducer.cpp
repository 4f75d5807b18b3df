#include "transport/ring_reducer.hpp"

#include <algorithm>
#include <cstring>
#include <deque>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon::train {

namespace {

// Local control messages (never leave the process: the gatekeeper admits
// envelopes only).
using ring_right_atom = caf::atom_constant<caf::atom("ringright")>;
using ring_start_atom = caf::atom_constant<caf::atom("ringstart")>;
using ring_check_atom = caf::atom_constant<caf::atom("ringcheck")>;

struct pending_send {
  uint8_t phase;
  uint32_t step, chunk;
};

struct ring_member_state {
  ring_id ring{};
  uint32_t rank = 0, size = 1;
  ring_options opts;
  caf::actor right;

  uint64_t collective = 0; ///< the latest one started here
  bool active = false;
  float* data = nullptr;
  size_t n = 0;
  size_t chunk_floats = 1;
  uint64_t expected = 0, received = 0; ///< chunks this rank must receive
  std::deque<pending_send> outbox;
  uint32_t in_flight = 0;
  uint64_t progress = 0; ///< bumps on every event; the watchdog compares it
  caf::typed_response_promise<bool> done;
  /// Chunks of the next collective that arrived before it started here;
  /// at most `credits` (the left neighbour waits for their answers).
  std::vector<std::pair<envelope, caf::response_promise>> early;
  static inline const char* name = "aicon.ring_member";

  ring_schedule sched() const {
    return {rank, size, n, chunk_floats};
  }
  uint32_t chunks(uint32_t s) const {
    return sched().chunks(s);
  }
  uint32_t seg_of(uint8_t phase, uint32_t step, bool sending) const {
    return sched().seg_of(phase, step, sending);
  }
  std::pair<size_t, size_t> span_of(uint32_t seg, uint32_t chunk) const {
    return sched().span_of(seg, chunk);
  }
};

using member_actor = caf::stateful_actor<ring_member_state>;

void finish(member_actor* self, caf::error err) {
  auto& st = self->state;
  if (!st.active)
    return;
  st.active = false;
  st.outbox.clear();
  st.data = nullptr;
  if (err)
    st.done.deliver(std::move(err));
  else
    st.done.deliver(true);
}

void maybe_done(member_actor* self) {
  auto& st = self->state;
  if (st.active && st.received == st.expected && st.outbox.empty() && st.in_flight == 0)
    finish(self, caf::error{});
}

void pump(member_actor* self) {
  auto& st = self->state;
  while (st.active && !st.outbox.empty() && st.in_flight < st.opts.credits) {
    auto s = st.outbox.front();
    st.outbox.pop_front();
    auto seg = st.seg_of(s.phase, s.step, true);
    auto span = st.span_of(seg, s.chunk); // no structured binding: captured below
    auto begin = span.first;
    auto len = span.second;
    auto right_rank = (st.rank + 1) % st.size;
    auto msg = make_envelope<schema::RingChunk>([&](schema::RingChunk::Builder b) {
      b.setRing(kj::arrayPtr(st.ring.data(), 32));
      b.setRank(right_rank);
      b.setCollective(st.collective);
      b.setPhase(s.phase);
      b.setStep(s.step);
      b.setChunk(s.chunk);
      b.setValues(kj::arrayPtr(reinterpret_cast<const kj::byte*>(st.data + begin), len * 4));
      b.setToken(kj::arrayPtr(st.opts.token.data(), st.opts.token.size()));
    });
    ++st.in_flight;
    auto coll = st.collective;
    self->request(st.right, std::chrono::milliseconds{st.opts.timeout_ms}, std::move(msg))
      .then(
        [self, coll](envelope& reply) {
          auto& st = self->state;
          if (coll != st.collective || !st.active)
            return;
          --st.in_flight;
          ++st.progress;
          if (auto err = error_of_reply(reply))
            return finish(self, make_error(errc::peer_down,
                                           fmt::format("ring rank {}: the right neighbour refused "
                                                       "a chunk: {}",
                                                       st.rank, describe(err))));
          pump(self);
          maybe_done(self);
        },
        [self, coll](caf::error& err) {
          auto& st = self->state;
          if (coll != st.collective || !st.active)
            return;
          finish(self, make_error(errc::peer_down,
                                  fmt::format("ring rank {}: the right neighbour (rank {}) did not "
                                              "take a chunk: {}",
                                              st.rank, (st.rank + 1) % st.size, describe(err))));
        });
  }
}

/// Adds (reduce-scatter) or copies (all-gather) one chunk from the left
/// and queues what it makes sendable.
caf::error apply(member_actor* self, schema::RingChunk::Reader c) {
  auto& st = self->state;
  auto phase = c.getPhase();
  auto step = c.getStep();
  if (phase > 1 || step + 1 >= st.size)
    return make_error(errc::invalid_argument,
                      fmt::format("RingChunk: phase {} step {} does not exist on a ring of {}",
                                  phase, step, st.size));
  auto seg = st.seg_of(phase, step, false);
  if (c.getChunk() >= st.chunks(seg))
    return make_error(errc::invalid_argument,
                      fmt::format("RingChunk: segment {} has no chunk {}", seg, c.getChunk()));
  auto [begin, len] = st.span_of(seg, c.getChunk());
  auto values = c.getValues();
  if (values.size() != len * 4)
    return make_error(errc::invalid_argument,
                      fmt::format("RingChunk: {} bytes for a chunk of {} floats", values.size(),
                                  len));
  float* dst = st.data + begin;
  if (phase == 0) {
    // The partial sum so far (ranks seg .. rank-1, in ring order) plus ours.
    for (size_t i = 0; i < len; ++i) {
      float v;
      std::memcpy(&v, values.begin() + i * 4, 4);
      dst[i] = v + dst[i];
    }
    if (step + 2 < st.size)
      st.outbox.push_back({0, step + 1, c.getChunk()});
    else
      st.outbox.push_back({1, 0, c.getChunk()}); // final here: start its all-gather
  } else {
    std::memcpy(dst, values.begin(), len * 4);
    if (step + 2 < st.size)
      st.outbox.push_back({1, step + 1, c.getChunk()});
  }
  ++st.received;
  ++st.progress;
  return caf::none;
}

envelope ack(uint64_t collective) {
  return make_envelope<schema::RingAck>(
    [collective](schema::RingAck::Builder b) { b.setCollective(collective); });
}

caf::result<envelope> on_chunk(member_actor* self, const envelope& env) {
  auto& st = self->state;
  opened<schema::RingChunk> c{env};
  if (!c)
    return c.error();
  if (c->getRing().size() != 32 || std::memcmp(c->getRing().begin(), st.ring.data(), 32) != 0
      || c->getRank() != st.rank)
    return make_error(errc::invalid_argument,
                      fmt::format("RingChunk for ring/rank {} is not for rank {} of this ring",
                                  c->getRank(), st.rank));
  auto coll = c->getCollective();
  if (coll == st.collective && st.active) {
    if (auto err = apply(self, c.root()))
      return err;
    pump(self);
    maybe_done(self);
    return ack(coll);
  }
  if (coll == st.collective + 1 || (coll == st.collective && !st.active && !st.done.pending())) {
    if (st.early.size() >= 2 * st.opts.credits)
      return make_error(errc::invalid_argument,
                        "RingChunk: more early chunks than the credits allow");
    auto rp = self->make_response_promise<envelope>();
    st.early.emplace_back(env, rp);
    return rp;
  }
  return make_error(errc::invalid_argument,
                    fmt::format("RingChunk of collective {} on rank {} (at collective {})", coll,
                                st.rank, st.collective));
}

void watchdog(member_actor* self, uint64_t coll, uint64_t seen) {
  auto& st = self->state;
  if (!st.active || coll != st.collective)
    return;
  if (st.progress == seen)
    return finish(self, make_error(errc::timeout,
                                   fmt::format("ring rank {}: no progress for {} ms (received {} "
                                               "of {} chunks): a neighbour is dead or stuck",
                                               st.rank, st.opts.timeout_ms, st.received,
                                               st.expected)));
  self->delayed_send(self, std::chrono::milliseconds{st.opts.timeout_ms}, ring_check_atom::value,
                     coll, st.progress);
}

caf::behavior ring_member(member_actor* self, ring_id ring, uint32_t rank, uint32_t size,
                          ring_options opts) {
  auto& st = self->state;
  st.ring = ring;
  st.rank = rank;
  st.size = size;
  st.opts = opts;
  st.opts.credits = std::max<uint32_t>(1, opts.credits);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      if (env.type_id != capnp::typeId<schema::RingChunk>())
        return make_error(errc::unexpected_type, "a ring member takes RingChunk only");
      return on_chunk(self, env);
    },
    [self](ring_right_atom, caf::actor right) { self->state.right = std::move(right); },
    [self](ring_start_atom, uint64_t ptr, uint64_t n) -> caf::result<bool> {
      auto& st = self->state;
      if (st.active)
        return make_error(errc::invalid_argument, "ring: a collective is already running here");
      if (st.size > 1 && !st.right)
        return make_error(errc::invalid_argument, "ring: no right neighbour connected");
      ++st.collective;
      st.active = true;
      st.data = reinterpret_cast<float*>(static_cast<uintptr_t>(ptr));
      st.n = n;
      st.chunk_floats = std::max<size_t>(1, st.opts.chunk_bytes / 4);
      st.received = 0;
      st.in_flight = 0;
      st.outbox.clear();
      st.expected = st.sched().expected();
      st.done = self->make_response_promise<bool>();
      auto rp = st.done;
      if (st.size > 1)
        for (uint32_t c = 0; c < st.chunks(st.rank); ++c)
          st.outbox.push_back({0, 0, c});
      // Chunks that came early, in arrival order.
      auto early = std::move(st.early);
      st.early.clear();
      for (auto& [env, erp] : early) {
        opened<schema::RingChunk> c{env};
        if (c->getCollective() != st.collective) {
          erp.deliver(make_error(errc::invalid_argument, "RingChunk of a collective skipped"));
          continue;
        }
        if (auto err = apply(self, c.root()))
          erp.deliver(err);
        else
          erp.deliver(ack(st.collective));
      }
      self->delayed_send(self, std::chrono::milliseconds{st.opts.timeout_ms},
                         ring_check_atom::value, st.collective, st.progress);
      pump(self);
      maybe_done(self);
      return rp;
    },
    [self](ring_check_atom, uint64_t coll, uint64_t seen) { watchdog(self, coll, seen); },
  };
}

} // namespace

caf::actor spawn_ring_member(caf::actor_system& sys, const ring_id& ring, uint32_t rank,
                             uint32_t size, const ring_options& opts) {
  return sys.spawn(ring_member, ring, rank, size, opts);
}

void connect_ring(const caf::actor& member, const caf::actor& right) {
  caf::anon_send(member, ring_right_atom::value, right);
}

ring_reducer::ring_reducer(caf::actor_system& sys, caf::actor member, uint32_t rank,
                           uint32_t size, const ring_options& opts)
  : sys_(sys), member_(std::move(member)), rank_(rank), size_(size), opts_(opts) {
}

std::string ring_reducer::allreduce(std::span<float> data, gpu::reduce_op op) {
  caf::scoped_actor self{sys_};
  std::string result;
  // The member's own watchdog fails a stuck collective; this bound only
  // guards against the member itself being gone.
  auto bound = std::chrono::milliseconds{static_cast<int64_t>(opts_.timeout_ms) * 3};
  self
    ->request(member_, bound, ring_start_atom::value,
              static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data.data())),
              static_cast<uint64_t>(data.size()))
    .receive([](bool) {}, [&](caf::error& err) { result = describe(err); });
  if (result.empty() && op == gpu::reduce_op::average && size_ > 1) {
    float inv = 1.0f / static_cast<float>(size_);
    for (auto& v : data)
      v *= inv;
  }
  return result;
}

} // namespace aicon::train
