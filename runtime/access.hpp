// Who may send what: every role declares, beside its code, one row per
// message type it accepts (who may send it, what proves it, what the role
// answers otherwise). message_table::on refuses to register a handler for a
// type without a row, runs the row's guard (if any) before the handler and
// words every refusal the same way; `aicon authz` prints all the rows and a
// unit test checks the README's table against them. Every role's rows are
// listed by aicon::access_table() (actors/roles.hpp).
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace aicon {

/// One row of a role's authorization table.
struct access_row {
  std::string_view message;   ///< the schema type's short name ("TrainQuery")
  std::string_view who;       ///< who may send it
  std::string_view proof;     ///< what proves it (signature, token, chain record)
  std::string_view otherwise; ///< what the role answers to anyone else
};

/// A role's rows, as `aicon authz` lists them.
struct role_access {
  std::string_view role;
  std::span<const access_row> rows;
};

/// `roles`' rows as the README's Markdown table ("Who may send what"):
/// one line per message, `|`-separated.
std::string access_table_markdown(std::span<const role_access> roles);

} // namespace aicon
