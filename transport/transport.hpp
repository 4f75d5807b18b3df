// The ring transports by name: the one place that maps the words users
// type (CLI flags, Lua, benchmarks) to the schema's Transport enum.
#pragma once

#include <optional>
#include <string_view>

#include "schemas/trainer.capnp.h"

namespace aicon::train {

using transport = schema::Transport;

/// "stream", "stream-plain", "actor", "nccl"; nullopt for anything else.
inline std::optional<transport> parse_transport(std::string_view name) {
  if (name == "stream")
    return transport::STREAM;
  if (name == "stream-plain")
    return transport::STREAM_PLAIN;
  if (name == "actor")
    return transport::ACTOR;
  if (name == "nccl")
    return transport::NCCL;
  return std::nullopt;
}

inline const char* transport_name(transport t) {
  switch (t) {
    case transport::STREAM: return "stream";
    case transport::STREAM_PLAIN: return "stream-plain";
    case transport::ACTOR: return "actor";
    case transport::NCCL: return "nccl";
  }
  return "unknown";
}

/// For error messages: the names parse_transport takes.
inline constexpr const char* transport_names = "stream, stream-plain, actor or nccl";

} // namespace aicon::train
