// Picking a loopback port for a host that is started a moment later (tests,
// benchmarks, the embedded cluster), when its address must be written into
// other hosts' configs before it listens.
#pragma once

#include <cstdint>

namespace aicon {

/// A port on 127.0.0.1 that binds now, chosen at random below Linux's
/// ephemeral range (20000..32767), so that the outgoing connections made
/// meanwhile (whose local ports come from that range) cannot take it before
/// its host listens; never the same one twice in a process. Falls back to a
/// port the OS hands out. 0 if none binds.
uint16_t pick_loopback_port();

} // namespace aicon
