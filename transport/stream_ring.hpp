// The ring allreduce's bulk data path: the same reduce-scatter/all-gather
// schedule as the actor ring (ring_reducer.hpp), with its chunks carried
// over one direct TCP stream per ring link instead of CAF messages (as
// Horovod/Gloo and NCCL's socket transport do). The actors stay the control
// plane: the job coordinator hands each trainer the session's 32-byte link
// key inside its TrainerJoin (over the hosts' mutual-TLS links), every
// trainer listens on its host's address, reports the port in its JoinAck,
// and dials its right neighbour when told to (RingLink).
//
// Security: a connection is admitted only after a challenge-response on
// both sides (keyed BLAKE2b over the session, the rank and fresh nonces
// from both ends, so a recorded handshake cannot be replayed); every frame
// is then sealed with AES-128-GCM (OpenSSL, hardware AES) under a key
// derived from the link key and both nonces, with the frame's sequence
// number as nonce and its header as authenticated data: the values are
// confidential as on TLS, and a changed, dropped, reordered or replayed
// frame fails the collective with an error that says so.
//
// Flow control is TCP's: a rank writes only while its right neighbour's
// socket buffer has room, and one thread per rank drives both links with
// non-blocking sockets (no hand-off between threads). A frame is
// (collective, phase, step, chunk, total, bytes) plus the values, checked
// against the schedule before it is added. A dead or silent neighbour
// fails the collective after `timeout_ms`.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <caf/expected.hpp>

#include "transport/ring_reducer.hpp"

namespace aicon::train {

using link_key = std::array<uint8_t, 32>;
class frame_cipher;

class stream_ring : public gpu::reducer {
public:
  /// Rank `rank` of `size` on ring `ring`: listens on `bind_host` (port
  /// chosen by the OS) for its left neighbour, who must know `key`.
  static caf::expected<std::unique_ptr<stream_ring>>
  listen(const ring_id& ring, uint32_t rank, uint32_t size, const link_key& key,
         const std::string& bind_host, const ring_options& opts);

  ~stream_ring() override;
  stream_ring(const stream_ring&) = delete;
  stream_ring& operator=(const stream_ring&) = delete;

  uint16_t port() const {
    return port_;
  }

  /// Dials the right neighbour's listener and authenticates both ways.
  /// Errors name the address and what failed.
  caf::error connect(const std::string& host, uint16_t port);

  std::string allreduce(std::span<float> data, gpu::reduce_op op) override;
  size_t rank() const override {
    return rank_;
  }
  size_t size() const override {
    return size_;
  }

  /// Connections the listener refused (bad handshake), for tests and logs.
  uint64_t refused() const {
    return refused_.load();
  }

  /// A ring of two: each collective hashes (BLAKE2b-256 keyed with `key`)
  /// the first `floats` values the partner sent, as they come, in order (a
  /// chunk out of order fails the collective); 0 turns it off. The trainer
  /// checks the hash against the one its partner signed.
  void hash_peer_prefix(size_t floats, std::string_view key) {
    hash_prefix_ = floats;
    if (hash_key_ != key)
      hash_key_.assign(key);
  }
  /// The last collective's hash (none when off, or not a ring of two).
  const std::optional<std::array<uint8_t, 32>>& peer_prefix_hash() const {
    return peer_hash_;
  }

  /// Closes both links at once: a collective in progress here fails and
  /// the neighbours notice (tests use it as a crashed trainer).
  void shutdown_links();

private:
  stream_ring(const ring_id& ring, uint32_t rank, uint32_t size, const link_key& key,
              const ring_options& opts);
  void accept_loop();
  bool wait_left(std::string& err);
  std::string run(float* data, size_t n);

  struct send_item {
    uint8_t phase;
    uint32_t step, chunk;
  };

  ring_id ring_;
  uint32_t rank_, size_;
  link_key key_;
  ring_options opts_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<uint64_t> refused_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  int left_fd_ = -1, right_fd_ = -1;
  /// Per-connection frame keys (AES-128-GCM), one per direction.
  std::unique_ptr<frame_cipher> left_cipher_, right_cipher_;
  uint64_t left_seq_ = 0, right_seq_ = 0;          ///< frames received / sent
  bool stopping_ = false;
  std::thread acceptor_;

  // The data path (the calling thread only).
  uint64_t collective_ = 0;
  std::vector<uint8_t> rx_, tx_; ///< one frame each way
  std::vector<float> peer_;      ///< a ring of two: the other rank's values
  std::string broken_;           ///< set by a failed collective
  size_t hash_prefix_ = 0;       ///< hash_peer_prefix
  std::string hash_key_;
  std::optional<std::array<uint8_t, 32>> peer_hash_;
};

} // namespace aicon::train
