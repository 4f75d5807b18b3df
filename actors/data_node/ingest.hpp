// Ingest: CSV, NPY and IDX files into one float32 feature matrix plus
// integer class labels. The network moves these numbers, never raw files.
//
// Every reader checks its input completely before it returns: a ragged row,
// text in a numeric column, NaN or inf, an empty file, an over-long line, a
// missing label column, a truncated or unsupported NPY, a bad IDX magic or
// size is an error whose text names the file and the 1-based line and column
// (text formats) or the byte offset (binary formats). Nothing is returned
// half-read. Files ending in .gz are decompressed on the fly (zlib).
#pragma once

#include <bit>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

namespace aicon::data {

/// A dataset in memory: rows x features float32, row-major, and one label
/// per row (class ids 0..classes-1) when the source has labels.
struct table {
  uint64_t rows = 0;
  uint64_t features = 0;
  std::vector<float> x;                  ///< rows * features
  std::vector<int32_t> y;                ///< rows, or empty (no labels)
  uint32_t classes = 0;                  ///< max label + 1 (0 without labels)
  std::vector<std::string> class_names;  ///< text labels in id order (empty if numeric)
  std::vector<std::string> feature_names; ///< from a CSV header (empty otherwise)
  /// Regression targets (csv_options::targets): y holds each row's float32
  /// target as its bits (std::bit_cast), not a class id; classes is 0.
  bool regression = false;
};

/// A regression table's target of row `i`.
inline float target_of(const table& t, size_t i) {
  return std::bit_cast<float>(t.y[i]);
}

struct ingest_limits {
  /// Longest CSV line accepted: far above any real row (digits: ~200 B),
  /// small enough that one line cannot make the reader allocate much.
  uint64_t line_bytes_max = 1 << 20;
  /// Largest input (after decompression). 4 GiB bounds what one put may
  /// make a data node hold in memory.
  uint64_t file_bytes_max = 4ull << 30;
};

struct csv_options {
  char delimiter = ',';
  /// true/false: the first row (after skip_rows) is / is not a header;
  /// nullopt: a header if any of its fields is not a number.
  std::optional<bool> header;
  /// Label column: an index ("0", "3", "-1" = last) or a header name;
  /// empty = no labels.
  std::string label_col = "-1";
  /// Lines skipped before the header or data (e.g. a metadata line).
  uint64_t skip_rows = 0;
  /// The label column is a regression target (a finite float32 per row,
  /// for a model with one output column), not a class.
  bool targets = false;
  ingest_limits lim;
};

caf::expected<table> read_csv(const std::filesystem::path& file, const csv_options& opts);

/// NPY (format 1.0/2.0/3.0, little-endian or single-byte dtypes f4 f8 i4 i8
/// u1, C order). A 2-D (or N-D, flattened per row) array is the features;
/// `labels` (optional) a 1-D integer NPY with one label per row; or
/// `label_col` (an index, -1 = last) takes labels out of a 2-D array.
caf::expected<table> read_npy(const std::filesystem::path& features,
                              const std::optional<std::filesystem::path>& labels,
                              const std::string& label_col = "", const ingest_limits& lim = {});

/// IDX (the MNIST format): an images file (n x d1 x ...) and a labels file
/// (n), both with any IDX element type.
caf::expected<table> read_idx(const std::filesystem::path& images,
                              const std::optional<std::filesystem::path>& labels,
                              const ingest_limits& lim = {});

/// Picks the reader by extension (.csv, .npy, .idx, *-ubyte, with or without
/// .gz); `labels` is the second file for NPY and IDX. `label_col`, when
/// given, overrides csv.label_col and names a label column of an NPY (which
/// has none by default).
caf::expected<table> read_any(const std::filesystem::path& file,
                              const std::optional<std::filesystem::path>& labels,
                              const csv_options& csv,
                              const std::optional<std::string>& label_col = std::nullopt);

/// A per-feature affine transform x' = (x - shift) / scale, recorded in the
/// manifest so trainers apply the same one to new data.
struct transform {
  enum class kind : uint8_t { none, standardize, minmax };
  kind what = kind::none;
  std::vector<float> shift, scale; ///< features each (empty for none)
};

/// Fits `what` on `t` (mean/std or min/range; a constant feature gets
/// scale 1) and applies it in place.
transform fit_and_apply(table& t, transform::kind what);

const char* to_string(transform::kind k);

} // namespace aicon::data
