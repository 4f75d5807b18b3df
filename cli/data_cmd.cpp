#include "cli/data_cmd.hpp"

#include <cstdio>

#include "actors/data_node/shard_store.hpp"
#include "runtime/error.hpp"

namespace aicon {

namespace {

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

caf::expected<std::unique_ptr<store::environment>> open_store(const data_cmd_options& o) {
  if (o.data_dir.empty())
    return make_error(errc::invalid_argument, "--data-dir DIR is required");
  return store::environment::open(o.data_dir);
}

struct opened_dataset {
  std::unique_ptr<store::environment> env;
  envelope manifest;
};

caf::expected<opened_dataset> open_dataset(const data_cmd_options& o) {
  auto env = open_store(o);
  if (!env)
    return env.error();
  auto m = data::find_dataset(**env, o.id);
  if (!m)
    return m.error();
  return opened_dataset{std::move(*env), std::move(*m)};
}

} // namespace

int data_put(const data_cmd_options& o) {
  if (o.delimiter.size() != 1)
    return fail(make_error(errc::invalid_argument, "--delimiter must be one character"));
  if (o.standardize && o.minmax)
    return fail(make_error(errc::invalid_argument, "--standardize and --minmax exclude each other"));
  auto owner = load_identity(o.data_dir);
  if (!owner)
    return fail(owner.error());
  data::csv_options csv;
  csv.delimiter = o.delimiter[0];
  if (o.label_col)
    csv.label_col = *o.label_col;
  csv.skip_rows = o.skip_rows;
  std::optional<std::filesystem::path> labels;
  if (!o.labels.empty())
    labels = o.labels;
  // Read and check everything before the store is even opened: bad input
  // leaves nothing behind.
  auto t = data::read_any(o.file, labels, csv, o.label_col);
  if (!t)
    return fail(t.error());
  auto tr = data::fit_and_apply(*t, o.standardize ? data::transform::kind::standardize
                                    : o.minmax    ? data::transform::kind::minmax
                                                  : data::transform::kind::none);
  auto env = open_store(o);
  if (!env)
    return fail(env.error());
  data::put_options po;
  po.name = o.name.empty() ? std::filesystem::path{o.file}.filename().string() : o.name;
  po.source = std::filesystem::path{o.file}.filename().string();
  po.price = o.price;
  po.shard_bytes = o.shard_bytes;
  po.preview_rows = o.preview_rows;
  auto m = data::put_dataset(**env, owner->id(), *t, tr, po);
  if (!m)
    return fail(m.error());
  opened<schema::DatasetManifest> man{*m};
  std::printf("dataset %s\n", to_hex({man->getDatasetId().begin(), 32}).c_str());
  std::printf("%llu rows, %llu features, %u classes, %u shards, transform %s, price %llu\n",
              static_cast<unsigned long long>(t->rows),
              static_cast<unsigned long long>(t->features), t->classes,
              man->getShards().size(), data::to_string(tr.what),
              static_cast<unsigned long long>(o.price));
  return 0;
}

int data_ls(const data_cmd_options& o) {
  auto env = open_store(o);
  if (!env)
    return fail(env.error());
  auto all = data::list_datasets(**env);
  if (!all)
    return fail(all.error());
  std::printf("%-16s %-20s %8s %8s %7s %6s %8s\n", "id", "name", "rows", "features", "classes",
              "shards", "price");
  for (auto& env_m : *all) {
    opened<schema::DatasetManifest> m{env_m};
    if (!m)
      continue;
    std::printf("%-16s %-20s %8llu %8llu %7u %6u %8llu\n",
                to_hex({m->getDatasetId().begin(), 32}).substr(0, 16).c_str(),
                m->getName().cStr(), static_cast<unsigned long long>(m->getRows()),
                static_cast<unsigned long long>(m->getFeatures()), m->getClasses(),
                m->getShards().size(), static_cast<unsigned long long>(m->getPrice()));
  }
  return 0;
}

int data_preview(const data_cmd_options& o) {
  auto ds = open_dataset(o);
  if (!ds)
    return fail(ds.error());
  opened<schema::DatasetManifest> man{ds->manifest};
  std::printf("dataset %s (%s): %llu rows x %llu features, %u classes, transform %s\n",
              to_hex({man->getDatasetId().begin(), 32}).c_str(), man->getName().cStr(),
              static_cast<unsigned long long>(man->getRows()),
              static_cast<unsigned long long>(man->getFeatures()), man->getClasses(),
              man->getTransform().getKind().cStr());
  for (auto p : man->getPreview()) {
    std::printf("row %llu label %d:", static_cast<unsigned long long>(p.getRow()), p.getY());
    for (auto v : p.getX())
      std::printf(" %g", static_cast<double>(v));
    std::printf("\n");
  }
  return 0;
}

int data_verify(const data_cmd_options& o) {
  auto ds = open_dataset(o);
  if (!ds)
    return fail(ds.error());
  auto r = data::verify_dataset(*ds->env, ds->manifest);
  if (!r)
    return fail(r.error());
  for (auto& p : r->problems)
    std::printf("problem: %s\n", p.c_str());
  std::printf("%llu shares, %llu bytes re-hashed and decrypted on this store: %zu problem(s)\n",
              static_cast<unsigned long long>(r->shards),
              static_cast<unsigned long long>(r->bytes), r->problems.size());
  return r->problems.empty() ? 0 : 1;
}

} // namespace aicon
