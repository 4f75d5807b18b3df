// `aicon host`: one actor host process.
#pragma once

#include <map>
#include <string>

#include "runtime/config.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// Runs a host until SIGINT or SIGTERM. Returns the process exit code: 0 after
/// a clean stop, 2 when it cannot start (the reason is logged).
/// Must be called from the main thread before any other thread exists (it
/// blocks the two signals for every thread it starts).
int run_host(const host_config& cfg, const std::map<std::string, role_factory>& roles);

} // namespace aicon
