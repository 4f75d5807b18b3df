// Checkpoints (TrainerJoin.checkpoint, checkpoint files): parsed from bytes
// and refused by name when anything is off.
#include "actors/trainer/model.hpp"
#include "fuzz/fuzz.hpp"

using namespace aicon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void) train::parse_checkpoint({data, size}, "fuzz checkpoint");
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  std::vector<std::string> out;
  for (auto* spec : {"softmax:4-3", "mlp:4-5-3"}) {
    auto s = train::parse_spec(spec);
    if (!s)
      continue;
    auto m = train::model::init(*s, 1);
    train::checkpoint c{*s, {m.params().begin(), m.params().end()}, {}, 3, 1, 2, 9};
    auto bytes = train::checkpoint_bytes(c);
    out.emplace_back(bytes.begin(), bytes.end());
  }
  return out;
}
