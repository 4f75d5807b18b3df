// Fuzz targets: each file defines LLVMFuzzerTestOneInput for one decoder that
// takes bytes from outside, and aicon_fuzz_seeds() with well-formed inputs
// to start from. Built two ways (fuzz/CMakeLists.txt): with clang's
// libFuzzer (scripts/fuzz.sh), and in the ordinary build with replay_main.cpp,
// a bounded mutational loop that ctest runs for a few seconds per target.
// A target must never crash, hang or leak on any input: bad input is an
// error value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/// Well-formed inputs of this target (written to fuzz/corpus/<target>).
std::vector<std::string> aicon_fuzz_seeds();
