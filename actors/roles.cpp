#include "actors/roles.hpp"

#include "actors/echo/echo.hpp"

namespace aicon {

const std::map<std::string, role_factory>& role_table() {
  static const std::map<std::string, role_factory> table{
    {"echo", spawn_echo},
  };
  return table;
}

std::set<std::string> known_roles() {
  std::set<std::string> names{"directory"};
  for (auto& [name, _] : role_table())
    names.insert(name);
  return names;
}

} // namespace aicon
