#include "runtime/role.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/log.hpp"

#include <mutex>
#include <shared_mutex>

namespace aicon {

const access_row& message_table::row_of(const std::string& name) const {
  for (auto& r : rows_)
    if (r.message == name)
      return r;
  throw std::logic_error(fmt::format("role '{}' handles {} but its access table has no row for it "
                                     "(declare who may send it beside the role)",
                                     role_, name));
}

std::string access_table_markdown(std::span<const role_access> roles) {
  std::string out = "| role | message | who may send it | what proves it | otherwise |\n"
                    "|---|---|---|---|---|\n";
  for (auto& r : roles)
    for (auto& row : r.rows)
      out += fmt::format("| {} | {} | {} | {} | {} |\n", r.role, row.message, row.who, row.proof,
                         row.otherwise);
  return out;
}

caf::result<envelope> message_table::dispatch(caf::local_actor* self, const envelope& env,
                                              host_counters* counters) const {
  bool is_request = self->current_message_id().is_request();
  caf::error err = oversize_error(env);
  auto i = entries_.find(env.type_id);
  if (err) {
    // answered below as message_too_large
  } else if (i == entries_.end()) {
    std::string takes;
    for (auto& [id, e] : entries_)
      takes += takes.empty() ? e.name : ", " + e.name;
    err = make_error(errc::unexpected_type,
                     fmt::format("role '{}' takes {}; got {}", role_, takes,
                                 detail::type_name_of(env.type_id)));
  } else {
    try {
      if (i->second.guard)
        if (auto refused = i->second.guard(env)) {
          // A refusal of the sender names the row; anything else (no such
          // session, a malformed field) is answered as it is.
          auto c = code_of(refused);
          err = c != errc::forbidden && c != errc::bad_signature
                  ? std::move(refused)
                  : make_error(c, fmt::format("{}: {} may be sent only by {}: {}", role_,
                                              i->second.name, i->second.row->who,
                                              what_of(refused)));
        }
      if (err)
        ; // refused by the row's guard: the handler never sees it
      else if (auto res = i->second.fn(env); res.flag != caf::rt_error) {
        if (!is_request && res.flag == caf::rt_value)
          return caf::delegated<envelope>{}; // a one-way message gets no answer
        return res;
      } else {
        err = std::move(res.err);
      }
    } catch (const kj::Exception& e) {
      err = make_error(errc::malformed_message,
                       fmt::format("{}: {}", i->second.name, e.getDescription().cStr()));
    }
  }
  auto code = code_of(err);
  if (code == errc::malformed_message || code == errc::unexpected_type
      || code == errc::message_too_large) {
    if (counters)
      ++counters->malformed_dropped;
    log_debug("{}: dropped bad message: {}", role_, describe(err));
  }
  if (!is_request)
    return caf::delegated<envelope>{};
  return make_error_reply(err);
}

caf::result<caf::message> drop_unexpected(caf::scheduled_actor* self, caf::message_view& x,
                                          host_counters* counters) {
  if (counters)
    ++counters->malformed_dropped;
  log_debug("dropped unexpected message: {}", caf::to_string(x.content()));
  if (self->current_message_id().is_request())
    return caf::sec::unexpected_message;
  return caf::delegated<caf::message>{};
}

namespace {

std::shared_mutex deadlines_mutex;
std::map<uint64_t, std::chrono::milliseconds> deadlines;

} // namespace

void register_answer_deadline(uint64_t type_id, std::chrono::milliseconds deadline) {
  std::unique_lock lock{deadlines_mutex};
  deadlines[type_id] = deadline;
}

std::chrono::milliseconds answer_deadline(uint64_t type_id, std::chrono::milliseconds fallback) {
  std::shared_lock lock{deadlines_mutex};
  auto i = deadlines.find(type_id);
  return i == deadlines.end() ? fallback : i->second;
}

} // namespace aicon
