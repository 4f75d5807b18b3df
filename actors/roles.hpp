// The table of roles this binary can run: the plug point between the runtime
// (mechanism) and actors/ (policy). "directory" is built into every host.
#pragma once

#include <map>
#include <set>
#include <string>

#include "runtime/access.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// Role name -> factory, for every role in actors/.
const std::map<std::string, role_factory>& role_table();

/// Names a host.toml may list in host.roles.
std::set<std::string> known_roles();

/// Every role's authorization rows, in the order of the README's table
/// ("Who may send what"); `aicon authz` prints them.
std::span<const role_access> access_table();

} // namespace aicon
