// Data-node ingest: every format, every bad-input case, exact values.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "actors/data_node/ingest.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::data;

namespace {

std::filesystem::path put_file(const test::temp_dir& dir, const std::string& name,
                               const std::string& bytes) {
  auto path = dir / name;
  std::ofstream out{path, std::ios::binary};
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

/// An NPY v1.0 file with `descr`, `shape` and raw little-endian data.
std::string npy(const std::string& descr, const std::string& shape, const std::string& data,
                bool fortran = false) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': "
                       + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
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

template <class T>
std::string raw(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// An IDX file of unsigned bytes with big-endian dimensions.
std::string idx_u8(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                   uint8_t type = 0x08) {
  std::string out{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int k = 3; k >= 0; --k)
      out += static_cast<char>((d >> (8 * k)) & 0xff);
  out.append(data.begin(), data.end());
  return out;
}

void expect_error(const caf::expected<table>& t, std::initializer_list<std::string> needles) {
  BOOST_REQUIRE_MESSAGE(!t, "accepted input that should fail");
  auto text = describe(t.error());
  for (auto& n : needles)
    BOOST_TEST(text.find(n) != std::string::npos, "'" << n << "' not in: " << text);
}

} // namespace

BOOST_AUTO_TEST_SUITE(ingest)

BOOST_AUTO_TEST_CASE(digits_reference_dataset) {
  auto path = std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz";
  auto t = read_csv(path, {});
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  BOOST_TEST(t->rows == 1797u);
  BOOST_TEST(t->features == 64u);
  BOOST_TEST(t->classes == 10u);
  BOOST_TEST(t->x.size() == 1797u * 64u);
  BOOST_TEST(t->x[2] == 5.0f);  // first row: 0,0,5,13,9,...
  BOOST_TEST(t->x[3] == 13.0f);
  BOOST_TEST(t->y[0] == 0);
  BOOST_TEST(t->y[1] == 1);
  BOOST_TEST(t->feature_names.empty());
}

BOOST_AUTO_TEST_CASE(a_truncated_or_corrupt_gzip_is_refused_not_read_short) {
  // Cut anywhere (a line end included) or with a wrong CRC in its trailer,
  // a .csv.gz is refused by name instead of being taken for fewer rows.
  auto path = std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz";
  std::ifstream in{path, std::ios::binary};
  std::string gz{std::istreambuf_iterator<char>{in}, {}};
  BOOST_REQUIRE(gz.size() > 100u);
  test::temp_dir dir;
  for (size_t cut : {gz.size() / 4, gz.size() / 2, gz.size() * 9 / 10, gz.size() - 4,
                     gz.size() - 1}) {
    auto t = read_csv(put_file(dir, "cut.csv.gz", gz.substr(0, cut)), {});
    expect_error(t, {"cut.csv.gz", "corrupt or truncated gzip"});
  }
  auto bad_crc = gz;
  bad_crc[gz.size() - 8] ^= 0x5a; // the CRC-32 of the trailer
  expect_error(read_csv(put_file(dir, "crc.csv.gz", bad_crc), {}),
               {"crc.csv.gz", "corrupt or truncated gzip"});
  auto whole = read_csv(put_file(dir, "whole.csv.gz", gz), {});
  BOOST_REQUIRE_MESSAGE(whole, test::why(whole));
  BOOST_TEST(whole->rows == 1797u);
}

BOOST_AUTO_TEST_CASE(csv_header_delimiter_skip_rows_and_text_labels) {
  test::temp_dir dir;
  auto f = put_file(dir, "iris.csv",
                    "# exported 2026-11-22\n"
                    "sepal;species;petal\n"
                    "5.1;setosa;1.4\n"
                    "7.0; versicolor ;4.7\n"
                    "6.3;virginica;6.0\n"
                    "4.9;setosa;-1.5e0\n");
  csv_options o;
  o.delimiter = ';';
  o.skip_rows = 1;
  o.label_col = "species";
  auto t = read_csv(f, o);
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  BOOST_TEST(t->rows == 4u);
  BOOST_TEST(t->features == 2u);
  BOOST_TEST(t->classes == 3u);
  BOOST_TEST((t->class_names == std::vector<std::string>{"setosa", "versicolor", "virginica"}));
  BOOST_TEST((t->y == std::vector<int32_t>{0, 1, 2, 0}));
  BOOST_TEST((t->x == std::vector<float>{5.1f, 1.4f, 7.0f, 4.7f, 6.3f, 6.0f, 4.9f, -1.5f}));
  BOOST_TEST((t->feature_names == std::vector<std::string>{"sepal", "petal"}));
  // The label by index, and no labels at all.
  o.label_col = "1";
  BOOST_TEST(read_csv(f, o)->classes == 3u);
  o.label_col = "";
  o.skip_rows = 2;
  o.header = false;
  expect_error(read_csv(f, o), {"iris.csv:3:2", "'setosa' is not a number"});
}

BOOST_AUTO_TEST_CASE(csv_bad_input_names_file_line_and_column) {
  test::temp_dir dir;
  csv_options o;
  expect_error(read_csv(put_file(dir, "ragged.csv", "1,2,0\n3,4,1\n5,6\n"), o),
               {"ragged.csv:3", "2 fields, expected 3", "ragged"});
  expect_error(read_csv(put_file(dir, "text.csv", "1,2,0\n3,abc,1\n"), o),
               {"text.csv:2:2", "'abc' is not a number"});
  expect_error(read_csv(put_file(dir, "nan.csv", "1,2,0\n3,nan,1\n"), o),
               {"nan.csv:2:2", "not a finite"});
  expect_error(read_csv(put_file(dir, "inf.csv", "1,2,0\n-inf,4,1\n"), o),
               {"inf.csv:2:1", "not a finite"});
  expect_error(read_csv(put_file(dir, "big.csv", "1,2,0\n1e39,4,1\n"), o),
               {"big.csv:2:1", "not a finite float32"});
  expect_error(read_csv(put_file(dir, "empty.csv", ""), o), {"empty.csv", "no data rows"});
  expect_error(read_csv(put_file(dir, "header.csv", "a,b,c\n"), o), {"header.csv", "no data rows"});
  o.lim.line_bytes_max = 16;
  expect_error(read_csv(put_file(dir, "long.csv", "1,2,0\n" + std::string(40, '1') + "\n"), o),
               {"long.csv:2", "exceeds line_bytes_max"});
  o.lim = {};
  o.label_col = "label";
  expect_error(read_csv(put_file(dir, "nolabel.csv", "a,b,c\n1,2,3\n"), o),
               {"nolabel.csv:1", "no label column named 'label'"});
  o.label_col = "7";
  expect_error(read_csv(put_file(dir, "range.csv", "1,2,3\n"), o),
               {"range.csv:1", "label column 7 does not exist"});
  expect_error(read_csv(dir / "missing.csv", {}), {"missing.csv", "cannot open"});
}

BOOST_AUTO_TEST_CASE(npy_every_dtype_is_exact) {
  test::temp_dir dir;
  std::vector<double> values{0.5, -1.25, 3.0, 1e-3, 42.0, -7.0};
  auto check = [&](const std::string& name, const std::string& descr, const std::string& data,
                   std::vector<float> expect) {
    auto t = read_npy(put_file(dir, name, npy(descr, "(3, 2)", data)), std::nullopt);
    BOOST_REQUIRE_MESSAGE(t, name << ": " << test::why(t));
    BOOST_TEST(t->rows == 3u);
    BOOST_TEST(t->features == 2u);
    BOOST_TEST(t->x == expect, name);
  };
  std::vector<float> f32(values.begin(), values.end());
  check("f4.npy", "<f4", raw(f32), f32);
  check("f8.npy", "<f8", raw(values), f32);
  std::vector<int32_t> i32{1, -2, 3, -4, 5, 2147483647};
  check("i4.npy", "<i4", raw(i32), {1, -2, 3, -4, 5, 2147483647.0f});
  std::vector<int64_t> i64{1, -2, 3, -4, 5, 1ll << 40};
  check("i8.npy", "<i8", raw(i64), {1, -2, 3, -4, 5, static_cast<float>(1ll << 40)});
  std::vector<uint8_t> u8{0, 1, 2, 128, 254, 255};
  check("u1.npy", "|u1", raw(u8), {0, 1, 2, 128, 254, 255});
  // Labels from a second file, and from a column.
  std::vector<int64_t> y{2, 0, 1};
  auto t = read_npy(dir / "f4.npy", put_file(dir, "y.npy", npy("<i8", "(3,)", raw(y))));
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  BOOST_TEST((t->y == std::vector<int32_t>{2, 0, 1}));
  BOOST_TEST(t->classes == 3u);
  auto by_col = read_npy(dir / "u1.npy", std::nullopt, "0");
  BOOST_REQUIRE_MESSAGE(by_col, test::why(by_col));
  BOOST_TEST(by_col->features == 1u);
  BOOST_TEST((by_col->y == std::vector<int32_t>{0, 2, 254}));
  // Through read_any: an NPY has no label column unless one is named, and
  // "-1" then means the last one.
  BOOST_TEST(read_any(dir / "u1.npy", std::nullopt, {})->features == 2u);
  auto last = read_any(dir / "u1.npy", std::nullopt, {}, "-1");
  BOOST_REQUIRE_MESSAGE(last, test::why(last));
  BOOST_TEST((last->y == std::vector<int32_t>{1, 128, 255}));
  expect_error(read_any(dir / "u1.npy", dir / "y.npy", {}, "0"),
               {"u1.npy", "a labels file or a label column, not both"});
}

BOOST_AUTO_TEST_CASE(npy_bad_input_names_the_byte_offset) {
  test::temp_dir dir;
  std::vector<float> f(6, 1.0f);
  auto full = npy("<f4", "(3, 2)", raw(f));
  expect_error(read_npy(put_file(dir, "trunc.npy", full.substr(0, full.size() - 5)), std::nullopt),
               {"trunc.npy: byte", "truncated"});
  expect_error(read_npy(put_file(dir, "f2.npy", npy("<f2", "(3, 2)", std::string(12, '\0'))),
                        std::nullopt),
               {"f2.npy: byte", "unsupported NPY dtype '<f2'"});
  expect_error(read_npy(put_file(dir, "be.npy", npy(">f4", "(3, 2)", raw(f))), std::nullopt),
               {"unsupported NPY dtype '>f4'"});
  expect_error(read_npy(put_file(dir, "fort.npy", npy("<f4", "(3, 2)", raw(f), true)),
                        std::nullopt),
               {"fort.npy: byte", "Fortran-order"});
  expect_error(read_npy(put_file(dir, "magic.npy", "NUMPY but not really"), std::nullopt),
               {"magic.npy: byte 0", "not an NPY file"});
  std::vector<float> nan{1, 2, NAN, 4, 5, 6};
  expect_error(read_npy(put_file(dir, "nan.npy", npy("<f4", "(3, 2)", raw(nan))), std::nullopt),
               {"nan.npy: row 2 column 1", "not a finite"});
  std::vector<int64_t> two{1, 2};
  expect_error(read_npy(put_file(dir, "ok.npy", full), put_file(dir, "y2.npy", npy("<i8", "(2,)",
                                                                                     raw(two)))),
               {"y2.npy", "2 labels for 3 rows"});
}

BOOST_AUTO_TEST_CASE(idx_images_and_labels) {
  test::temp_dir dir;
  std::vector<uint8_t> pixels(3 * 2 * 2);
  for (size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<uint8_t>(i * 20);
  auto images = put_file(dir, "train-images-idx3-ubyte", idx_u8({3, 2, 2}, pixels));
  auto labels = put_file(dir, "train-labels-idx1-ubyte", idx_u8({3}, {7, 0, 3}));
  auto t = read_any(images, labels, {});
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  BOOST_TEST(t->rows == 3u);
  BOOST_TEST(t->features == 4u);
  BOOST_TEST(t->x[5] == 100.0f);
  BOOST_TEST((t->y == std::vector<int32_t>{7, 0, 3}));
  BOOST_TEST(t->classes == 8u);
  expect_error(read_idx(put_file(dir, "bad-magic", "\x01\x02\x08\x01" + std::string(8, 'x')),
                        std::nullopt),
               {"bad-magic: byte 0", "wrong IDX magic"});
  expect_error(read_idx(put_file(dir, "bad-type", idx_u8({3}, {1, 2, 3}, 0x07)), std::nullopt),
               {"bad-type: byte 2", "unknown type 0x07"});
  auto short_data = idx_u8({3, 2, 2}, pixels);
  short_data.pop_back();
  expect_error(read_idx(put_file(dir, "short", short_data), std::nullopt),
               {"short: byte", "11 bytes but its header says 12"});
  expect_error(read_idx(images, put_file(dir, "few-labels", idx_u8({2}, {1, 2}))),
               {"few-labels", "2 labels for 3 rows"});
}

BOOST_AUTO_TEST_CASE(transforms_are_recorded_and_exact_to_refit) {
  table t;
  t.rows = 4;
  t.features = 2;
  t.x = {1, 5, 2, 5, 3, 5, 4, 5}; // column 2 is constant
  auto copy = t;
  auto st = fit_and_apply(t, transform::kind::standardize);
  BOOST_TEST(st.shift[0] == 2.5f);
  BOOST_TEST(std::abs(st.scale[0] - std::sqrt(1.25f)) < 1e-6f);
  BOOST_TEST(st.scale[1] == 1.0f); // constant: left unscaled, not divided by zero
  double mean = 0;
  for (uint64_t r = 0; r < 4; ++r)
    mean += t.x[r * 2];
  BOOST_TEST(std::abs(mean) < 1e-6);
  BOOST_TEST(t.x[1] == 0.0f);
  auto mm = fit_and_apply(copy, transform::kind::minmax);
  BOOST_TEST(copy.x[0] == 0.0f);
  BOOST_TEST(copy.x[6] == 1.0f);
  BOOST_TEST(std::string{to_string(mm.what)} == "minmax");
}

BOOST_AUTO_TEST_SUITE_END()
