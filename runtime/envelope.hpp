// The envelope: one registered CAF type that carries any Cap'n Proto message
// between actors, locally (reference counted, never copied) or remotely
// (serialized once by CAF's middleman). Wire layout: schemas/common.capnp.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <capnp/message.h>
#include <capnp/orphan.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <caf/deserializer.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/serializer.hpp>

#include "runtime/error.hpp"
#include "runtime/limits.hpp"

namespace aicon {

/// An allocator that default-initializes, so resizing a word buffer before
/// overwriting it does not zero it first.
template <class T>
struct default_init_allocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = default_init_allocator<U>;
  };
  using std::allocator<T>::allocator;
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (std::is_same_v<U, capnp::word> && sizeof...(Args) == 1)
      // capnp::word forbids copying by constructor; it is 8 plain bytes
      // (clang instantiates this for a copied word vector, gcc does not).
      [p](const auto& w) { std::memcpy(static_cast<void*>(p), &w, sizeof(U)); }(args...);
    else
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using word_vector = std::vector<capnp::word, default_init_allocator<capnp::word>>;

/// A Cap'n Proto message in flat-array form plus the struct id of its root.
/// Immutable once built; handlers take it by const reference.
struct envelope {
  uint64_t type_id = 0; ///< capnp::typeId<T>() of the root struct
  word_vector words;    ///< segment table followed by the segments

  envelope() = default;
  envelope(const envelope&) = default;
  envelope(envelope&&) noexcept = default;
  envelope& operator=(envelope&&) noexcept = default;
  /// By bytes: capnp::word has no copy assignment under every compiler.
  envelope& operator=(const envelope& other) {
    if (this != &other) {
      type_id = other.type_id;
      words.resize(other.words.size());
      if (!words.empty())
        std::memcpy(static_cast<void*>(words.data()), static_cast<const void*>(other.words.data()),
                    other.size_bytes());
    }
    return *this;
  }

  size_t size_bytes() const {
    return words.size() * sizeof(capnp::word);
  }
  /// The words as bytes (to store or hash them).
  std::span<const uint8_t> bytes() const {
    return {reinterpret_cast<const uint8_t*>(words.data()), size_bytes()};
  }
};

/// What the deserializer leaves in place of an envelope over
/// envelope_bytes_max whose bytes all arrived: it skips them unread and
/// keeps only their count (one word), so the role answers the sender
/// "message_too_large" instead of the request vanishing in CAF.
inline constexpr uint64_t oversize_type_id = 0xa1c0'0000'0000'0b16ull;

/// For an oversize marker: the message_too_large error naming its size and
/// the limit (none for any other envelope).
caf::error oversize_error(const envelope& env);

/// An envelope of root type `type_id` holding a copy of `bytes`, e.g. flat
/// words read back from the store (a trailing partial word is dropped; the
/// reader checks the rest when the envelope is opened).
envelope envelope_from_bytes(std::span<const uint8_t> bytes, uint64_t type_id);

/// Limits applied when opening an envelope.
struct reader_limits {
  uint64_t envelope_bytes_max;
  uint64_t traversal_words_max;
  uint32_t nesting_max;
};

/// Reader limits from `l`.
reader_limits reader_limits_from(const limits& l);

/// Limits used when none are given; set once at start-up by the host
/// (thread-safe: read by CAF's BASP workers while deserializing).
reader_limits current_reader_limits();
void set_current_reader_limits(const reader_limits& l);

namespace detail {

caf::error save_envelope(caf::serializer& f, envelope& x);
caf::error load_envelope(caf::deserializer& f, envelope& x);

/// Checks size, alignment and type id; returns the error to report, if any.
caf::error check_envelope(const envelope& env, uint64_t expected_type_id,
                          const reader_limits& lim);

/// Human-readable name of a schema struct id ("EchoRequest" or "0x...").
std::string type_name_of(uint64_t type_id);

void register_type_name(uint64_t type_id, std::string name);

template <class T>
struct type_name_registrar {
  type_name_registrar() {
    register_type_name(capnp::typeId<T>(),
                       capnp::Schema::from<T>().getShortDisplayName().cStr());
  }
};

} // namespace detail

/// CAF inspection: the raw words are written and read in one block. Loading
/// refuses a length over envelope_bytes_max before allocating anything.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, envelope& x) {
  if constexpr (std::is_same_v<Inspector, caf::serializer>) {
    return detail::save_envelope(f, x);
  } else if constexpr (std::is_same_v<Inspector, caf::deserializer>) {
    return detail::load_envelope(f, x);
  } else {
    uint64_t size_bytes = x.size_bytes();
    return f(caf::meta::type_name("aicon::envelope"), x.type_id, size_bytes);
  }
}

/// Builds one message. The first segment lives inside the builder so small
/// messages cost no heap allocation besides the envelope's own buffer.
class envelope_builder {
public:
  envelope_builder();
  envelope_builder(const envelope_builder&) = delete;
  envelope_builder& operator=(const envelope_builder&) = delete;

  template <class T>
  typename T::Builder init_root() {
    type_id_ = capnp::typeId<T>();
    static detail::type_name_registrar<T> registrar;
    return builder_.initRoot<T>();
  }

  /// A deep copy of `r` as the root.
  template <class T>
  void set_root(typename T::Reader r) {
    type_id_ = capnp::typeId<T>();
    static detail::type_name_registrar<T> registrar;
    builder_.setRoot(r);
  }

  /// For adopting external data without copying it into the builder (large
  /// payloads): the bytes are copied exactly once, by finish().
  capnp::Orphanage orphanage() {
    return builder_.getOrphanage();
  }

  /// Serializes into a new envelope. `type_id` is the root's, set by
  /// init_root.
  envelope finish();

private:
  static constexpr size_t scratch_words = 32;
  capnp::word scratch_[scratch_words];
  capnp::MallocMessageBuilder builder_;
  uint64_t type_id_ = 0;
};

/// Builds an envelope whose root is a T filled by `fill(T::Builder)` or
/// `fill(T::Builder, envelope_builder&)`.
template <class T, class F>
envelope make_envelope(F&& fill) {
  envelope_builder b;
  auto root = b.init_root<T>();
  if constexpr (std::is_invocable_v<F, typename T::Builder, envelope_builder&>)
    fill(root, b);
  else
    fill(root);
  return b.finish();
}

/// An envelope holding a copy of `r` (e.g. a struct nested in a message).
template <class T>
envelope copy_envelope(typename T::Reader r) {
  envelope_builder b;
  b.set_root<T>(r);
  return b.finish();
}

/// Words a reader of a message of `words` words may traverse: a fixed
/// multiple of its size (validation walks it once, handlers read fields a
/// few times more), never above `lim.traversal_words_max`. Cap'n Proto
/// charges each element of a list of zero-size structs as one word, so a
/// 40-byte message claiming a list of 16 M empty structs (found by the
/// envelope fuzzer: seconds of a handler's loop) is cut at this bound
/// instead of the largest envelope's.
inline constexpr uint64_t traversal_words_per_word = 8;
inline constexpr uint64_t traversal_words_floor = 8192;
inline uint64_t traversal_words_for(size_t words, const reader_limits& lim) {
  return std::min<uint64_t>(lim.traversal_words_max,
                            traversal_words_per_word * words + traversal_words_floor);
}

/// A checked view of an envelope as a T. Construction never throws: check
/// `ok()` (or bool conversion) and `error()` first. The envelope must outlive
/// the view (a temporary one is moved into the view and kept by it); a view
/// never crosses a mailbox.
template <class T>
class opened {
public:
  explicit opened(const envelope& env,
                  const reader_limits& lim = current_reader_limits()) {
    open(env, lim);
  }
  /// A temporary envelope (a function's return value): kept by the view, so
  /// `opened<T> x{make()};` reads live memory after the statement.
  explicit opened(envelope&& env, const reader_limits& lim = current_reader_limits())
    : owned_(std::move(env)) {
    open(*owned_, lim);
  }

  opened(const opened&) = delete;
  opened& operator=(const opened&) = delete;

  bool ok() const {
    return !err_;
  }
  explicit operator bool() const {
    return ok();
  }
  const caf::error& error() const {
    return err_;
  }
  typename T::Reader root() const {
    return root_;
  }
  const typename T::Reader* operator->() const {
    return &root_;
  }

private:
  void open(const envelope& env, const reader_limits& lim) {
    static detail::type_name_registrar<T> registrar;
    err_ = detail::check_envelope(env, capnp::typeId<T>(), lim);
    if (err_)
      return;
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = traversal_words_for(env.words.size(), lim);
    opts.nestingLimit = static_cast<int>(lim.nesting_max);
    try {
      reader_.emplace(kj::ArrayPtr<const capnp::word>(env.words.data(),
                                                      env.words.size()),
                      opts);
      root_ = reader_->template getRoot<T>();
      // Walks every pointer once, so a bad pointer is found here and not
      // halfway through a handler that already changed state.
      root_.totalSize();
    } catch (const kj::Exception& e) {
      err_ = make_error(errc::malformed_message,
                        detail::type_name_of(capnp::typeId<T>()) + ": "
                          + e.getDescription().cStr());
    }
  }

  std::optional<envelope> owned_; ///< a temporary envelope, kept (declared before the reader)
  std::optional<capnp::FlatArrayMessageReader> reader_;
  typename T::Reader root_;
  caf::error err_;
};

/// Whether `env` holds a T (type id only, no validation).
template <class T>
bool holds(const envelope& env) {
  return env.type_id == capnp::typeId<T>();
}

/// An ErrorReply envelope describing `err`.
envelope make_error_reply(const caf::error& err);

/// If `env` is an ErrorReply, the error it carries (a malformed ErrorReply is
/// itself reported as malformed_message); none otherwise.
caf::error error_of_reply(const envelope& env);

/// What the signer of a request that carries its own signature field signs:
/// `tag` ‖ `chain` (the chain id the request counts on) ‖ canonical(`r` with
/// its `signature` unset). Used by RateRequest and AllocAsk.
template <class T>
std::vector<uint8_t> request_signing_bytes(std::string_view tag,
                                           std::span<const uint8_t, 32> chain,
                                           typename T::Reader r) {
  capnp::MallocMessageBuilder m;
  m.setRoot(r);
  auto b = m.getRoot<T>();
  if (b.hasSignature())
    b.disownSignature();
  auto canonical = capnp::canonicalize(b.asReader());
  auto bytes = canonical.asBytes();
  std::vector<uint8_t> out(tag.begin(), tag.end());
  out.insert(out.end(), chain.begin(), chain.end());
  out.insert(out.end(), bytes.begin(), bytes.end());
  return out;
}

} // namespace aicon
