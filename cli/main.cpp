// aicon: one binary, one subcommand per task.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "actors/roles.hpp"
#include "bench/allreduce.hpp"
#include "bench/chain.hpp"
#include "bench/data.hpp"
#include "bench/messages.hpp"
#include "bench/train.hpp"
#include "bench/allocator.hpp"
#include "bench/verify.hpp"
#include "bench/federation.hpp"
#include "bench/sim.hpp"
#include "sim/sim_cmd.hpp"
#include "cli/chain_cmd.hpp"
#include "cli/data_cmd.hpp"
#include "cli/console.hpp"
#include "cli/demo.hpp"
#include "cli/peer_cmd.hpp"
#include "cli/status_cmd.hpp"
#include "cli/train_cmd.hpp"
#include "cli/job_cmd.hpp"
#include "cli/model_cmd.hpp"
#include "cli/wallet_cmd.hpp"
#include "gpu/device.hpp"
#include "runtime/client.hpp"
#include "runtime/config.hpp"
#include "runtime/host.hpp"
#include "runtime/log.hpp"
#include "runtime/tls.hpp"
#include "schemas/echo.capnp.h"

namespace {

using namespace aicon;

std::string default_data_dir() {
  if (auto env = std::getenv("AICON_DATA_DIR"))
    return env;
  return "aicon-data";
}

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

int cmd_keygen(const std::string& data_dir) {
  auto id = create_identity(data_dir);
  if (!id)
    return fail(id.error());
  std::printf("%s\n", id->id().hex().c_str());
  std::fflush(stdout);
  std::fprintf(stderr,
               "wrote %s/node.key (mode 0600) and %s/node.crt\n"
               "give node.crt to the operators of your peers; they run\n"
               "  aicon trust node.crt --data-dir THEIR_DIR\n"
               "and add the NodeId above to peers.allow in their host.toml\n",
               data_dir.c_str(), data_dir.c_str());
  return 0;
}

int cmd_trust(const std::string& data_dir, const std::string& file) {
  auto id = trust_certificate(data_dir, file);
  if (!id)
    return fail(id.error());
  std::printf("%s\n", id->hex().c_str());
  std::fprintf(stderr, "trusted: add this NodeId to peers.allow (or peers.connect) to admit it\n");
  return 0;
}

struct host_flags {
  std::string config;
  std::string data_dir;
  std::string listen;
  std::string site;
  std::vector<std::string> roles;
  std::vector<std::string> allow;
  std::vector<std::string> peers;
  bool dev_open = false;
  bool verbose = false;
};

int cmd_host(const host_flags& f) {
  host_config cfg;
  if (!f.config.empty()) {
    auto loaded = load_host_config(f.config, known_roles());
    if (!loaded)
      return fail(loaded.error());
    cfg = std::move(*loaded);
  }
  if (!f.data_dir.empty())
    cfg.data_dir = f.data_dir;
  if (!f.listen.empty()) {
    auto addr = net_address::parse(f.listen);
    if (!addr)
      return fail(addr.error());
    cfg.listen = *addr;
  }
  if (!f.site.empty())
    cfg.site = f.site;
  if (!f.roles.empty()) {
    auto known = known_roles();
    for (auto& r : f.roles)
      if (!known.count(r))
        return fail(make_error(errc::config_invalid, fmt::format("--roles: unknown role '{}'", r)));
    cfg.roles = f.roles;
  }
  for (auto& a : f.allow) {
    auto id = node_id::from_hex(a);
    if (!id)
      return fail(id.error());
    cfg.allow.push_back(*id);
  }
  for (auto& p : f.peers) {
    auto eq = p.find('=');
    if (eq == std::string::npos)
      return fail(make_error(errc::config_invalid,
                             fmt::format("--peer '{}' must be ADDRESS=NODEID", p)));
    auto addr = net_address::parse(p.substr(0, eq));
    if (!addr)
      return fail(addr.error());
    auto id = node_id::from_hex(p.substr(eq + 1));
    if (!id)
      return fail(id.error());
    cfg.connect.push_back(peer_entry{*addr, *id});
  }
  if (f.dev_open)
    cfg.dev_open = true;
  if (f.verbose)
    set_log_level(log_level::debug);
  return run_host(cfg, role_table());
}

struct ping_flags {
  std::string address;
  std::string data_dir;
  std::string node;
  int count = 10;
  size_t size = 64;
  bool dev_open = false;
};

int cmd_ping(const ping_flags& f) {
  client::options opts;
  opts.data_dir = f.data_dir;
  opts.dev_open = f.dev_open;
  opts.threads = 2;
  auto c = client::start(opts);
  if (!c)
    return fail(c.error());
  std::optional<node_id> expected;
  if (!f.node.empty()) {
    auto id = node_id::from_hex(f.node);
    if (!id)
      return fail(id.error());
    expected = *id;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto node = (*c)->connect(f.address, expected);
  if (!node)
    return fail(node.error());
  auto connect_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("connected to %s at %s in %.1f ms\n", node->hex().c_str(), f.address.c_str(),
              connect_ms);
  auto name = "echo@" + node->hex();
  auto echo = (*c)->lookup(name);
  if (!echo)
    return fail(echo.error());
  std::vector<uint8_t> payload(f.size);
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<uint8_t>(i * 31 + 7);
  std::vector<double> rtts;
  int wrong = 0;
  for (int i = 0; i < f.count; ++i) {
    auto req = make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b) {
      b.setSeq(static_cast<uint64_t>(i));
      b.setPayload(kj::arrayPtr(payload.data(), payload.size()));
    });
    auto start = std::chrono::steady_clock::now();
    auto reply = (*c)->request(*echo, std::move(req), std::chrono::seconds(10));
    auto rtt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!reply)
      return fail(reply.error());
    opened<schema::EchoResponse> resp{*reply};
    if (!resp)
      return fail(resp.error());
    auto data = resp->getPayload();
    if (resp->getSeq() != static_cast<uint64_t>(i) || data.size() != payload.size()
        || !std::equal(data.begin(), data.end(), payload.begin()))
      ++wrong;
    rtts.push_back(rtt);
  }
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double p) {
    auto idx = static_cast<size_t>(p * static_cast<double>(rtts.size() - 1) + 0.5);
    return rtts[std::min(idx, rtts.size() - 1)];
  };
  std::printf("%s: %d round trips, %zu B payload: min %.3f ms, median %.3f ms, p99 %.3f ms, "
              "max %.3f ms, %d wrong\n",
              name.substr(0, 13).c_str(), f.count, f.size, rtts.front(), pct(0.5), pct(0.99),
              rtts.back(), wrong);
  return wrong == 0 ? 0 : 1;
}

int cmd_gpu() {
  auto report = gpu::query_devices();
  std::printf("CUDA/NCCL built: %s\n", report.cuda_built ? "yes" : "no");
  if (report.nccl_version)
    std::printf("NCCL version: %d\n", report.nccl_version);
  std::printf("status: %s\n", report.status.c_str());
  for (auto& d : report.devices)
    std::printf("gpu %d: %s, %.1f GiB, sm_%d%d\n", d.index, d.name.c_str(),
                static_cast<double>(d.memory_bytes) / (1 << 30), d.cc_major, d.cc_minor);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"aicon: an actor-model runtime for a decentralized AI compute economy"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "aicon 0.1.0");

  std::string data_dir = default_data_dir();

  auto keygen = app.add_subcommand("keygen", "create this node's ed25519 key (never overwrites)");
  keygen->add_option("--data-dir", data_dir, "data directory (default $AICON_DATA_DIR or ./aicon-data)");

  std::string cert_file;
  auto trust = app.add_subcommand("trust", "import a peer's node.crt so it can be allowed");
  trust->add_option("file", cert_file, "the peer's node.crt")->required();
  trust->add_option("--data-dir", data_dir, "data directory");

  peer_options po;
  po.data_dir = data_dir;
  auto peer_cmd = app.add_subcommand("peer", "a host's peers at run time (kept in DATA_DIR/peers.toml)");
  peer_cmd->require_subcommand(1);
  auto peer_add = peer_cmd->add_subcommand("add", "admit and dial a peer (its certificate is fetched and checked against NODEID)");
  peer_add->add_option("address", po.address, "host:port")->required();
  peer_add->add_option("node", po.node, "its NodeId (64 hex digits)")->required();
  peer_add->add_option("--cert", po.cert, "its node.crt instead of fetching it");
  auto peer_rm = peer_cmd->add_subcommand("rm", "stop admitting a peer and close its link");
  peer_rm->add_option("node", po.node, "its NodeId")->required();
  auto peer_ls = peer_cmd->add_subcommand("ls", "the peers a host admits and dials");
  peer_ls->add_option("--connect", po.connect, "the running host (host:port): show links up/down and round trips");
  for (auto* sub : {peer_add, peer_rm, peer_ls}) {
    sub->add_option("--data-dir", po.data_dir, "the host's data directory");
    sub->add_option("--config", po.config, "the host's host.toml (its data_dir and configured peers)");
  }

  host_flags hf;
  auto host = app.add_subcommand("host", "run an actor host until SIGINT/SIGTERM");
  host->add_option("--config", hf.config, "host.toml");
  host->add_option("--data-dir", hf.data_dir, "overrides host.data_dir");
  host->add_option("--listen", hf.listen, "overrides host.listen (host:port, port 0 = any)");
  host->add_option("--site", hf.site, "overrides host.site");
  host->add_option("--roles", hf.roles, "overrides host.roles")->delimiter(',');
  host->add_option("--allow", hf.allow, "adds a NodeId to peers.allow");
  host->add_option("--peer", hf.peers, "adds ADDRESS=NODEID to peers.connect");
  host->add_flag("--dev-open", hf.dev_open, "unauthenticated dev mode (loud warning)");
  host->add_flag("-v,--verbose", hf.verbose, "debug logging");

  ping_flags pf;
  pf.data_dir = data_dir;
  auto ping = app.add_subcommand("ping", "round trips to a host's echo role");
  ping->add_option("address", pf.address, "host:port")->required();
  ping->add_option("--count,-c", pf.count, "round trips (default 10)")->check(CLI::Range(1, 1000000));
  ping->add_option("--size", pf.size, "payload bytes (default 64)")->check(CLI::Range(0, (64 << 20) - 4096)); // fits envelope_bytes_max
  ping->add_option("--node", pf.node, "expected NodeId of the host");
  ping->add_option("--data-dir", pf.data_dir, "this client's identity and trusted peers");
  ping->add_flag("--dev-open", pf.dev_open, "talk to a host in dev mode");

  bench::messages_options bo;
  auto bench_cmd = app.add_subcommand("bench", "run a benchmark");
  bench_cmd->require_subcommand(1);
  auto bench_messages = bench_cmd->add_subcommand("messages", "envelope vs plain CAF messages");
  bench::add_messages_flags(*bench_messages, bo);
  bench::chain_options co;
  auto bench_chain = bench_cmd->add_subcommand("chain", "durable signed transfers per second");
  bench::add_chain_flags(*bench_chain, co);
  bench::allreduce_options bao;
  auto bench_allreduce = bench_cmd->add_subcommand("allreduce", "actor ring allreduce across host processes vs MPI_Allreduce");
  bench::add_allreduce_flags(*bench_allreduce, bao);
  bench::train_options bto;
  auto bench_train = bench_cmd->add_subcommand("train", "training samples/s and scaling for 1, 2, 4 trainers");
  bench::add_train_flags(*bench_train, bto);
  bench::allocator_options bal;
  auto bench_alloc = bench_cmd->add_subcommand("allocator", "allocation decisions/s and latency with 100k offers vs a linear scan");
  bench::add_allocator_flags(*bench_alloc, bal);
  bench::verify_options bvo;
  auto bench_verify = bench_cmd->add_subcommand("verify", "the rater's cost as a fraction of the training it checks");
  bench::add_verify_flags(*bench_verify, bvo);
  bench::federation_options bfo;
  auto bench_fed = bench_cmd->add_subcommand("federation", "a late host catching up N blocks vs local verification; gossip convergence among H hosts");
  bench::add_federation_flags(*bench_fed, bfo);
  bench::data_options bdo;
  auto bench_data = bench_cmd->add_subcommand("data", "shard fetch + verify + decrypt from a data node");
  bench::add_data_flags(*bench_data, bdo);

  bench::sim_bench_options bso;
  auto bench_sim = bench_cmd->add_subcommand("sim", "simulator events/s and seeds/min; finality latency under no faults, loss, a healed partition");
  bench::add_sim_flags(*bench_sim, bso);

  sim::sim_cmd_options simo;
  auto sim_cmd = app.add_subcommand("sim", "deterministic simulation of block finality: seeded faults, byzantine validators, invariants after every event");
  sim::add_sim_flags(*sim_cmd, simo);

  model_cmd_options mco;
  auto model_cmd = app.add_subcommand("model", "researchers' TorchScript models: check the contract, export trained weights");
  model_cmd->require_subcommand(1);
  auto model_check = model_cmd->add_subcommand("check", "whether FILE.pt meets the model contract, and what it is");
  model_check->add_option("file", mco.file, "the TorchScript file")->required();
  auto model_export = model_cmd->add_subcommand("export", "trained weights from an aicon checkpoint as a TorchScript file");
  model_export->add_option("--model", mco.model, "torch:FILE, the model the checkpoint is of")->required();
  model_export->add_option("--checkpoint", mco.checkpoint, "an aicon checkpoint (aicon train --checkpoint)")->required();
  model_export->add_option("--out", mco.out, "the TorchScript file to write")->required();
  data_cmd_options mpo;
  auto model_put_cmd = model_cmd->add_subcommand("put", "store FILE.pt on data nodes under its id (BLAKE2b of your key and the file hash) and register it as your model asset");
  model_put_cmd->add_option("file", mpo.file, "the TorchScript file")->required();
  model_put_cmd->add_option("--name", mpo.name, "model name (default: the file name)");
  model_put_cmd->add_option("--price", mpo.price, "price per paying job that trains it (paid to you)");
  model_put_cmd->add_option("--replicas", mpo.replicas, "copies on the network in all (default 2)")->check(CLI::Range(1, 16));
  model_put_cmd->add_option("--data-dir", mpo.data_dir, "this client's identity and trusted peers")->required();
  model_put_cmd->add_option("--connect", mpo.connect, "host:port of a data node")->delimiter(',')->required();
  model_put_cmd->add_option("--key", mpo.key, "owner's key file (default: node.key of --data-dir)");
  model_put_cmd->add_flag("--dev-open", mpo.dev_open, "talk to hosts in dev mode");
  model_put_cmd->add_flag("!--no-register", mpo.register_asset, "do not register the model on the chain");

  auto authz_cmd = app.add_subcommand("authz", "who may send each message to each role, and what proves it (the README's table, from the code)");
  auto gpu_cmd = app.add_subcommand("gpu", "report CUDA devices and the NCCL version");

  wallet_options wo;
  wo.data_dir = data_dir;
  chain_cmd_options cho;
  auto chain_cmd = app.add_subcommand("chain", "inspect and verify the chain in a local store");
  chain_cmd->require_subcommand(1);
  auto chain_show_cmd = chain_cmd->add_subcommand("show", "the tip, or one block");
  auto chain_verify_cmd = chain_cmd->add_subcommand("verify", "re-check everything from genesis");
  for (auto* sub : {chain_show_cmd, chain_verify_cmd}) {
    sub->add_option("--data-dir", cho.data_dir, "the host's data dir (holds store/)")->required();
    sub->add_option("--genesis", cho.genesis, "the chain's genesis.toml")->required();
  }
  chain_show_cmd->add_option("--height", cho.height, "block height (default: the tip)");
  auto chain_receipt_cmd = chain_cmd->add_subcommand(
    "receipt", "sign a work receipt (trainer + verifier keys) and submit it to a host");
  chain_receipt_cmd->add_option("--trainer-key", wo.trainer_key, "trainer's key file")->required();
  chain_receipt_cmd->add_option("--verifier-key", wo.verifier_key, "an authority's key file")->required();
  chain_receipt_cmd->add_option("--units", wo.units, "verified work units")->required();
  chain_receipt_cmd->add_option("--session", wo.session, "training session name (default manual)");
  chain_receipt_cmd->add_option("--seq", wo.seq, "receipt number (default: time in ms)");
  chain_receipt_cmd->add_option("--connect", wo.connect, "host:port")->required();
  chain_receipt_cmd->add_option("--node", wo.node, "expected NodeId of that host");
  chain_receipt_cmd->add_option("--data-dir", wo.data_dir, "this client's identity and trusted peers");
  chain_receipt_cmd->add_flag("--dev-open", wo.dev_open, "talk to a host in dev mode");

  auto wallet_cmd = app.add_subcommand("wallet", "wallet keys, balances and transfers");
  wallet_cmd->require_subcommand(1);
  auto wallet_new_cmd = wallet_cmd->add_subcommand("new", "write a new wallet key (0600)");
  wallet_new_cmd->add_option("--key", wo.key, "key file to create")->required();
  auto wallet_balance_cmd = wallet_cmd->add_subcommand("balance", "a wallet's balance, stake, nonce");
  wallet_balance_cmd->add_option("wallet", wo.wallet, "wallet id (64 hex digits); or --key");
  wallet_balance_cmd->add_option("--key", wo.key, "wallet key file");
  auto wallet_transfer_cmd = wallet_cmd->add_subcommand("transfer", "sign and submit a transfer");
  wallet_transfer_cmd->add_option("--key", wo.key, "the payer's wallet key file")->required();
  wallet_transfer_cmd->add_option("--to", wo.to, "recipient wallet id")->required();
  wallet_transfer_cmd->add_option("--amount", wo.amount, "amount (smallest unit)")->required();
  wallet_transfer_cmd->add_option("--wait", wo.wait_s, "seconds to wait for a final block (0: do not wait; default 30)");
  wallet_transfer_cmd->add_option("--nonce", wo.nonce,
                                  "retry a transfer whose outcome was unknown: the same nonce "
                                  "signs the same transaction, which can be final only once");
  for (auto* sub : {wallet_balance_cmd, wallet_transfer_cmd}) {
    sub->add_option("--connect", wo.connect, "host:port of a host with ledger and block_generator")->required();
    sub->add_option("--node", wo.node, "expected NodeId of that host");
    sub->add_option("--data-dir", wo.data_dir, "this client's identity and trusted peers");
    sub->add_flag("--dev-open", wo.dev_open, "talk to a host in dev mode");
  }

  data_cmd_options dco;
  auto data_cmd = app.add_subcommand("data", "datasets on a local store or on running data nodes");
  data_cmd->require_subcommand(1);
  auto data_put_cmd = data_cmd->add_subcommand("put", "ingest CSV/NPY/IDX into encrypted shards");
  data_put_cmd->add_option("file", dco.file, "CSV, NPY or IDX file (optionally .gz)")->required();
  data_put_cmd->add_option("--labels", dco.labels, "labels file (NPY or IDX)");
  data_put_cmd->add_option("--name", dco.name, "dataset name (default: the file name)");
  data_put_cmd->add_option("--label-col", dco.label_col, "label column: index (-1 = last) or header name; \"\" = none (default: last for CSV, none for NPY)");
  data_put_cmd->add_option("--skip-rows", dco.skip_rows, "lines to skip before header/data");
  data_put_cmd->add_option("--delimiter", dco.delimiter, "CSV field delimiter (default ,)");
  data_put_cmd->add_flag("--standardize", dco.standardize, "zero mean, unit variance per feature");
  data_put_cmd->add_flag("--minmax", dco.minmax, "scale each feature to [0, 1]");
  data_put_cmd->add_option("--price", dco.price, "price per paying job");
  data_put_cmd->add_option("--shard-bytes", dco.shard_bytes, "plaintext bytes per shard (default 1 MiB)");
  data_put_cmd->add_option("--preview-rows", dco.preview_rows, "public preview rows (default 5)");
  auto data_ls_cmd = data_cmd->add_subcommand("ls", "datasets in the store");
  auto data_preview_cmd = data_cmd->add_subcommand("preview", "a dataset's manifest and public rows");
  auto data_verify_cmd = data_cmd->add_subcommand("verify", "re-hash and decrypt every share");
  auto data_fetch_cmd = data_cmd->add_subcommand("fetch", "as a trainer: pull, verify and decrypt a dataset (needs a lease)");
  auto data_challenges_cmd = data_cmd->add_subcommand("challenges", "storage challenges a data node sent and their outcome");
  for (auto* sub : {data_preview_cmd, data_verify_cmd, data_fetch_cmd})
    sub->add_option("id", dco.id, "dataset id or a prefix of >= 8 hex digits")->required();
  for (auto* sub : {data_put_cmd, data_ls_cmd, data_preview_cmd, data_verify_cmd, data_fetch_cmd,
                    data_challenges_cmd}) {
    sub->add_option("--data-dir", dco.data_dir, "local store (alone) or, with --connect, this client's identity and trusted peers")->required();
    sub->add_option("--connect", dco.connect, "host:port of a data node (repeat for replicas)")->delimiter(',');
    sub->add_flag("--dev-open", dco.dev_open, "talk to hosts in dev mode");
  }
  data_put_cmd->add_option("--replicas", dco.replicas, "with --connect: copies on the network in all (default 2)")->check(CLI::Range(1, 16));
  data_put_cmd->add_option("--key", dco.key, "owner's key file (default: node.key of --data-dir)");
  data_put_cmd->add_flag("!--no-register", dco.register_asset, "with --connect: do not register the dataset on the chain");
  data_fetch_cmd->add_option("--key", dco.key, "trainer's key file (default: node.key of --data-dir)");
  data_fetch_cmd->add_option("--job", dco.job, "job id the lease is for (64 hex digits)")->required();
  data_fetch_cmd->add_option("--out", dco.out, "write OUT.x.npy (float32) and OUT.y.npy (int32)");
  data_fetch_cmd->add_option("--credits", dco.credits, "shares per request / in flight (default 4)")->check(CLI::Range(1, 64));

  train_cmd_options tco;
  auto train_cmd_app = app.add_subcommand("train", "a data-parallel training job on the trainer roles of running hosts (run by a connected job host, or from here)");
  train_cmd_app->add_option("--data", tco.job.data_file, "CSV/NPY/IDX with labels, readable on every trainer host");
  train_cmd_app->add_option("--spare", tco.spares, "host:port of a stand-by trainer host that replaces a lost one")->delimiter(',');
  train_cmd_app->add_option("--dataset", tco.dataset, "instead of --data: a dataset id (or prefix) the trainers pull from data nodes");
  train_cmd_app->add_option("--data-connect", tco.data_connect, "host:port of the data nodes holding --dataset")->delimiter(',');
  train_cmd_app->add_option("--job", tco.job_hex, "with --dataset on an operator's stored leases: the job id (64 hex) they are for (coordinated from here)");
  train_cmd_app->add_option("--connect", tco.connect, "host:port of a trainer host (repeat)")->delimiter(',')->required();
  train_cmd_app->add_option("--data-dir", tco.data_dir, "this client's identity and trusted peers")->required();
  train_cmd_app->add_flag("--dev-open", tco.dev_open, "talk to hosts in dev mode");
  train_cmd_app->add_option("--model", tco.job.model, "model spec (default mlp:64-64-10)");
  train_cmd_app->add_option("--steps", tco.job.steps, "steps (default 100)");
  train_cmd_app->add_option("--batch", tco.job.global_batch, "global batch (default 32)");
  train_cmd_app->add_option("--trainers-per-host", tco.job.trainers_per_host, "trainers on each host (default 1)")->check(CLI::Range(1, 64));
  train_cmd_app->add_option("--lr", tco.job.lr, "learning rate (default 0.05)");
  static const std::map<std::string, train::transport> transports{
    {"stream", train::transport::STREAM},
    {"stream-plain", train::transport::STREAM_PLAIN},
    {"actor", train::transport::ACTOR},
    {"nccl", train::transport::NCCL}};
  train_cmd_app->add_option("--transport", tco.job.transport,
                            "ring chunks over 'stream' (direct TCP, AES-GCM sealed; default), "
                            "'stream-plain' (in clear after an authenticated handshake: trusted "
                            "networks only), 'actor' (messages over the TLS links) or 'nccl' (GPU hosts)")
    ->transform(CLI::CheckedTransformer(transports));
  train_cmd_app->add_option("--momentum", tco.job.momentum, "momentum (default 0.9)");
  train_cmd_app->add_option("--optimizer", tco.job.optimizer, "sgd (default) or adamw")
    ->check(CLI::IsMember({"sgd", "adamw"}));
  train_cmd_app->add_option("--weight-decay", tco.job.weight_decay, "L2 weight decay (default 1e-4)");
  train_cmd_app->add_option("--seed", tco.job.seed, "initialization and shuffle seed (default 1)");
  train_cmd_app->add_option("--test-percent", tco.job.test_percent, "held-out rows (default 20)")->check(CLI::Range(0, 99));
  train_cmd_app->add_option("--checkpoint-every", tco.job.checkpoint_every, "steps between checkpoints (default 10)");
  train_cmd_app->add_option("--checkpoint", tco.checkpoint, "write the checkpoints to this file");
  train_cmd_app->add_option("--chunk-bytes", tco.job.chunk_bytes, "ring chunk (default 262144)");
  train_cmd_app->add_flag("--local", tco.local, "coordinate the job from this process even when a connected host runs the job role");
  train_cmd_app->add_option("--ring-timeout-ms", tco.job.ring_timeout_ms, "a ring without progress this long fails the step (default 5000)");
  train_cmd_app->add_option("--csv", tco.csv, "write the loss curve (step,loss,samples/s,allreduce ms)");
  train_cmd_app->add_option("--plot", tco.plot, "write the loss curve as an SVG line plot");

  console_options cso;
  auto console_app = app.add_subcommand("console", "the researcher's Lua console (REPL)");
  auto run_app = app.add_subcommand("run", "run a Lua script against the console API");
  run_app->add_option("script", cso.script, "the .lua file")->required();
  run_app->add_option("args", cso.args, "after --: the script's arg table");
  for (auto* sub : {console_app, run_app}) {
    sub->add_option("--connect", cso.connect, "host:port of a host to use (repeat)")->delimiter(',');
    sub->add_option("--data-dir", cso.data_dir, "this client's identity and trusted peers (with --connect)");
    sub->add_flag("--dev-open", cso.dev_open, "talk to hosts in dev mode");
  }

  status_options sto;
  auto status_app = app.add_subcommand("status", "what a host runs and sees: roles, peers, chain tip, data, counters");
  status_app->add_option("--connect", sto.connect, "host:port")->required();
  status_app->add_option("--data-dir", sto.data_dir, "this client's identity and trusted peers")->required();
  status_app->add_flag("--dev-open", sto.dev_open, "talk to a host in dev mode");
  status_app->add_flag("--json", sto.json, "one JSON object, for scripts");

  demo_options dopts;
  auto demo = app.add_subcommand("demo", "the whole loop on an embedded cluster: data, escrow, allocation, training, verification, blocks, settlement");
  demo->add_option("--out", dopts.out, "where loss.csv and loss.svg go (default aicon-demo-out)");
  demo->add_option("--data", dopts.data, "labelled CSV/NPY/IDX (default: tests/data/digits.csv.gz)");
  demo->add_option("--model", dopts.model, "model spec (default mlp:64-64-10)");
  demo->add_option("--steps", dopts.steps, "training steps (default 400)")->check(CLI::Range(1, 1000000));

  job_cmd_options jo;
  auto job_cmd = app.add_subcommand("job", "jobs a job host runs for you while you are offline");
  job_cmd->require_subcommand(1);
  auto job_common = [&](CLI::App* c) {
    c->add_option("--connect", jo.connect, "the job host, host:port")->required();
    c->add_option("--node", jo.node, "expected NodeId of that host");
    c->add_option("--data-dir", jo.data_dir, "this client's identity (the payer) and trusted peers")
      ->required();
    c->add_flag("--dev-open", jo.dev_open, "talk to a host in dev mode");
  };
  auto job_submit_cmd = job_cmd->add_subcommand("submit", "submit a job; prints its id last");
  job_common(job_submit_cmd);
  job_submit_cmd->add_option("--model", jo.model, "model spec (default mlp:64-64-10)");
  job_submit_cmd->add_option("--dataset", jo.dataset, "a dataset on the data nodes (id or prefix)");
  job_submit_cmd->add_option("--data", jo.data, "or a data file on the trainer hosts");
  job_submit_cmd->add_option("--trainers", jo.trainers, "K trainers (default 1)")->check(CLI::Range(1, 1024));
  job_submit_cmd->add_option("--steps", jo.steps, "steps");
  job_submit_cmd->add_option("--epochs", jo.epochs, "or epochs");
  job_submit_cmd->add_option("--batch", jo.batch, "global batch (default 32)");
  job_submit_cmd->add_option("--lr", jo.lr, "learning rate (default 0.05)");
  job_submit_cmd->add_option("--momentum", jo.momentum, "momentum (default 0.9)");
  job_submit_cmd->add_option("--optimizer", jo.optimizer, "sgd (default) or adamw")
    ->check(CLI::IsMember({"sgd", "adamw"}));
  job_submit_cmd->add_option("--holdout", jo.holdout, "held-out fraction (default 0.2)");
  job_submit_cmd->add_option("--seed", jo.seed, "seed (default 1)");
  job_submit_cmd->add_option("--transport", jo.transport, "stream, stream-plain, actor or nccl");
  job_submit_cmd->add_option("--budget", jo.budget,
                             "escrowed first, naming the job host its agent; trainers from the allocator");
  job_submit_cmd->add_option("--priority", jo.priority, "0..1000 (with a budget)");
  job_submit_cmd->add_flag("--verify", jo.verify, "the rater verifies the work before settlement");
  job_submit_cmd->add_option("--deadline", jo.deadline_s,
                             "seconds the job host has to settle (default 6 h); then only a refund");
  std::map<std::string, CLI::App*> job_subs;
  for (auto [name, what] : std::initializer_list<std::pair<const char*, const char*>>{
         {"status", "a job's phase, progress and result"},
         {"logs", "a job's events (--follow: until it ends)"},
         {"wait", "wait for a job to end: exit 0 and its metrics when done"},
         {"cancel", "stop a job (its payer only): the steps run are paid, the rest refunded"},
         {"fetch", "a done job's trained weights (its payer only): an aicon checkpoint (--out) or TorchScript (--torchscript)"}}) {
    auto c = job_cmd->add_subcommand(name, what);
    job_common(c);
    c->add_option("job", jo.job, "job id (or 8+ hex digits of it)")->required();
    job_subs[name] = c;
  }
  job_subs["logs"]->add_flag("--follow", jo.follow, "until the job ends");
  job_subs["wait"]->add_option("--timeout", jo.timeout_s, "give up after this many seconds");
  job_subs["fetch"]->add_option("--out", jo.out, "the checkpoint file to write");
  job_subs["fetch"]->add_option("--torchscript", jo.torchscript,
                                "a job on a model asset (torch:<id>): the trained model as TorchScript, to write here");
  job_subs["fetch"]->add_option("--ledger", jo.ledger,
                                "host:port of another chain host whose ledger the weights are checked against (default: the job host's)");
  auto job_ls_cmd = job_cmd->add_subcommand("ls", "the jobs of a job host");
  job_common(job_ls_cmd);

  CLI11_PARSE(app, argc, argv);
  if (*job_cmd)
    set_log_level(log_level::warning); // the link's INFO lines stay out of it
  if (*job_submit_cmd)
    return job_submit(jo);
  if (*job_ls_cmd)
    return job_ls(jo);
  if (*job_subs["status"])
    return job_status(jo);
  if (*job_subs["logs"])
    return job_logs(jo);
  if (*job_subs["wait"])
    return job_wait(jo);
  if (*job_subs["cancel"])
    return job_cancel(jo);
  if (*job_subs["fetch"])
    return job_fetch(jo);
  // Commands that dial hosts as clients keep their output to what they were
  // asked for: the link's own INFO lines ("peer up ...") stay out of it.
  for (auto* sub : {data_put_cmd, data_ls_cmd, data_preview_cmd, data_verify_cmd, data_fetch_cmd,
                    data_challenges_cmd, train_cmd_app, wallet_balance_cmd, wallet_transfer_cmd,
                    chain_receipt_cmd, console_app, run_app, status_app})
    if (*sub)
      set_log_level(log_level::warning);
  if (*keygen)
    return cmd_keygen(data_dir);
  if (*trust)
    return cmd_trust(data_dir, cert_file);
  if (*host)
    return cmd_host(hf);
  if (*ping)
    return cmd_ping(pf);
  if (*bench_messages)
    return bench::run_messages(bo, argv[0]);
  if (*bench_chain)
    return bench::run_chain(co);
  if (*bench_data)
    return bench::run_data(bdo);
  if (*bench_allreduce)
    return bench::run_allreduce(bao);
  if (*bench_train)
    return bench::run_train(bto);
  if (*bench_alloc)
    return bench::run_allocator(bal);
  if (*bench_verify)
    return bench::run_verify(bvo);
  if (*bench_fed)
    return bench::run_federation(bfo);
  if (*bench_sim)
    return bench::run_sim_bench(bso);
  if (*sim_cmd)
    return sim::run_sim_cmd(simo);
  if (*model_check)
    return model_check_cmd(mco);
  if (*model_export)
    return model_export_cmd(mco);
  if (*model_put_cmd)
    return model_put(mpo);
  if (*authz_cmd) {
    std::cout << access_table_markdown(access_table());
    return 0;
  }
  if (*gpu_cmd)
    return cmd_gpu();
  if (*demo)
    return run_demo(dopts);
  if (*train_cmd_app)
    return train_cmd(tco);
  if (*console_app)
    return console_cmd(cso);
  if (*status_app)
    return status_cmd(sto);
  if (*peer_add)
    return peer_add_cmd(po);
  if (*peer_rm)
    return peer_rm_cmd(po);
  if (*peer_ls)
    return peer_ls_cmd(po);
  if (*run_app)
    return run_cmd(cso);
  if (*chain_show_cmd)
    return chain_show(cho);
  if (*chain_verify_cmd)
    return chain_verify(cho);
  if (*chain_receipt_cmd)
    return work_receipt(wo);
  if (*data_put_cmd)
    return data_put(dco);
  if (*data_ls_cmd)
    return data_ls(dco);
  if (*data_preview_cmd)
    return data_preview(dco);
  if (*data_verify_cmd)
    return data_verify(dco);
  if (*data_fetch_cmd)
    return data_fetch(dco);
  if (*data_challenges_cmd)
    return data_challenges(dco);
  if (*wallet_new_cmd)
    return wallet_new(wo);
  if (*wallet_balance_cmd)
    return wallet_balance(wo);
  if (*wallet_transfer_cmd)
    return wallet_transfer(wo);
  return 0;
}
