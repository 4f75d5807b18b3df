// `aicon model check FILE.pt`: whether a TorchScript file meets aicon's
// model contract (actors/trainer/torch_model.hpp), and what it is;
// `aicon model export --model torch:FILE --checkpoint CKPT --out OUT.pt`:
// trained weights from an aicon checkpoint saved back as TorchScript, for
// torch.jit.load.
#pragma once

#include <string>

namespace aicon {

struct model_cmd_options {
  std::string file;        ///< check: the TorchScript file
  std::string model;       ///< export: torch:FILE
  std::string checkpoint;  ///< export: an aicon checkpoint of that model
  std::string out;         ///< export: where the TorchScript file goes
};

int model_check_cmd(const model_cmd_options& o);
int model_export_cmd(const model_cmd_options& o);

} // namespace aicon
