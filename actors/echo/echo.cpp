#include "actors/echo/echo.hpp"

#include <map>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/role.hpp"
#include "schemas/echo.capnp.h"

namespace aicon {

namespace {

struct echo_state {
  role_context ctx;
  std::unique_ptr<message_table> table;
  uint64_t next_delayed = 0;
  std::map<uint64_t, std::pair<caf::typed_response_promise<envelope>, envelope>> delayed;
  static inline const char* name = "aicon.echo";

  envelope answer(schema::EchoRequest::Reader req) const {
    return make_echo_response(req, &ctx.self->id());
  }
};

using self_ptr = caf::stateful_actor<echo_state>*;

caf::result<envelope> forward(self_ptr self, schema::EchoRequest::Reader req) {
  std::string target = req.getForwardTo().cStr();
  auto copy = make_envelope<schema::EchoRequest>(
    [&](schema::EchoRequest::Builder b, envelope_builder& eb) {
      b.setSeq(req.getSeq());
      b.adoptPayload(eb.orphanage().referenceExternalData(req.getPayload()));
      b.setDelayMs(req.getDelayMs());
    });
  auto rp = self->make_response_promise<envelope>();
  auto timeout = std::chrono::milliseconds(self->state.ctx.lim.request_timeout_ms);
  self->request(self->state.ctx.directory, timeout, lookup_atom::value, target)
    .then(
      [self, rp, timeout, copy = std::move(copy)](caf::actor& dst) mutable {
        self->request(dst, timeout, std::move(copy))
          .then([rp](envelope& reply) mutable { rp.deliver(std::move(reply)); },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      },
      [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::behavior echo(self_ptr self, role_context ctx) {
  self->state.ctx = std::move(ctx);
  self->state.table = std::make_unique<message_table>("echo", echo_access);
  self->state.table->on<schema::EchoRequest>(
    [self](schema::EchoRequest::Reader req) -> caf::result<envelope> {
      auto& st = self->state;
      if (req.getDelayMs() > st.ctx.lim.echo_delay_ms_max)
        return make_error(errc::invalid_argument,
                          fmt::format("EchoRequest.delayMs {} exceeds echo_delay_ms_max {}",
                                      req.getDelayMs(), st.ctx.lim.echo_delay_ms_max));
      if (req.hasForwardTo() && req.getForwardTo().size() > 0)
        return forward(self, req);
      if (req.getDelayMs() > 0) {
        // Each delayed answer holds its payload until due: bound them.
        if (st.delayed.size() >= st.ctx.lim.echo_delayed_max)
          return make_error(errc::invalid_argument,
                            fmt::format("{} delayed echo answers are already pending "
                                        "(echo_delayed_max)",
                                        st.delayed.size()));
        auto rp = self->make_response_promise<envelope>();
        auto id = st.next_delayed++;
        st.delayed.emplace(id, std::make_pair(rp, st.answer(req)));
        self->delayed_send(self, std::chrono::milliseconds(req.getDelayMs()),
                           deliver_atom::value, id);
        return rp;
      }
      return st.answer(req);
    });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](deliver_atom, uint64_t id) {
      auto i = self->state.delayed.find(id);
      if (i == self->state.delayed.end())
        return;
      i->second.first.deliver(std::move(i->second.second));
      self->state.delayed.erase(i);
    },
  };
}

} // namespace

envelope make_echo_response(schema::EchoRequest::Reader req, const node_id* answered_by) {
  return make_envelope<schema::EchoResponse>(
    [&](schema::EchoResponse::Builder b, envelope_builder& eb) {
      b.setSeq(req.getSeq());
      auto payload = req.getPayload();
      if (payload.size() > 1024)
        b.adoptPayload(eb.orphanage().referenceExternalData(payload));
      else
        b.setPayload(payload);
      if (answered_by)
        b.setNode(kj::arrayPtr(answered_by->bytes.data(), answered_by->bytes.size()));
    });
}

caf::actor spawn_echo(caf::actor_system& sys, const role_context& ctx) {
  return sys.spawn(echo, ctx);
}

} // namespace aicon
