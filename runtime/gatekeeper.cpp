#include "runtime/gatekeeper.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/guard.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

/// A role's answer, handed from a relay helper to the gatekeeper. Not
/// registered with CAF: it can only come from inside this process.
struct relay_result {
  uint64_t id = 0;
  envelope answer; ///< valid when `err` is none
  caf::error err;
};

/// CAF wants every message type inspectable; being unregistered, this one
/// still cannot be deserialized from the wire.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, relay_result& x) {
  return f(caf::meta::type_name("aicon::relay_result"), x.id, x.answer, x.err);
}

/// One request to one local role. Never exported: it talks only to the
/// role (which is never exported either) and to the gatekeeper.
caf::behavior relay(caf::event_based_actor* self, caf::actor gatekeeper, caf::actor role,
                    envelope env, uint64_t id, std::chrono::milliseconds timeout) {
  auto deadline = timeout.count() == 0 ? caf::duration{caf::infinite} : caf::duration{timeout};
  self->request(role, deadline, std::move(env))
    .then(
      [self, gatekeeper, id](envelope& reply) {
        self->send(gatekeeper, relay_result{id, std::move(reply), caf::error{}});
        self->quit();
      },
      [self, gatekeeper, id](caf::error& err) {
        self->send(gatekeeper, relay_result{id, envelope{}, std::move(err)});
        self->quit();
      });
  return {[](int) {}}; // takes nothing else
}

class gatekeeper_actor : public guarded_actor {
public:
  gatekeeper_actor(caf::actor_config& cfg, const role_context& ctx,
                   std::map<std::string, caf::actor> roles)
    : guarded_actor(cfg, ctx), roles_(std::move(roles)) {
  }

  const char* name() const override {
    return "aicon.gatekeeper";
  }

protected:
  admission admit(const caf::mailbox_element& x) override {
    // From anyone: (route, role, envelope), never as a response (the
    // gatekeeper asks nobody anything, so a response can only be forged).
    if (!x.mid.is_response()
        && x.content().match_elements<route_atom, std::string, envelope>())
      return admission::admit;
    if (x.content().match_elements<relay_result>())
      return admission::admit;
    return guarded_actor::admit(x);
  }

  caf::behavior make_behavior() override {
    return {
      [this](route_atom, const std::string& role, const envelope& env)
        -> caf::result<envelope> {
        bool is_request = current_message_id().is_request();
        auto i = roles_.find(role);
        if (i == roles_.end()) {
          ++ctx_.counters->malformed_dropped;
          if (!is_request)
            return caf::delegated<envelope>{};
          std::string list;
          for (auto& [name, _] : roles_)
            list += list.empty() ? name : ", " + name;
          return make_error_reply(make_error(
            errc::unknown_role, fmt::format("host {} runs no role '{}' (it runs: {})",
                                            ctx_.self->id().short_hex(), role, list)));
        }
        if (!is_request) {
          caf::anon_send(i->second, env);
          return caf::delegated<envelope>{};
        }
        ++ctx_.counters->requests_served;
        auto id = next_id_++;
        pending_.emplace(id, make_response_promise<envelope>());
        spawn(relay, caf::actor{this}, i->second, env, id,
              answer_deadline(env.type_id, std::chrono::milliseconds{ctx_.lim.request_timeout_ms}));
        return pending_.at(id);
      },
      [this](relay_result& r) {
        auto i = pending_.find(r.id);
        if (i == pending_.end())
          return;
        if (r.err)
          i->second.deliver(std::move(r.err));
        else
          i->second.deliver(std::move(r.answer));
        pending_.erase(i);
      },
    };
  }

private:
  std::map<std::string, caf::actor> roles_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, caf::typed_response_promise<envelope>> pending_;
};

} // namespace

caf::actor spawn_gatekeeper(caf::actor_system& sys, const role_context& ctx,
                            std::map<std::string, caf::actor> roles) {
  return sys.spawn<gatekeeper_actor>(ctx, std::move(roles));
}

} // namespace aicon
