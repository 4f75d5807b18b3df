// Actors that peers can address are guarded at their mailbox.
//
// With CAF 0.17 every local actor that ever sent a message to a peer is in
// the actor registry, and an admitted peer can address it by its (small,
// sequential) id and even claim a local sender. System messages are handled
// before any behaviour: an exit_msg with reason `kill` always stops the
// actor, a bare `error` message stops it through the default error handler.
// So the few actors whose handles reach peers (the gatekeeper, the link
// actors of remote roles, the hello helper) override `enqueue` and drop,
// before CAF sees them, every message that is not on their short list.
// Results from local helpers travel in message types that are not
// registered with CAF: BASP cannot deserialize them, so no peer can forge
// them.
#pragma once

#include <atomic>
#include <memory>

#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>

#include "runtime/system.hpp"

namespace aicon {

/// What a guarded actor lets into its mailbox.
enum class admission { admit, drop };

/// An event-based actor whose mailbox runs `admit` on every message first.
/// Exit messages pass only once the host is stopping.
class guarded_actor : public caf::event_based_actor {
public:
  guarded_actor(caf::actor_config& cfg, const role_context& ctx)
    : caf::event_based_actor(cfg), ctx_(ctx) {
  }

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* eu) override {
    if (what && admit(*what) == admission::admit) {
      caf::event_based_actor::enqueue(std::move(what), eu);
      return;
    }
    if (ctx_.counters)
      ++ctx_.counters->malformed_dropped;
  }

protected:
  /// The per-actor list; the default admits exit messages while stopping.
  virtual admission admit(const caf::mailbox_element& x) {
    return is_exit_while_stopping(x) ? admission::admit : admission::drop;
  }

  bool is_exit_while_stopping(const caf::mailbox_element& x) const {
    return ctx_.stopping && ctx_.stopping->load()
           && x.content().match_elements<caf::exit_msg>();
  }

  role_context ctx_;
};

} // namespace aicon
