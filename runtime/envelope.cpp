#include "runtime/envelope.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "runtime/log.hpp"
#include "schemas/common.capnp.h"

namespace aicon {

namespace {

std::atomic<uint64_t> g_envelope_bytes_max{limits{}.envelope_bytes_max};
std::atomic<uint64_t> g_traversal_words_max{limits{}.traversal_words_max};
std::atomic<uint32_t> g_nesting_max{limits{}.nesting_max};

std::mutex g_names_mtx;
std::map<uint64_t, std::string>& type_names() {
  static std::map<uint64_t, std::string> names;
  return names;
}

} // namespace

reader_limits reader_limits_from(const limits& l) {
  return {l.envelope_bytes_max, l.traversal_words_max, l.nesting_max};
}

reader_limits current_reader_limits() {
  return {g_envelope_bytes_max.load(std::memory_order_relaxed),
          g_traversal_words_max.load(std::memory_order_relaxed),
          g_nesting_max.load(std::memory_order_relaxed)};
}

void set_current_reader_limits(const reader_limits& l) {
  g_envelope_bytes_max = l.envelope_bytes_max;
  g_traversal_words_max = l.traversal_words_max;
  g_nesting_max = l.nesting_max;
}

envelope envelope_from_bytes(std::span<const uint8_t> bytes, uint64_t type_id) {
  envelope env;
  env.type_id = type_id;
  env.words.resize(bytes.size() / sizeof(capnp::word));
  std::memcpy(static_cast<void*>(env.words.data()), bytes.data(), env.size_bytes());
  return env;
}

namespace detail {

caf::error save_envelope(caf::serializer& f, envelope& x) {
  size_t n = x.size_bytes();
  if (auto err = f.apply(x.type_id))
    return err;
  if (auto err = f.begin_sequence(n))
    return err;
  if (n > 0)
    if (auto err = f.apply_raw(n, x.words.data()))
      return err;
  return f.end_sequence();
}

caf::error load_envelope(caf::deserializer& f, envelope& x) {
  size_t n = 0;
  if (auto err = f.apply(x.type_id))
    return err;
  if (auto err = f.begin_sequence(n))
    return err;
  auto max = g_envelope_bytes_max.load(std::memory_order_relaxed);
  if (n > max) {
    // Read past it in small pieces (never holding it) so the message still
    // reaches its role as a marker that gets an answer; a sequence whose
    // bytes are not all there fails here, as before.
    char scratch[1 << 16];
    for (size_t left = n; left > 0;) {
      auto k = std::min(left, sizeof(scratch));
      if (f.apply_raw(k, scratch))
        return make_error(errc::message_too_large,
                          fmt::format("envelope of {} bytes exceeds envelope_bytes_max "
                                      "({} bytes)", n, max));
      left -= k;
    }
    log_warning("dropped an envelope of {} bytes (type {:016x}) unread: over "
                "envelope_bytes_max ({} bytes)", n, x.type_id, max);
    x.type_id = oversize_type_id;
    x.words.clear();
    x.words.resize(1); // capnp::word cannot be copied by assignment
    uint64_t size = n;
    std::memcpy(static_cast<void*>(x.words.data()), &size, sizeof(size));
    return f.end_sequence();
  }
  if (n % sizeof(capnp::word) != 0)
    return make_error(errc::malformed_message,
                      fmt::format("envelope of {} bytes is not a whole number of "
                                  "8-byte words", n));
  x.words.resize(n / sizeof(capnp::word));
  if (n > 0)
    if (auto err = f.apply_raw(n, x.words.data()))
      return err;
  return f.end_sequence();
}

void register_type_name(uint64_t type_id, std::string name) {
  std::lock_guard<std::mutex> guard{g_names_mtx};
  type_names().emplace(type_id, std::move(name));
}

std::string type_name_of(uint64_t type_id) {
  {
    std::lock_guard<std::mutex> guard{g_names_mtx};
    auto i = type_names().find(type_id);
    if (i != type_names().end())
      return i->second;
  }
  return fmt::format("0x{:016x}", type_id);
}

caf::error check_envelope(const envelope& env, uint64_t expected_type_id,
                          const reader_limits& lim) {
  if (env.size_bytes() > lim.envelope_bytes_max)
    return make_error(errc::message_too_large,
                      fmt::format("{} of {} bytes exceeds envelope_bytes_max ({} bytes)",
                                  type_name_of(expected_type_id), env.size_bytes(),
                                  lim.envelope_bytes_max));
  if (env.type_id != expected_type_id)
    return make_error(errc::unexpected_type,
                      fmt::format("expected {} but got {}", type_name_of(expected_type_id),
                                  type_name_of(env.type_id)));
  if (env.words.empty())
    return make_error(errc::malformed_message,
                      fmt::format("{}: empty message", type_name_of(expected_type_id)));
  return caf::none;
}

} // namespace detail

envelope_builder::envelope_builder()
  : scratch_{}, builder_(kj::ArrayPtr<capnp::word>(scratch_, scratch_words)) {
}

namespace {

/// Writes into a caller-owned buffer; the one copy of every byte.
class buffer_output : public kj::OutputStream {
public:
  explicit buffer_output(kj::byte* out) : out_(out) {
  }
  void write(const void* buffer, size_t size) override {
    std::memcpy(out_, buffer, size);
    out_ += size;
  }
  kj::byte* position() const {
    return out_;
  }

private:
  kj::byte* out_;
};

} // namespace

envelope envelope_builder::finish() {
  envelope env;
  env.type_id = type_id_;
  auto words = capnp::computeSerializedSizeInWords(builder_);
  env.words.resize(words);
  buffer_output out{reinterpret_cast<kj::byte*>(env.words.data())};
  capnp::writeMessage(out, builder_);
  KJ_ASSERT(out.position()
            == reinterpret_cast<kj::byte*>(env.words.data() + env.words.size()));
  return env;
}

envelope make_error_reply(const caf::error& err) {
  auto code = code_of(err);
  auto text = describe(err);
  return make_envelope<schema::ErrorReply>([&](schema::ErrorReply::Builder b) {
    b.setCode(static_cast<schema::ErrorCode>(
      code == errc::not_found        ? schema::ErrorCode::NOT_FOUND
      : code == errc::busy           ? schema::ErrorCode::BUSY
      : code == errc::cancelled      ? schema::ErrorCode::CANCELLED
      : code == errc::already_exists ? schema::ErrorCode::ALREADY_EXISTS
      : code == errc::config_invalid || code == errc::io_error
        ? schema::ErrorCode::INTERNAL
        : static_cast<schema::ErrorCode>(code)));
    b.setMessage(text);
    b.setRetry(static_cast<schema::RetryAdvice>(advice_for(code)));
  });
}

namespace {

caf::error error_of_checked_reply(schema::ErrorReply::Reader reply) {
  auto wire = reply.getCode();
  auto code = wire == schema::ErrorCode::NOT_FOUND        ? errc::not_found
              : wire == schema::ErrorCode::BUSY           ? errc::busy
              : wire == schema::ErrorCode::CANCELLED      ? errc::cancelled
              : wire == schema::ErrorCode::ALREADY_EXISTS ? errc::already_exists
              : static_cast<uint16_t>(wire) <= static_cast<uint16_t>(schema::ErrorCode::INTERNAL)
                ? static_cast<errc>(wire)
                : errc::internal; // a code this build does not know
  std::string text = reply.getMessage().cStr();
  // The remote side rendered "code: what"; keep only "what".
  auto prefix = std::string{to_string(code)} + ": ";
  if (text.rfind(prefix, 0) == 0)
    text.erase(0, prefix.size());
  return make_error(code, std::move(text));
}

} // namespace

caf::error error_of_reply(const envelope& env) {
  if (!holds<schema::ErrorReply>(env))
    return caf::none;
  opened<schema::ErrorReply> reply{env};
  if (!reply)
    return reply.error();
  // The answer comes from a peer: a field of the wrong kind throws when read
  // (found by fuzz/envelope_fuzz.cpp); it is a malformed answer, not a crash.
  try {
    return error_of_checked_reply(reply.root());
  } catch (const kj::Exception& e) {
    return make_error(errc::malformed_message,
                      fmt::format("a malformed ErrorReply: {}", e.getDescription().cStr()));
  }
}

caf::error oversize_error(const envelope& env) {
  if (env.type_id != oversize_type_id || env.words.size() != 1)
    return caf::none;
  uint64_t size = 0;
  std::memcpy(&size, static_cast<const void*>(env.words.data()), sizeof(size));
  return make_error(errc::message_too_large,
                    fmt::format("an envelope of {} bytes exceeds envelope_bytes_max ({} bytes); "
                                "it was dropped unread",
                                size, g_envelope_bytes_max.load(std::memory_order_relaxed)));
}

} // namespace aicon
