// `aicon data put|ls|preview|verify` on a local store (--data-dir). The
// --connect variants (against a running data node) come with the data_node
// role.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace aicon {

struct data_cmd_options {
  std::string data_dir;
  std::string file;
  std::string labels;         ///< second file (NPY/IDX labels)
  std::string name;
  std::optional<std::string> label_col; ///< default: last column (CSV), none (NPY)
  uint64_t skip_rows = 0;
  std::string delimiter = ",";
  bool standardize = false;
  bool minmax = false;
  uint64_t price = 0;
  uint64_t shard_bytes = 1 << 20;
  uint32_t preview_rows = 5;
  std::string id;             ///< preview/verify
};

int data_put(const data_cmd_options& o);
int data_ls(const data_cmd_options& o);
int data_preview(const data_cmd_options& o);
int data_verify(const data_cmd_options& o);

} // namespace aicon
