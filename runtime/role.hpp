// A role's behaviour is a table from message type to a short handler. The
// table decodes with checked limits, answers bad input with an ErrorReply
// (requests) or drops and counts it (one-way), and never lets a Cap'n Proto
// exception escape into CAF.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/local_actor.hpp>
#include <caf/result.hpp>

#include "runtime/access.hpp"
#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/system.hpp"

namespace aicon {

class message_table {
public:
  using handler = std::function<caf::result<envelope>(const envelope&)>;
  using guard_fn = std::function<caf::error(const envelope&)>;

  /// `rows`: the role's authorization table (static storage, declared
  /// beside the role); every type given to `on` must have a row there.
  message_table(std::string role_name, std::span<const access_row> rows)
    : role_(std::move(role_name)), rows_(rows) {
  }

  /// Adds a handler `f(typename T::Reader) -> caf::result<envelope>`, or
  /// `f(const envelope&, typename T::Reader)` when it needs the words too
  /// (e.g. to store them). Throws std::logic_error (at start-up, a bug) if
  /// the role's table has no row for T.
  template <class T, class F>
  message_table& on(F f) {
    return add<T>(nullptr, std::move(f));
  }

  /// As `on(f)`, with the row's guard: `g(typename T::Reader) -> caf::error`
  /// checks the proof the row names (a token, a signature) before `f`
  /// runs; its error is the answer (`forbidden` and `bad_signature` worded
  /// "ROLE: MESSAGE may be sent only by WHO: what was wrong"), and `f`
  /// never sees the message.
  template <class T, class G, class F>
  message_table& on(G g, F f) {
    guard_fn guard = [g = std::move(g)](const envelope& env) -> caf::error {
      opened<T> msg{env};
      if (!msg)
        return msg.error();
      return g(msg.root());
    };
    return add<T>(std::move(guard), std::move(f));
  }

  /// Runs the handler for `env`. For a request, an error becomes an
  /// ErrorReply; for a one-way message it is counted in `counters` and
  /// dropped. Never throws.
  caf::result<envelope> dispatch(caf::local_actor* self, const envelope& env,
                                 host_counters* counters) const;

  const std::string& role() const {
    return role_;
  }

private:
  struct entry {
    std::string name;
    const access_row* row;
    guard_fn guard;
    handler fn;
  };

  const access_row& row_of(const std::string& name) const;

  template <class T, class F>
  message_table& add(guard_fn guard, F f) {
    std::string name = capnp::Schema::from<T>().getShortDisplayName().cStr();
    const access_row& row = row_of(name);
    entries_[capnp::typeId<T>()] = entry{
      name, &row, std::move(guard), [f = std::move(f)](const envelope& env) -> caf::result<envelope> {
        opened<T> msg{env};
        if (!msg)
          return msg.error();
        if constexpr (std::is_invocable_v<F&, const envelope&, typename T::Reader>)
          return f(env, msg.root());
        else
          return f(msg.root());
      }};
    return *this;
  }

  std::string role_;
  std::span<const access_row> rows_;
  std::map<uint64_t, entry> entries_;
};

/// Counts and drops (or answers with an error) anything that is not an
/// envelope. Install with `self->set_default_handler(...)`.
caf::result<caf::message> drop_unexpected(caf::scheduled_actor* self, caf::message_view& x,
                                          host_counters* counters);

/// From inside an event-based actor: looks `name` up in `directory` ("role"
/// or "role@node"), sends it `req` and calls `done(caf::expected<envelope>)`
/// once with the answer, an ErrorReply as its error, or the lookup or
/// timeout error. Never blocks.
template <class Self, class Done>
void ask_role(Self* self, const caf::actor& directory, const std::string& name, envelope req,
              std::chrono::milliseconds timeout, Done done) {
  self->request(directory, timeout, lookup_atom::value, name)
    .then(
      [self, req = std::move(req), timeout, done](caf::actor& dst) mutable {
        self->request(dst, timeout, std::move(req))
          .then(
            [done](envelope& reply) mutable {
              if (auto err = error_of_reply(reply))
                done(caf::expected<envelope>{std::move(err)});
              else
                done(caf::expected<envelope>{std::move(reply)});
            },
            [done](caf::error& err) mutable { done(caf::expected<envelope>{std::move(err)}); });
      },
      [done](caf::error& err) mutable { done(caf::expected<envelope>{std::move(err)}); });
}

/// Requests a role answers later than [limits] request_timeout_ms (a run
/// of training steps, a join that loads its data): a host's gatekeeper
/// relays a request of `type_id` with this deadline instead. Zero: none,
/// the role answers each such request itself, also when it stops. Roles
/// register theirs when spawned; the same on every host of a build.
void register_answer_deadline(uint64_t type_id, std::chrono::milliseconds deadline);
/// The registered deadline of `type_id`, or `fallback`.
std::chrono::milliseconds answer_deadline(uint64_t type_id, std::chrono::milliseconds fallback);

} // namespace aicon
