#include "runtime/gatekeeper.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

struct gatekeeper_state {
  role_context ctx;
  std::map<std::string, caf::actor> roles;
  static inline const char* name = "aicon.gatekeeper";
};

caf::behavior gatekeeper(caf::stateful_actor<gatekeeper_state>* self, role_context ctx,
                         std::map<std::string, caf::actor> roles) {
  self->state.ctx = std::move(ctx);
  self->state.roles = std::move(roles);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  return {
    [self](route_atom, const std::string& role, const envelope& env) -> caf::result<envelope> {
      auto& st = self->state;
      bool is_request = self->current_message_id().is_request();
      auto i = st.roles.find(role);
      if (i == st.roles.end()) {
        ++st.ctx.counters->malformed_dropped;
        if (!is_request)
          return caf::delegated<envelope>{};
        std::string list;
        for (auto& [name, _] : st.roles)
          list += list.empty() ? name : ", " + name;
        return make_error_reply(make_error(
          errc::unknown_role, fmt::format("host {} runs no role '{}' (it runs: {})",
                                          st.ctx.self->id().short_hex(), role, list)));
      }
      if (!is_request) {
        caf::anon_send(i->second, env);
        return caf::delegated<envelope>{};
      }
      ++st.ctx.counters->requests_served;
      auto rp = self->make_response_promise<envelope>();
      self->request(i->second, std::chrono::milliseconds(st.ctx.lim.request_timeout_ms), env)
        .then([rp](envelope& reply) mutable { rp.deliver(std::move(reply)); },
              [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
  };
}

} // namespace

caf::actor spawn_gatekeeper(caf::actor_system& sys, const role_context& ctx,
                            std::map<std::string, caf::actor> roles) {
  return sys.spawn(gatekeeper, ctx, std::move(roles));
}

} // namespace aicon
