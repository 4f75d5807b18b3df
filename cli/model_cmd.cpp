#include "cli/model_cmd.hpp"

#include <fmt/format.h>

#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "runtime/error.hpp"

namespace aicon {

int model_check_cmd(const model_cmd_options& o) {
  auto m = train::torch_module::load(o.file);
  if (!m) {
    fmt::print(stderr, "aicon model check: {}\n", describe(m.error()));
    return 1;
  }
  auto params = (*m)->trainable_count();
  auto buffers = (*m)->param_count() - params;
  fmt::print("{}: meets the model contract: forward(float32[B, {}]) -> float32[B, {}], {} "
             "parameters{}; {}\n",
             o.file, (*m)->features(), (*m)->classes(), params,
             buffers ? fmt::format(" and {} buffer values (averaged across ranks each step)", buffers)
                     : std::string{},
             (*m)->environment());
  return 0;
}

int model_export_cmd(const model_cmd_options& o) {
  auto spec = train::parse_spec(o.model);
  if (!spec || spec->kind != "torch") {
    fmt::print(stderr, "aicon model export: --model must be torch:FILE{}\n",
               spec ? "" : " (" + describe(spec.error()) + ")");
    return 1;
  }
  if (auto err = train::load_torch(*spec)) {
    fmt::print(stderr, "aicon model export: {}\n", describe(err));
    return 1;
  }
  auto c = train::load_checkpoint(o.checkpoint);
  if (!c) {
    fmt::print(stderr, "aicon model export: {}\n", describe(c.error()));
    return 1;
  }
  bool same = c->spec == *spec;
  if (!same && c->spec.is_asset() && !spec->is_asset()) {
    // A checkpoint of a model asset (a job on torch:<id>, the id bound to
    // its owner): the file given must be a module of the same state.
    same = spec->torch && spec->torch->param_count() == c->params.size();
  }
  if (!same) {
    fmt::print(stderr, "aicon model export: {} is a checkpoint of {}, not of {}\n", o.checkpoint,
               train::to_string(c->spec), o.model);
    return 1;
  }
  if (auto err = spec->torch->save(c->params, o.out)) {
    fmt::print(stderr, "aicon model export: {}\n", describe(err));
    return 1;
  }
  fmt::print("wrote {}: {} at step {} (torch.jit.load reads it)\n", o.out, o.model, c->step);
  return 0;
}

} // namespace aicon
