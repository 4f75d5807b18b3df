#include "actors/data_node/ingest.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>
#include <zlib.h>

#include "runtime/error.hpp"

namespace aicon::data {

namespace {

caf::error bad_input(const std::string& what) {
  return make_error(errc::invalid_argument, what);
}

/// The whole file, gunzipped if it is gzip (zlib reads plain files as is).
caf::expected<std::string> read_file(const std::filesystem::path& file,
                                     const ingest_limits& lim) {
  gzFile f = gzopen(file.c_str(), "rb");
  if (!f)
    return make_error(errc::io_error, fmt::format("{}: cannot open: {}", file.string(),
                                                  std::strerror(errno)));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int code = 0;
      std::string why = gzerror(f, &code);
      gzclose(f);
      if (code == Z_DATA_ERROR || code == Z_BUF_ERROR)
        return bad_input(fmt::format("{}: corrupt or truncated gzip ({})", file.string(), why));
      return make_error(errc::io_error, fmt::format("{}: cannot read: {}", file.string(), why));
    }
    if (n == 0) {
      // End of input. zlib checks a gzip member's trailer (CRC-32 and length)
      // there and reports a stream cut short only now: a .gz truncated at a
      // line end would otherwise read as a shorter, valid data set.
      int code = Z_OK;
      std::string why = gzerror(f, &code);
      if (code != Z_OK && code != Z_STREAM_END) {
        gzclose(f);
        return bad_input(fmt::format("{}: corrupt or truncated gzip ({}): its CRC and length "
                                     "trailer do not check out",
                                     file.string(), why));
      }
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > lim.file_bytes_max) {
      gzclose(f);
      return bad_input(fmt::format("{}: larger than file_bytes_max ({} bytes)", file.string(),
                                   lim.file_bytes_max));
    }
  }
  gzclose(f);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view line, char delim) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    auto pos = line.find(delim, start);
    out.push_back(trim(line.substr(start, pos == std::string_view::npos ? pos : pos - start)));
    if (pos == std::string_view::npos)
      return out;
    start = pos + 1;
  }
}

/// Parses a finite number; nullopt for text, NaN for NaN/inf.
std::optional<double> parse_number(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  if (s.front() == '+')
    s.remove_prefix(1);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

/// Resolves a label column spec against `cols` columns and an optional
/// header; -1 = none requested.
caf::expected<int64_t> label_index(const std::string& spec, uint64_t cols,
                                   const std::vector<std::string>& header,
                                   const std::string& where) {
  if (spec.empty())
    return int64_t{-1};
  int64_t idx = 0;
  auto [p, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), idx);
  if (ec == std::errc{} && p == spec.data() + spec.size()) {
    if (idx < 0)
      idx += static_cast<int64_t>(cols);
    if (idx < 0 || idx >= static_cast<int64_t>(cols))
      return bad_input(fmt::format("{}: label column {} does not exist ({} columns)", where, spec,
                                   cols));
    return idx;
  }
  auto i = std::find(header.begin(), header.end(), spec);
  if (i == header.end())
    return bad_input(fmt::format("{}: no label column named '{}'{}", where, spec,
                                 header.empty() ? " (the file has no header)" : ""));
  return static_cast<int64_t>(i - header.begin());
}

/// Class ids from label values: integers >= 0 are kept; anything else
/// (text, negative, fractional) is mapped to ids in sorted order.
struct label_column {
  std::vector<std::string> text;     ///< as read
  std::vector<std::string> where;    ///< "file:line:col" per row, for errors
};

caf::error assign_labels(table& t, const label_column& labels) {
  bool numeric = true;
  std::vector<int32_t> ids;
  ids.reserve(labels.text.size());
  for (auto& s : labels.text) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v < 0 || v > 1'000'000) {
      numeric = false;
      break;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (numeric) {
    t.y = std::move(ids);
    t.classes = t.y.empty() ? 0 : static_cast<uint32_t>(*std::max_element(t.y.begin(), t.y.end())) + 1;
    return caf::none;
  }
  std::set<std::string> names(labels.text.begin(), labels.text.end());
  for (size_t i = 0; i < labels.text.size(); ++i)
    if (labels.text[i].empty())
      return bad_input(fmt::format("{}: empty label", labels.where[i]));
  std::map<std::string, int32_t> id_of;
  for (auto& n : names) {
    id_of.emplace(n, static_cast<int32_t>(t.class_names.size()));
    t.class_names.push_back(n);
  }
  t.y.clear();
  for (auto& s : labels.text)
    t.y.push_back(id_of.at(s));
  t.classes = static_cast<uint32_t>(t.class_names.size());
  return caf::none;
}

} // namespace

// --- CSV ----------------------------------------------------------------------

caf::expected<table> read_csv(const std::filesystem::path& file, const csv_options& opts) {
  auto text = read_file(file, opts.lim);
  if (!text)
    return text.error();
  auto name = file.string();
  std::string_view rest{*text};
  uint64_t line_no = 0;
  std::optional<uint64_t> cols;
  std::vector<std::string> header;
  bool header_decided = opts.header.has_value();
  bool expect_header = opts.header.value_or(false);
  int64_t label = -1;
  table t;
  label_column labels;
  std::vector<std::string_view> fields;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    auto line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    ++line_no;
    if (line.size() > opts.lim.line_bytes_max)
      return bad_input(fmt::format("{}:{}: line of {} bytes exceeds line_bytes_max ({})", name,
                                   line_no, line.size(), opts.lim.line_bytes_max));
    if (line_no <= opts.skip_rows)
      continue;
    if (trim(line).empty())
      continue; // blank lines (a trailing newline) carry no row
    fields = split(line, opts.delimiter);
    if (!cols) {
      cols = fields.size();
      if (!header_decided)
        expect_header = std::any_of(fields.begin(), fields.end(),
                                    [](auto f) { return !parse_number(f); });
      if (expect_header) {
        for (auto f : fields)
          header.emplace_back(f);
        auto idx = label_index(opts.label_col, *cols, header, fmt::format("{}:{}", name, line_no));
        if (!idx)
          return idx.error();
        label = *idx;
        continue;
      }
      auto idx = label_index(opts.label_col, *cols, header, fmt::format("{}:{}", name, line_no));
      if (!idx)
        return idx.error();
      label = *idx;
    }
    if (fields.size() != *cols)
      return bad_input(fmt::format("{}:{}: {} fields, expected {} like the first row (ragged "
                                   "row)",
                                   name, line_no, fields.size(), *cols));
    for (size_t c = 0; c < fields.size(); ++c) {
      if (static_cast<int64_t>(c) == label) {
        labels.text.emplace_back(fields[c]);
        labels.where.push_back(fmt::format("{}:{}:{}", name, line_no, c + 1));
        continue;
      }
      auto v = parse_number(fields[c]);
      if (!v)
        return bad_input(fmt::format("{}:{}:{}: '{}' is not a number", name, line_no, c + 1,
                                     std::string{fields[c]}.substr(0, 40)));
      if (!std::isfinite(*v) || !std::isfinite(static_cast<float>(*v)))
        return bad_input(fmt::format("{}:{}:{}: {} is not a finite float32", name, line_no,
                                     c + 1, std::string{fields[c]}));
      t.x.push_back(static_cast<float>(*v));
    }
    ++t.rows;
  }
  if (t.rows == 0)
    return bad_input(fmt::format("{}: no data rows (empty file{})", name,
                                 header.empty() ? "" : " or only a header"));
  t.features = *cols - (label >= 0 ? 1 : 0);
  if (t.features == 0)
    return bad_input(fmt::format("{}: no feature columns besides the label", name));
  if (!header.empty())
    for (size_t c = 0; c < header.size(); ++c)
      if (static_cast<int64_t>(c) != label)
        t.feature_names.push_back(header[c]);
  if (label >= 0 && opts.targets) {
    // Regression targets: numbers, kept as float32 bits in y.
    for (size_t i = 0; i < labels.text.size(); ++i) {
      auto v = parse_number(labels.text[i]);
      if (!v)
        return bad_input(fmt::format("{}: target '{}' is not a number", labels.where[i],
                                     labels.text[i].substr(0, 40)));
      if (!std::isfinite(*v) || !std::isfinite(static_cast<float>(*v)))
        return bad_input(fmt::format("{}: target {} is not a finite float32", labels.where[i],
                                     labels.text[i]));
      t.y.push_back(std::bit_cast<int32_t>(static_cast<float>(*v)));
    }
    t.regression = true;
    return t;
  }
  if (label >= 0)
    if (auto err = assign_labels(t, labels))
      return err;
  return t;
}

// --- NPY ----------------------------------------------------------------------

namespace {

struct npy_array {
  std::string descr;
  std::vector<uint64_t> shape;
  std::string bytes; ///< whole file
  size_t data_offset = 0;
  size_t item = 0;
};

caf::expected<npy_array> parse_npy(const std::filesystem::path& file, const ingest_limits& lim) {
  auto name = file.string();
  auto raw = read_file(file, lim);
  if (!raw)
    return raw.error();
  npy_array a;
  a.bytes = std::move(*raw);
  auto& b = a.bytes;
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0)
    return bad_input(fmt::format("{}: byte 0: not an NPY file (no \\x93NUMPY magic)", name));
  auto major = static_cast<uint8_t>(b[6]);
  size_t header_len = 0, header_at = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(b[8]) | static_cast<size_t>(static_cast<uint8_t>(b[9])) << 8;
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12)
      return bad_input(fmt::format("{}: byte {}: truncated NPY header", name, b.size()));
    for (int i = 3; i >= 0; --i)
      header_len = header_len << 8 | static_cast<uint8_t>(b[8 + static_cast<size_t>(i)]);
    header_at = 12;
  } else {
    return bad_input(fmt::format("{}: byte 6: unsupported NPY version {}", name, major));
  }
  if (header_at + header_len > b.size())
    return bad_input(fmt::format("{}: byte {}: truncated NPY header ({} bytes announced)", name,
                                 b.size(), header_len));
  std::string_view h{b.data() + header_at, header_len};
  auto value_of = [&](std::string_view key) -> std::optional<std::string_view> {
    auto k = h.find(key);
    if (k == std::string_view::npos)
      return std::nullopt;
    auto colon = h.find(':', k);
    if (colon == std::string_view::npos)
      return std::nullopt;
    return trim(h.substr(colon + 1));
  };
  auto descr = value_of("'descr'");
  auto fortran = value_of("'fortran_order'");
  auto shape = value_of("'shape'");
  if (!descr || !fortran || !shape)
    return bad_input(fmt::format("{}: byte {}: NPY header lacks descr, fortran_order or shape",
                                 name, header_at));
  if (descr->size() < 2 || ((*descr)[0] != '\'' && (*descr)[0] != '"'))
    return bad_input(fmt::format("{}: byte {}: NPY descr is not a string", name, header_at));
  a.descr = std::string{descr->substr(1, descr->find_first_of("'\"", 1) - 1)};
  if (fortran->rfind("True", 0) == 0)
    return bad_input(fmt::format("{}: byte {}: Fortran-order NPY is not supported (save with "
                                 "order='C')",
                                 name, header_at));
  static const std::map<std::string, size_t> supported{{"<f4", 4}, {"<f8", 8}, {"<i4", 4},
                                                       {"<i8", 8}, {"|u1", 1}, {"<u1", 1}};
  auto s = supported.find(a.descr);
  if (s == supported.end())
    return bad_input(fmt::format("{}: byte {}: unsupported NPY dtype '{}' (supported: float32, "
                                 "float64, int32, int64, uint8, little-endian)",
                                 name, header_at, a.descr));
  a.item = s->second;
  auto open = shape->find('('), close = shape->find(')');
  if (open == std::string_view::npos || close == std::string_view::npos)
    return bad_input(fmt::format("{}: byte {}: NPY shape is not a tuple", name, header_at));
  for (auto part : split(shape->substr(open + 1, close - open - 1), ',')) {
    if (part.empty())
      continue;
    uint64_t dim = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), dim);
    if (ec != std::errc{} || p != part.data() + part.size())
      return bad_input(fmt::format("{}: byte {}: NPY shape has a bad dimension '{}'", name,
                                   header_at, std::string{part}));
    a.shape.push_back(dim);
  }
  a.data_offset = header_at + header_len;
  unsigned __int128 count = 1;
  for (auto d : a.shape)
    count *= d;
  auto need = count * a.item;
  auto have = b.size() - a.data_offset;
  if (need != have)
    return bad_input(fmt::format("{}: byte {}: NPY data is {} bytes, its shape needs {}{}", name,
                                 b.size(), have, static_cast<uint64_t>(need),
                                 have < need ? " (truncated)" : ""));
  return a;
}

double npy_value(const npy_array& a, uint64_t i) {
  const char* p = a.bytes.data() + a.data_offset + i * a.item;
  if (a.descr == "<f4") {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  if (a.descr == "<f8") {
    double v;
    std::memcpy(&v, p, 8);
    return v;
  }
  if (a.descr == "<i4") {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  if (a.descr == "<i8") {
    int64_t v;
    std::memcpy(&v, p, 8);
    return static_cast<double>(v);
  }
  return static_cast<uint8_t>(*p);
}

/// Rows and row width of an array read as a matrix (N-D: flattened rows).
std::pair<uint64_t, uint64_t> as_matrix(const std::vector<uint64_t>& shape) {
  if (shape.empty())
    return {1, 1};
  uint64_t width = 1;
  for (size_t i = 1; i < shape.size(); ++i)
    width *= shape[i];
  return {shape[0], width};
}

/// Fills `t` from values[row][col] with an optional label column; checks
/// every value is finite.
template <class Get>
caf::error fill_table(table& t, uint64_t rows, uint64_t width, int64_t label, Get get,
                      const std::string& name, label_column& labels) {
  t.rows = rows;
  t.features = width - (label >= 0 ? 1 : 0);
  if (rows == 0)
    return bad_input(fmt::format("{}: no rows", name));
  if (t.features == 0)
    return bad_input(fmt::format("{}: no feature columns", name));
  t.x.reserve(rows * t.features);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < width; ++c) {
      double v = get(r * width + c);
      if (static_cast<int64_t>(c) == label) {
        if (v != std::floor(v) || v < 0)
          return bad_input(fmt::format("{}: row {} column {}: label {} is not a class id >= 0",
                                       name, r + 1, c + 1, v));
        labels.text.push_back(fmt::format("{}", static_cast<int64_t>(v)));
        labels.where.push_back(fmt::format("{}: row {}", name, r + 1));
        continue;
      }
      if (!std::isfinite(v) || !std::isfinite(static_cast<float>(v)))
        return bad_input(fmt::format("{}: row {} column {}: {} is not a finite float32", name,
                                     r + 1, c + 1, v));
      t.x.push_back(static_cast<float>(v));
    }
  return caf::none;
}

/// Labels from a separate 1-D integer array with `rows` entries.
template <class Get>
caf::error fill_labels(table& t, uint64_t count, uint64_t rows, Get get, const std::string& name) {
  if (count != rows)
    return bad_input(fmt::format("{}: {} labels for {} rows", name, count, rows));
  label_column labels;
  for (uint64_t i = 0; i < count; ++i) {
    double v = get(i);
    if (v != std::floor(v) || v < 0 || !std::isfinite(v))
      return bad_input(fmt::format("{}: label {} ({}) is not a class id >= 0", name, i + 1, v));
    labels.text.push_back(fmt::format("{}", static_cast<int64_t>(v)));
    labels.where.push_back(fmt::format("{}: label {}", name, i + 1));
  }
  return assign_labels(t, labels);
}

} // namespace

caf::expected<table> read_npy(const std::filesystem::path& features,
                              const std::optional<std::filesystem::path>& labels,
                              const std::string& label_col, const ingest_limits& lim) {
  auto a = parse_npy(features, lim);
  if (!a)
    return a.error();
  auto [rows, width] = as_matrix(a->shape);
  int64_t label = -1;
  if (!label_col.empty() && !labels) {
    auto idx = label_index(label_col, width, {}, features.string());
    if (!idx)
      return idx.error();
    label = *idx;
  }
  table t;
  label_column col;
  if (auto err = fill_table(t, rows, width, label, [&](uint64_t i) { return npy_value(*a, i); },
                            features.string(), col))
    return err;
  if (label >= 0) {
    if (auto err = assign_labels(t, col))
      return err;
  } else if (labels) {
    auto l = parse_npy(*labels, lim);
    if (!l)
      return l.error();
    if (l->descr == "<f4" || l->descr == "<f8")
      return bad_input(fmt::format("{}: labels must be an integer array, not '{}'",
                                   labels->string(), l->descr));
    auto [n, w] = as_matrix(l->shape);
    if (w != 1)
      return bad_input(fmt::format("{}: labels must be 1-D", labels->string()));
    if (auto err = fill_labels(t, n, rows, [&](uint64_t i) { return npy_value(*l, i); },
                               labels->string()))
      return err;
  }
  return t;
}

// --- IDX ----------------------------------------------------------------------

namespace {

struct idx_array {
  uint8_t type = 0;
  size_t item = 0;
  std::vector<uint64_t> shape;
  std::string bytes;
  size_t data_offset = 0;
};

caf::expected<idx_array> parse_idx(const std::filesystem::path& file, const ingest_limits& lim) {
  auto name = file.string();
  auto raw = read_file(file, lim);
  if (!raw)
    return raw.error();
  idx_array a;
  a.bytes = std::move(*raw);
  auto& b = a.bytes;
  if (b.size() < 4 || b[0] != 0 || b[1] != 0)
    return bad_input(fmt::format("{}: byte 0: wrong IDX magic number (expected 00 00 type dims)",
                                 name));
  a.type = static_cast<uint8_t>(b[2]);
  static const std::map<uint8_t, size_t> sizes{{0x08, 1}, {0x09, 1}, {0x0B, 2},
                                               {0x0C, 4}, {0x0D, 4}, {0x0E, 8}};
  auto s = sizes.find(a.type);
  if (s == sizes.end())
    return bad_input(fmt::format("{}: byte 2: wrong IDX magic number (unknown type 0x{:02x})",
                                 name, a.type));
  a.item = s->second;
  auto dims = static_cast<uint8_t>(b[3]);
  if (dims == 0 || b.size() < 4 + 4 * static_cast<size_t>(dims))
    return bad_input(fmt::format("{}: byte 3: IDX header truncated or has no dimensions", name));
  unsigned __int128 count = 1;
  for (size_t d = 0; d < dims; ++d) {
    uint64_t v = 0;
    for (size_t k = 0; k < 4; ++k)
      v = v << 8 | static_cast<uint8_t>(b[4 + 4 * d + k]);
    a.shape.push_back(v);
    count *= v;
  }
  a.data_offset = 4 + 4 * static_cast<size_t>(dims);
  auto need = count * a.item;
  auto have = b.size() - a.data_offset;
  if (need != have)
    return bad_input(fmt::format("{}: byte {}: IDX data is {} bytes but its header says {}", name,
                                 b.size(), have, static_cast<uint64_t>(need)));
  return a;
}

double idx_value(const idx_array& a, uint64_t i) {
  auto p = reinterpret_cast<const uint8_t*>(a.bytes.data() + a.data_offset + i * a.item);
  uint64_t raw = 0;
  for (size_t k = 0; k < a.item; ++k)
    raw = raw << 8 | p[k]; // IDX is big-endian
  switch (a.type) {
    case 0x08: return static_cast<double>(raw);
    case 0x09: return static_cast<int8_t>(raw);
    case 0x0B: return static_cast<int16_t>(raw);
    case 0x0C: return static_cast<int32_t>(raw);
    case 0x0D: {
      auto u = static_cast<uint32_t>(raw);
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    default: {
      double d;
      std::memcpy(&d, &raw, 8);
      return d;
    }
  }
}

} // namespace

caf::expected<table> read_idx(const std::filesystem::path& images,
                              const std::optional<std::filesystem::path>& labels,
                              const ingest_limits& lim) {
  auto a = parse_idx(images, lim);
  if (!a)
    return a.error();
  auto [rows, width] = as_matrix(a->shape);
  table t;
  label_column none;
  if (auto err = fill_table(t, rows, width, -1, [&](uint64_t i) { return idx_value(*a, i); },
                            images.string(), none))
    return err;
  if (labels) {
    auto l = parse_idx(*labels, lim);
    if (!l)
      return l.error();
    if (l->shape.size() != 1)
      return bad_input(fmt::format("{}: an IDX labels file must be 1-D", labels->string()));
    if (auto err = fill_labels(t, l->shape[0], rows, [&](uint64_t i) { return idx_value(*l, i); },
                               labels->string()))
      return err;
  }
  return t;
}

caf::expected<table> read_any(const std::filesystem::path& file,
                              const std::optional<std::filesystem::path>& labels,
                              const csv_options& csv,
                              const std::optional<std::string>& label_col) {
  auto name = file.filename().string();
  if (name.size() > 3 && name.ends_with(".gz"))
    name.resize(name.size() - 3);
  bool csv_file = name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt");
  if (csv.targets && !csv_file)
    return bad_input(fmt::format("{}: regression targets are read from CSV files only (a label "
                                 "column of numbers)",
                                 file.string()));
  if (name.ends_with(".npy")) {
    if (labels && label_col && !label_col->empty())
      return bad_input(fmt::format("{}: give a labels file or a label column, not both",
                                   file.string()));
    return read_npy(file, labels, label_col.value_or(""), csv.lim);
  }
  if (name.ends_with(".idx") || name.ends_with("-ubyte") || name.find(".idx") != std::string::npos)
    return read_idx(file, labels, csv.lim);
  if (csv_file) {
    auto opts = csv;
    if (label_col)
      opts.label_col = *label_col;
    return read_csv(file, opts);
  }
  return bad_input(fmt::format("{}: unknown format (expected .csv, .npy, .idx or *-ubyte, "
                               "optionally .gz)",
                               file.string()));
}

// --- transforms ---------------------------------------------------------------

const char* to_string(transform::kind k) {
  switch (k) {
    case transform::kind::none: return "none";
    case transform::kind::standardize: return "standardize";
    case transform::kind::minmax: return "minmax";
  }
  return "?";
}

transform fit_and_apply(table& t, transform::kind what) {
  transform tr;
  tr.what = what;
  if (what == transform::kind::none || t.rows == 0)
    return tr;
  auto f = t.features;
  tr.shift.assign(f, 0.0f);
  tr.scale.assign(f, 1.0f);
  for (uint64_t c = 0; c < f; ++c) {
    // Double accumulators in a fixed order: every host fits the same numbers.
    double a = 0, b = 0;
    if (what == transform::kind::standardize) {
      double sum = 0, sq = 0;
      for (uint64_t r = 0; r < t.rows; ++r)
        sum += t.x[r * f + c];
      double mean = sum / static_cast<double>(t.rows);
      for (uint64_t r = 0; r < t.rows; ++r) {
        double d = t.x[r * f + c] - mean;
        sq += d * d;
      }
      a = mean;
      b = std::sqrt(sq / static_cast<double>(t.rows));
    } else {
      double lo = t.x[c], hi = t.x[c];
      for (uint64_t r = 0; r < t.rows; ++r) {
        lo = std::min<double>(lo, t.x[r * f + c]);
        hi = std::max<double>(hi, t.x[r * f + c]);
      }
      a = lo;
      b = hi - lo;
    }
    tr.shift[c] = static_cast<float>(a);
    tr.scale[c] = b > 0 ? static_cast<float>(b) : 1.0f; // a constant feature stays put
  }
  for (uint64_t r = 0; r < t.rows; ++r)
    for (uint64_t c = 0; c < f; ++c)
      t.x[r * f + c] = (t.x[r * f + c] - tr.shift[c]) / tr.scale[c];
  return tr;
}

} // namespace aicon::data
