#include "actors/roles.hpp"

#include "actors/allocator/allocator.hpp"
#include "actors/block_generator/block_generator.hpp"
#include "actors/data_node/data_node.hpp"
#include "actors/echo/echo.hpp"
#include "actors/job/job_role.hpp"
#include "actors/ledger/ledger.hpp"
#include "actors/rater/rater.hpp"
#include "actors/script/script.hpp"
#include "actors/trainer/trainer.hpp"
#include "runtime/directory.hpp"

namespace aicon {

const std::map<std::string, role_factory>& role_table() {
  static const std::map<std::string, role_factory> table{
    {"echo", [](caf::actor_system& sys, const role_context& ctx) -> caf::expected<caf::actor> {
       return spawn_echo(sys, ctx);
     }},
    {"ledger", spawn_ledger},
    {"block_generator", spawn_block_generator},
    {"data_node", spawn_data_node},
    {"trainer", spawn_trainer},
    {"allocator", spawn_allocator},
    {"rater", spawn_rater},
    {"script", spawn_script},
    {"job", spawn_job_role},
  };
  return table;
}

std::set<std::string> known_roles() {
  std::set<std::string> names{"directory"};
  for (auto& [name, _] : role_table())
    names.insert(name);
  return names;
}

std::span<const role_access> access_table() {
  static const role_access roles[] = {
    {"directory", directory_access},       {"echo", echo_access},
    {"ledger", ledger_access},             {"block_generator", block_generator_access},
    {"allocator", allocator_access},       {"trainer", trainer_access},
    {"rater", rater_access},               {"data_node", data_node_access},
    {"script", script_access},             {"job", job_access},
  };
  return roles;
}

} // namespace aicon
