// Data set files as a data node or trainer reads them: the first byte picks
// CSV, NPY or IDX (images + labels), the rest is the file. Written to a
// per-process temporary directory and read back through the real readers
// (gzip included: zlib reads plain files as they are).
#include <fstream>

#include "actors/data_node/ingest.hpp"
#include "fuzz/fuzz.hpp"
#include "runtime/temp_dir.hpp"

using namespace aicon;

namespace {

const std::filesystem::path& dir() {
  static auto d = temp_dir::create("aicon-fuzz-ingest");
  return d->path();
}

std::filesystem::path put(const std::string& name, const uint8_t* data, size_t size) {
  auto path = dir() / name;
  std::ofstream{path, std::ios::binary | std::ios::trunc}
    .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

std::string npy(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape
                       + ", }";
  while ((10 + header.size() + 1) % 64 != 0)
    header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  data::ingest_limits lim;
  lim.file_bytes_max = 1u << 20;
  switch (data[0] % 4) {
    case 0: {
      data::csv_options o;
      o.lim = lim;
      (void) data::read_csv(put("f.csv", data + 1, size - 1), o);
      break;
    }
    case 1:
      (void) data::read_npy(put("f.npy", data + 1, size - 1), std::nullopt, "-1", lim);
      break;
    case 2: {
      // images and labels from one input: split at its middle
      auto half = (size - 1) / 2;
      auto images = put("images.idx", data + 1, half);
      auto labels = put("labels.idx", data + 1 + half, size - 1 - half);
      (void) data::read_idx(images, labels, lim);
      break;
    }
    default: {
      data::csv_options o;
      o.lim = lim;
      o.header = true;
      o.skip_rows = 1;
      (void) data::read_csv(put("g.csv", data + 1, size - 1), o);
      break;
    }
  }
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  float f[] = {1.5f, -2.0f, 0.25f, 3.0f};
  return {
    std::string(1, '\0') + "1,2,3,0\n4,5,6,1\n7,8,9,2\n",
    std::string(1, '\0') + "0.5;1e3;-2;\"x\"\n",
    std::string(1, '\x01') + npy("<f4", "(2, 2)", std::string(reinterpret_cast<char*>(f), 16)),
    std::string(1, '\x02') + std::string("\0\0\x08\x02\0\0\0\x02\0\0\0\x02\x01\x02\x03\x04", 16)
      + std::string("\0\0\x08\x01\0\0\0\x02\x00\x01", 10),
    std::string(1, '\x03') + "# a metadata line\na,b,label\n1,2,0\n3,4,1\n",
  };
}
