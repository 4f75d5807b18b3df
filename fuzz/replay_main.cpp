// The ordinary build's driver of a fuzz target (libFuzzer needs clang): runs
// the built-in seeds and every file of the corpus directories, then mutates
// them (bit flips, byte changes, inserts, deletes, splices, truncations) for
// a bounded time with a fixed seed, printing executions and the input that
// crashes if one does (written to crash-<target>-<n> for a regression test).
//
//   fuzz_<target> [--seconds S] [--seed N] [--write-seeds DIR] [CORPUS_DIR...]
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fuzz.hpp"

namespace {

std::string current; ///< the input being run, saved if it crashes

void on_crash(int sig) {
  std::FILE* f = std::fopen("crash-input", "wb");
  if (f) {
    std::fwrite(current.data(), 1, current.size(), f);
    std::fclose(f);
  }
  std::fprintf(stderr, "fuzz: signal %d on an input of %zu bytes (saved as crash-input)\n", sig,
               current.size());
  std::_Exit(1);
}

void run(const std::string& input) {
  current = input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

std::string mutate(std::mt19937_64& rng, const std::vector<std::string>& pool) {
  std::string s = pool[rng() % pool.size()];
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    size_t n = s.size();
    switch (rng() % 7) {
      case 0: // flip a bit
        if (n)
          s[rng() % n] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1: // an interesting byte
        if (n) {
          static const char interesting[] = {0, 1, 0x7f, static_cast<char>(0x80),
                                             static_cast<char>(0xff), '\n', ',', '"', '[',
                                             '=', '%', '*'};
          s[rng() % n] = interesting[rng() % sizeof(interesting)];
        }
        break;
      case 2: // insert bytes
        s.insert(n ? rng() % n : 0, std::string(1 + rng() % 16, static_cast<char>(rng())));
        break;
      case 3: // delete a run
        if (n) {
          auto at = rng() % n;
          s.erase(at, 1 + rng() % std::min<size_t>(n - at, 32));
        }
        break;
      case 4: // truncate
        if (n)
          s.resize(rng() % n);
        break;
      case 5: { // splice with another input
        auto& other = pool[rng() % pool.size()];
        if (!other.empty()) {
          auto from = rng() % other.size();
          s.insert(n ? rng() % n : 0, other.substr(from, 1 + rng() % 64));
        }
        break;
      }
      default: // overwrite a 64-bit word (lengths, counts, pointers)
        if (n >= 8) {
          uint64_t v = rng() % 3 == 0 ? ~uint64_t{0} : (uint64_t{1} << (rng() % 64));
          std::memcpy(s.data() + rng() % (n - 7), &v, 8);
        }
        break;
    }
  }
  if (s.size() > (1u << 20))
    s.resize(1u << 20);
  return s;
}

} // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  uint64_t seed = 20261204;
  std::vector<std::string> pool = aicon_fuzz_seeds();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc)
      seconds = std::atof(argv[++i]);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--write-seeds" && i + 1 < argc) {
      std::filesystem::path dir = argv[++i];
      std::filesystem::create_directories(dir);
      auto seeds = aicon_fuzz_seeds();
      for (size_t k = 0; k < seeds.size(); ++k)
        std::ofstream{dir / ("seed-" + std::to_string(k)), std::ios::binary} << seeds[k];
      std::printf("wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
      return 0;
    } else if (std::filesystem::is_directory(a)) {
      for (auto& e : std::filesystem::directory_iterator(a)) {
        std::ifstream in{e.path(), std::ios::binary};
        pool.emplace_back(std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{});
      }
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--seed N] [--write-seeds DIR] [CORPUS_DIR...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (pool.empty())
    pool.emplace_back();
  std::signal(SIGSEGV, on_crash);
  std::signal(SIGABRT, on_crash);
  std::signal(SIGFPE, on_crash);
  std::signal(SIGBUS, on_crash);
  for (auto& s : pool)
    run(s);
  std::mt19937_64 rng{seed};
  uint64_t execs = pool.size();
  auto t0 = std::chrono::steady_clock::now();
  auto deadline = t0 + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    run(mutate(rng, pool));
    ++execs;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz: %llu executions in %.1f s (%.0f/s) from %zu seeds, seed %llu, no crash\n",
              static_cast<unsigned long long>(execs), s, s > 0 ? execs / s : 0.0, pool.size(),
              static_cast<unsigned long long>(seed));
  return 0;
}
