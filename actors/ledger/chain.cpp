#include "actors/ledger/chain.hpp"

#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <sodium.h>
#include <toml++/toml.h>

#include "actors/ledger/hashing.hpp"
#include "actors/ledger/work.hpp"
#include "runtime/error.hpp"

namespace aicon::ledger {

namespace {

constexpr std::string_view tip_key = "tip";
constexpr std::string_view genesis_key = "genesis";

std::span<const uint8_t> key_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

kj::ArrayPtr<const kj::byte> kj_bytes(const hash256& h) {
  return kj::arrayPtr(h.data(), h.size());
}

template <class Reader>
bool equals(Reader data, const hash256& h) {
  return data.size() == 32 && std::memcmp(data.begin(), h.data(), 32) == 0;
}

caf::error refuse_block(std::string what) {
  return make_error(errc::invalid_argument, "block refused: " + what);
}

// --- tip record in meta ---------------------------------------------------------

std::vector<uint8_t> encode_tip(const tip_info& t) {
  std::vector<uint8_t> out(8 + 32 + 32 + 8 + 8);
  auto put = [&](size_t off, uint64_t x) {
    for (int i = 0; i < 8; ++i)
      out[off + static_cast<size_t>(i)] = static_cast<uint8_t>(x >> (8 * i));
  };
  put(0, t.height);
  std::memcpy(out.data() + 8, t.hash.data(), 32);
  std::memcpy(out.data() + 40, t.state_root.data(), 32);
  put(72, t.difficulty);
  put(80, t.time_ms);
  return out;
}

caf::expected<tip_info> decode_tip(std::span<const uint8_t> v) {
  if (v.size() != 88)
    return make_error(errc::internal, "stored tip is corrupt");
  auto get = [&](size_t off) {
    uint64_t x = 0;
    for (int i = 7; i >= 0; --i)
      x = x << 8 | v[off + static_cast<size_t>(i)];
    return x;
  };
  tip_info t;
  t.height = get(0);
  std::memcpy(t.hash.data(), v.data() + 8, 32);
  std::memcpy(t.state_root.data(), v.data() + 40, 32);
  t.difficulty = get(72);
  t.time_ms = get(80);
  return t;
}

caf::expected<tip_info> read_tip(store::txn& t) {
  auto v = t.get(store::db::meta, key_bytes(tip_key));
  if (!v)
    return v.error();
  if (!*v)
    return make_error(errc::not_found, "the store holds no chain");
  return decode_tip(**v);
}

/// A stored block copied into word-aligned memory (LMDB values are not).
caf::expected<envelope> read_block(store::txn& t, uint64_t height) {
  auto key = store::height_key(height);
  auto v = t.get(store::db::blocks, key);
  if (!v)
    return v.error();
  if (!*v)
    return make_error(errc::not_found, fmt::format("no block at height {}", height));
  if ((*v)->size() % sizeof(capnp::word) != 0)
    return make_error(errc::internal, fmt::format("stored block {} is corrupt", height));
  return envelope_from_bytes(**v, capnp::typeId<schema::Block>());
}

/// Header facts needed for retargeting, by height.
struct header_facts {
  uint64_t time_ms = 0;
  uint64_t difficulty = 0;
};

caf::expected<header_facts> facts_at(store::txn& t, uint64_t height) {
  auto env = read_block(t, height);
  if (!env)
    return env.error();
  opened<schema::Block> b{*env};
  if (!b)
    return b.error();
  return header_facts{b->getHeader().getTimeMs(), b->getHeader().getDifficulty()};
}

caf::expected<uint64_t> expected_difficulty(store::txn& t, const genesis_config& g,
                                            uint64_t height) {
  if (height <= 1)
    return g.initial_difficulty;
  auto prev = facts_at(t, height - 1);
  if (!prev)
    return prev.error();
  auto r = g.difficulty.window_blocks;
  if (r == 0 || (height - 1) % r != 0 || height - 1 < r)
    return prev->difficulty;
  auto start = facts_at(t, height - 1 - r);
  if (!start)
    return start.error();
  return pov::retarget(prev->difficulty, prev->time_ms - start->time_ms, g.difficulty);
}

/// Checks signatures of all transactions on every core. Returns the first
/// failure as "transaction i: ...".
caf::error check_signatures_parallel(capnp::List<schema::SignedTransaction>::Reader txs) {
  auto n = txs.size();
  unsigned threads = std::max(1u, std::min(std::thread::hardware_concurrency(), 8u));
  if (n < 64)
    threads = 1;
  std::vector<caf::error> first(threads);
  std::vector<size_t> first_index(threads, SIZE_MAX);
  auto work = [&](unsigned k) {
    for (size_t i = k; i < n; i += threads)
      if (auto err = check_signature(txs[static_cast<unsigned>(i)])) {
        first[k] = std::move(err);
        first_index[k] = i;
        return;
      }
  };
  std::vector<std::thread> pool;
  for (unsigned k = 1; k < threads; ++k)
    pool.emplace_back(work, k);
  work(0);
  for (auto& th : pool)
    th.join();
  size_t best = SIZE_MAX;
  caf::error err;
  for (unsigned k = 0; k < threads; ++k)
    if (first_index[k] < best) {
      best = first_index[k];
      err = first[k];
    }
  if (err)
    return refuse_block(fmt::format("transaction {}: {}", best, describe(err)));
  return caf::none;
}

/// The work receipts of a block: each valid and countersigned by an
/// authority, all of the header's session, distinct, summing to workUnits.
caf::error check_receipts(const genesis_config& g, schema::Block::Reader block) {
  auto h = block.getHeader();
  auto rs = block.getReceipts();
  if (!equals(h.getReceiptRoot(), receipt_root(rs)))
    return refuse_block("receiptRoot does not match the receipts");
  uint64_t total = 0;
  std::set<hash256> seen;
  for (unsigned i = 0; i < rs.size(); ++i) {
    auto sr = rs[i];
    if (auto err = check_receipt(sr, g.authorities))
      return make_error(code_of(err), fmt::format("block refused: receipt {}: {}", i,
                                                  what_of(err)));
    auto r = sr.getReceipt();
    if (r.getSessionId() != h.getSessionId() || r.getJobId() != h.getJobId() ||
        r.getModelId() != h.getModelId())
      return refuse_block(fmt::format("receipt {} is for another training session than the "
                                      "header's",
                                      i));
    if (!seen.insert(receipt_hash(sr)).second)
      return refuse_block(fmt::format("receipt {} appears twice", i));
    if (__builtin_add_overflow(total, r.getUnits(), &total))
      return refuse_block("the receipts' work units overflow");
  }
  if (total != h.getWorkUnits())
    return refuse_block(fmt::format("workUnits {} is not the receipts' sum {}", h.getWorkUnits(),
                                    total));
  return caf::none;
}

/// Every header rule except the state root; `hash_out` gets the block hash.
/// `need_quorum` false: a proposal, checked by a validator before it votes.
caf::error check_block(store::txn& t, const genesis_config& g, schema::Block::Reader block,
                       const tip_info& tip, hash256& hash_out, bool need_quorum = true) {
  auto h = block.getHeader();
  if (h.getHeight() != tip.height + 1)
    return refuse_block(fmt::format("height {} does not follow the tip {}", h.getHeight(),
                                    tip.height));
  if (!equals(h.getPrevHash(), tip.hash))
    return refuse_block(fmt::format("prevHash is not the tip hash {}", hex(tip.hash)));
  if (h.getTimeMs() <= tip.time_ms)
    return refuse_block(fmt::format("time {} is not after the tip's {}", h.getTimeMs(),
                                    tip.time_ms));
  auto diff = expected_difficulty(t, g, h.getHeight());
  if (!diff)
    return diff.error();
  if (h.getDifficulty() != *diff)
    return refuse_block(fmt::format("difficulty {} is not the expected {}", h.getDifficulty(),
                                    *diff));
  if (block.getReceipts().size() == 0) {
    // An idle block: no training ran, transactions waited. It earns no
    // Proof of Value, names no session, and comes no faster than the
    // target rate, so the chain moves without work but never outpaces it.
    hash256 zero{};
    if (h.getWorkUnits() != 0 || !equals(h.getSessionId(), zero) || !equals(h.getJobId(), zero)
        || !equals(h.getModelId(), zero))
      return refuse_block("an idle block (no work receipt) must claim no work units and name no "
                          "session, job or model");
    if (block.getTransactions().size() == 0)
      return refuse_block("it carries no work receipt and no transaction (an idle block exists "
                          "only to commit waiting transactions)");
    if (h.getTimeMs() < tip.time_ms + g.difficulty.target_interval_ms)
      return refuse_block(fmt::format("an idle block comes at most every target_interval_ms "
                                      "({} ms): time {} is {} ms after the tip",
                                      g.difficulty.target_interval_ms, h.getTimeMs(),
                                      h.getTimeMs() - tip.time_ms));
  } else if (h.getWorkUnits() < *diff) {
    return refuse_block(fmt::format("{} verified work units do not reach the difficulty {}",
                                    h.getWorkUnits(), *diff));
  }
  if (!equals(h.getTxRoot(), tx_root(block.getTransactions())))
    return refuse_block("txRoot does not match the transactions");
  if (auto err = check_receipts(g, block))
    return err;
  auto hash = header_hash(h);
  auto committee = select_committee(tip.hash, g.candidates, g.committee_size);
  auto generator = node_id::from_bytes({h.getGenerator().begin(), h.getGenerator().size()});
  if (!generator || std::find(committee.begin(), committee.end(), *generator) == committee.end())
    return refuse_block("the generator is not in this height's committee");
  auto gsig = block.getGeneratorSignature();
  if (!verify_signature(*generator, block_signing_bytes(hash), {gsig.begin(), gsig.size()}))
    return refuse_block("the generator signature does not verify");
  std::set<node_id> voted;
  auto votes = block.getVotes();
  uint32_t round = votes.size() > 0 ? votes[0].getRound() : 0;
  for (auto v : votes) {
    auto voter = node_id::from_bytes({v.getVoter().begin(), v.getVoter().size()});
    if (!voter)
      return refuse_block("a vote has a malformed voter");
    if (std::find(committee.begin(), committee.end(), *voter) == committee.end())
      return refuse_block(fmt::format("vote by {}, who is not in the committee", voter->short_hex()));
    if (v.getHeight() != h.getHeight() || !equals(v.getBlockHash(), hash))
      return refuse_block(fmt::format("vote by {} is for another block", voter->short_hex()));
    if (v.getKind() != schema::VoteKind::PRECOMMIT || v.getRound() != round)
      return refuse_block(fmt::format("vote by {} is not a precommit of round {} (a block is final "
                                      "with precommits of one round)",
                                      voter->short_hex(), round));
    auto sig = v.getSignature();
    if (!verify_signature(*voter, vote_signing_bytes(h.getHeight(), round, v.getKind(), hash),
                          {sig.begin(), sig.size()}))
      return refuse_block(fmt::format("vote by {} does not verify", voter->short_hex()));
    voted.insert(*voter);
  }
  auto need = quorum(static_cast<uint32_t>(committee.size()));
  if (need_quorum && voted.size() < need)
    return refuse_block(fmt::format("{} distinct committee votes, {} needed for finality",
                                    voted.size(), need));
  hash_out = hash;
  return caf::none;
}

/// Applies the transactions of a checked block to `st` and compares roots.
caf::error apply_block_body(state_store& st, const chain_params& params,
                            schema::Block::Reader block, bool signatures_checked) {
  auto height = block.getHeader().getHeight();
  auto rs = block.getReceipts();
  for (unsigned i = 0; i < rs.size(); ++i) {
    auto h = receipt_hash(rs[i]);
    auto used = st.receipt_used(h);
    if (!used)
      return used.error();
    if (*used)
      return refuse_block(fmt::format("receipt {} already earned block {}", i, **used));
    if (auto err = st.mark_receipt(h, height))
      return err;
  }
  auto txs = block.getTransactions();
  for (unsigned i = 0; i < txs.size(); ++i)
    if (auto err = apply_transaction(st, params, txs[i], signatures_checked,
                                     std::max<uint64_t>(block.getHeader().getTimeMs(), 1)))
      return refuse_block(fmt::format("transaction {}: {}", i, describe(err)));
  auto root = st.state_root();
  if (!root)
    return root.error();
  if (!equals(block.getHeader().getStateRoot(), *root))
    return refuse_block(fmt::format("stateRoot does not match the state after its "
                                    "transactions ({})", hex(*root)));
  return caf::none;
}

envelope genesis_block(const genesis_config& g, const hash256& state_root) {
  return make_envelope<schema::Block>([&](schema::Block::Builder b) {
    auto h = b.initHeader();
    hash256 zero{};
    h.setHeight(0);
    h.setPrevHash(kj_bytes(zero));
    h.setTimeMs(g.time_ms);
    h.setGenerator(kj_bytes(zero));
    h.setSessionId(kj_bytes(zero));
    h.setJobId(kj_bytes(zero));
    h.setModelId(kj_bytes(zero));
    h.setDifficulty(g.initial_difficulty);
    h.setTxRoot(kj_bytes(zero));
    h.setStateRoot(kj_bytes(state_root));
    h.setReceiptRoot(kj_bytes(zero));
  });
}

caf::error store_block(store::txn& t, const envelope& env, uint64_t height, const hash256& hash) {
  auto key = store::height_key(height);
  if (auto err = t.put(store::db::blocks, key, env.bytes(), MDB_APPEND))
    return err;
  return t.put(store::db::block_by_hash, hash, key);
}

} // namespace

std::string hex(const hash256& h) {
  return to_hex(h);
}

hash256 header_hash(schema::BlockHeader::Reader header) {
  kj::Array<capnp::word> keep;
  return blake2b("aicon-header-v1", canonical_bytes(header, keep));
}

hash256 tx_root(capnp::List<schema::SignedTransaction>::Reader txs) {
  std::vector<hash256> leaves;
  leaves.reserve(txs.size());
  for (auto tx : txs) {
    kj::Array<capnp::word> keep;
    leaves.push_back(blake2b("aicon-tx-leaf-v1", canonical_bytes(tx, keep)));
  }
  return merkle_root(std::move(leaves), "aicon-tx-node-v1");
}

std::vector<uint8_t> block_signing_bytes(const hash256& block_hash) {
  static constexpr std::string_view tag = "aicon-block-v1";
  std::vector<uint8_t> out;
  out.reserve(tag.size() + 40);
  for (char c : tag)
    out.push_back(static_cast<uint8_t>(c));
  out.insert(out.end(), block_hash.begin(), block_hash.end());
  return out;
}

std::vector<uint8_t> vote_signing_bytes(uint64_t height, uint32_t round, schema::VoteKind kind,
                                        const hash256& block_hash) {
  static constexpr std::string_view tag = "aicon-vote-v2";
  std::vector<uint8_t> out;
  out.reserve(tag.size() + 45);
  for (char c : tag)
    out.push_back(static_cast<uint8_t>(c));
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(height >> (8 * i)));
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(round >> (8 * i)));
  out.push_back(static_cast<uint8_t>(kind));
  out.insert(out.end(), block_hash.begin(), block_hash.end());
  return out;
}

std::vector<uint8_t> proposal_signing_bytes(uint32_t round, int32_t pol_round,
                                            const hash256& block_hash) {
  static constexpr std::string_view tag = "aicon-proposal-v1";
  std::vector<uint8_t> out;
  for (char c : tag)
    out.push_back(static_cast<uint8_t>(c));
  auto pol = static_cast<uint32_t>(pol_round);
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(round >> (8 * i)));
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(pol >> (8 * i)));
  out.insert(out.end(), block_hash.begin(), block_hash.end());
  return out;
}

envelope sign_vote(const identity& voter, uint64_t height, uint32_t round, schema::VoteKind kind,
                   const hash256& block_hash) {
  auto sig = voter.sign(vote_signing_bytes(height, round, kind, block_hash));
  return make_envelope<schema::Vote>([&](schema::Vote::Builder v) {
    v.setHeight(height);
    v.setBlockHash(kj::arrayPtr(block_hash.data(), 32));
    v.setVoter(kj::arrayPtr(voter.id().bytes.data(), 32));
    v.setSignature(kj::arrayPtr(sig.data(), sig.size()));
    v.setRound(round);
    v.setKind(kind);
  });
}

bool vote_verifies(schema::Vote::Reader v) {
  auto voter = node_id::from_bytes({v.getVoter().begin(), v.getVoter().size()});
  if (!voter || v.getBlockHash().size() != 32)
    return false;
  hash256 h;
  std::memcpy(h.data(), v.getBlockHash().begin(), 32);
  return verify_signature(*voter, vote_signing_bytes(v.getHeight(), v.getRound(), v.getKind(), h),
                          {v.getSignature().begin(), v.getSignature().size()});
}

envelope make_proposal(const envelope& block_env, uint32_t round, int32_t pol_round,
                       const std::vector<envelope>& pol, const identity& proposer) {
  opened<schema::Block> block{block_env};
  auto hash = header_hash(block->getHeader());
  auto sig = proposer.sign(proposal_signing_bytes(round, pol_round, hash));
  return make_envelope<schema::Proposal>([&](schema::Proposal::Builder p) {
    p.setBlock(block.root());
    p.setRound(round);
    p.setPolRound(pol_round);
    auto list = p.initPol(static_cast<unsigned>(pol.size()));
    for (unsigned i = 0; i < pol.size(); ++i)
      list.setWithCaveats(i, opened<schema::Vote>{pol[i]}.root());
    p.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

uint32_t quorum(uint32_t committee_size) {
  return (2 * committee_size + 2) / 3;
}

std::vector<node_id> select_committee(const hash256& prev_hash,
                                      const std::vector<committee_member>& candidates,
                                      uint32_t size) {
  // Canonical order first: the config's order must not matter.
  auto pool = candidates;
  std::sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.id < b.id; });
  std::vector<node_id> out;
  uint64_t counter = 0;
  while (!pool.empty() && out.size() < size) {
    unsigned __int128 total = 0;
    for (auto& c : pool)
      total += c.weight;
    if (total == 0)
      break;
    uint8_t input[40];
    std::memcpy(input, prev_hash.data(), 32);
    std::memcpy(input + 32, &counter, 8);
    ++counter;
    auto h = blake2b("aicon-committee-v1", input);
    unsigned __int128 r = 0;
    for (int i = 0; i < 16; ++i)
      r = r << 8 | h[static_cast<size_t>(i)];
    r %= total;
    for (size_t i = 0; i < pool.size(); ++i) {
      if (r < pool[i].weight) {
        out.push_back(pool[i].id);
        pool.erase(pool.begin() + static_cast<long>(i));
        break;
      }
      r -= pool[i].weight;
    }
  }
  return out;
}

// --- genesis ------------------------------------------------------------------

caf::expected<genesis_config> parse_genesis(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return make_error(errc::config_invalid, fmt::format("{}:{}: {}", source,
                                                        e.source().begin.line, e.description()));
  }
  auto fail = [&](const toml::node* n, const std::string& key, const std::string& what) {
    return make_error(errc::config_invalid, fmt::format("{}:{}: {}: {}", source,
                                                        n ? n->source().begin.line : 0, key, what));
  };
  genesis_config g;
  auto get_u64 = [&](const toml::table& t, const std::string& prefix, const char* key,
                     uint64_t& out) -> caf::error {
    if (auto n = t.get(key)) {
      auto v = n->value<int64_t>();
      if (!n->is_integer() || !v || *v < 0)
        return fail(n, prefix + key, "expected a non-negative integer");
      out = static_cast<uint64_t>(*v);
    }
    return caf::none;
  };
  auto get_node = [&](const toml::node* n, const std::string& key) -> caf::expected<node_id> {
    auto v = n ? n->value<std::string>() : std::nullopt;
    if (!v)
      return fail(n, key, "expected a NodeId (64 hex digits)");
    auto id = node_id::from_hex(*v);
    if (!id)
      return fail(n, key, what_of(id.error()));
    return *id;
  };
  for (auto& [k, v] : root) {
    static const std::set<std::string> known{"time_ms",        "committee_size",
                                             "initial_difficulty", "authorities",
                                             "difficulty",     "allocation",
                                             "candidate",      "reward_percent",
                                             "slash_percent"};
    if (!known.count(std::string{k.str()}))
      return fail(&v, std::string{k.str()}, "unknown key");
  }
  uint64_t size = g.committee_size;
  if (auto err = get_u64(root, "", "time_ms", g.time_ms))
    return err;
  if (auto err = get_u64(root, "", "committee_size", size))
    return err;
  if (size == 0 || size > 1000)
    return fail(root.get("committee_size"), "committee_size", "must be 1..1000");
  g.committee_size = static_cast<uint32_t>(size);
  if (auto err = get_u64(root, "", "initial_difficulty", g.initial_difficulty))
    return err;
  if (g.initial_difficulty == 0)
    return fail(root.get("initial_difficulty"), "initial_difficulty", "must be > 0");
  for (auto [key, field] : {std::pair{"reward_percent", &g.reward_percent},
                            std::pair{"slash_percent", &g.slash_percent}}) {
    uint64_t pct = *field;
    if (auto err = get_u64(root, "", key, pct))
      return err;
    if (pct > 100)
      return fail(root.get(key), key, "must be a percentage, 0..100");
    *field = static_cast<uint32_t>(pct);
  }
  if (auto arr = root["authorities"].as_array())
    for (size_t i = 0; i < arr->size(); ++i) {
      auto id = get_node(&(*arr)[i], fmt::format("authorities[{}]", i));
      if (!id)
        return id.error();
      g.authorities.insert(*id);
    }
  if (auto d = root["difficulty"].as_table()) {
    uint64_t target = g.difficulty.target_interval_ms, window = g.difficulty.window_blocks,
             clamp = g.difficulty.clamp_factor;
    if (auto err = get_u64(*d, "difficulty.", "target_interval_ms", target))
      return err;
    if (auto err = get_u64(*d, "difficulty.", "window_blocks", window))
      return err;
    if (auto err = get_u64(*d, "difficulty.", "clamp_factor", clamp))
      return err;
    if (target == 0 || window == 0 || clamp < 2)
      return fail(d, "difficulty", "target_interval_ms and window_blocks must be > 0, "
                                   "clamp_factor >= 2");
    g.difficulty.target_interval_ms = target;
    g.difficulty.window_blocks = static_cast<uint32_t>(window);
    g.difficulty.clamp_factor = static_cast<uint32_t>(clamp);
  }
  if (auto arr = root["allocation"].as_array())
    for (size_t i = 0; i < arr->size(); ++i) {
      auto t = (*arr)[i].as_table();
      auto key = fmt::format("allocation[{}]", i);
      if (!t)
        return fail(&(*arr)[i], key, "expected a table {wallet, balance, stake}");
      auto id = get_node(t->get("wallet"), key + ".wallet");
      if (!id)
        return id.error();
      genesis_entry e{*id, 0, 0};
      if (auto err = get_u64(*t, key + ".", "balance", e.balance))
        return err;
      if (auto err = get_u64(*t, key + ".", "stake", e.stake))
        return err;
      g.allocations.push_back(e);
    }
  if (auto arr = root["candidate"].as_array())
    for (size_t i = 0; i < arr->size(); ++i) {
      auto t = (*arr)[i].as_table();
      auto key = fmt::format("candidate[{}]", i);
      if (!t)
        return fail(&(*arr)[i], key, "expected a table {node, weight}");
      auto id = get_node(t->get("node"), key + ".node");
      if (!id)
        return id.error();
      committee_member m{*id, 1};
      if (auto err = get_u64(*t, key + ".", "weight", m.weight))
        return err;
      g.candidates.push_back(m);
    }
  if (g.candidates.empty())
    return make_error(errc::config_invalid, fmt::format("{}: no [[candidate]]: nobody could "
                                                        "generate a block", source));
  return g;
}

caf::expected<genesis_config> load_genesis(const std::filesystem::path& path) {
  std::ifstream in{path};
  if (!in)
    return make_error(errc::config_invalid, fmt::format("cannot read genesis {}", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_genesis(ss.str(), path.string());
}

hash256 chain_id(const genesis_config& g) {
  static constexpr std::string_view tag = "aicon-chain-v1";
  auto text = to_toml(g);
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(tag.data()), tag.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  hash256 out;
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

chain_params params_of(const genesis_config& g) {
  chain_params p;
  p.authorities = g.authorities;
  p.reward_percent = g.reward_percent;
  p.slash_percent = g.slash_percent;
  p.chain_id = chain_id(g);
  return p;
}

std::string to_toml(const genesis_config& g) {
  std::string out;
  out += fmt::format("time_ms = {}\ncommittee_size = {}\ninitial_difficulty = {}\n", g.time_ms,
                     g.committee_size, g.initial_difficulty);
  out += fmt::format("reward_percent = {}\nslash_percent = {}\n", g.reward_percent,
                     g.slash_percent);
  out += "authorities = [";
  bool first = true;
  for (auto& a : g.authorities) {
    out += fmt::format("{}\"{}\"", first ? "" : ", ", a.hex());
    first = false;
  }
  out += "]\n\n[difficulty]\n";
  out += fmt::format("target_interval_ms = {}\nwindow_blocks = {}\nclamp_factor = {}\n",
                     g.difficulty.target_interval_ms, g.difficulty.window_blocks,
                     g.difficulty.clamp_factor);
  for (auto& c : g.candidates)
    out += fmt::format("\n[[candidate]]\nnode = \"{}\"\nweight = {}\n", c.id.hex(), c.weight);
  for (auto& a : g.allocations)
    out += fmt::format("\n[[allocation]]\nwallet = \"{}\"\nbalance = {}\nstake = {}\n",
                       a.wallet.hex(), a.balance, a.stake);
  return out;
}

// --- chain --------------------------------------------------------------------

caf::expected<std::unique_ptr<chain>> chain::open(const std::filesystem::path& data_dir,
                                                  const genesis_config& genesis,
                                                  const store::options& opts) {
  std::unique_ptr<chain> c{new chain};
  c->genesis_ = genesis;
  c->params_ = params_of(genesis);
  c->chain_id_ = ledger::chain_id(genesis);
  auto env = store::shared_environment(data_dir, opts);
  if (!env)
    return env.error();
  c->env_ = std::move(*env);
  // The genesis state and block 0, computed the same way on every host.
  memory_store mem;
  if (auto err = apply_genesis(mem, genesis.allocations))
    return err;
  auto root = mem.state_root();
  auto block0 = genesis_block(genesis, *root);
  auto hash0 = header_hash(opened<schema::Block>{block0}->getHeader());
  auto t = store::txn::begin(*c->env_, true);
  if (!t)
    return t.error();
  auto stored = t->get(store::db::meta, key_bytes(genesis_key));
  if (!stored)
    return stored.error();
  if (*stored) {
    if ((*stored)->size() != 32 || std::memcmp((*stored)->data(), hash0.data(), 32) != 0)
      return make_error(errc::config_invalid,
                        fmt::format("{} holds a chain from another genesis", data_dir.string()));
    return c; // the read-write transaction is dropped unchanged
  }
  lmdb_store st{*t};
  if (auto err = apply_genesis(st, genesis.allocations))
    return err;
  if (auto err = store_block(*t, block0, 0, hash0))
    return err;
  if (auto err = t->put(store::db::meta, key_bytes(genesis_key), hash0))
    return err;
  tip_info tip{0, hash0, *root, genesis.initial_difficulty, genesis.time_ms};
  if (auto err = t->put(store::db::meta, key_bytes(tip_key), encode_tip(tip)))
    return err;
  if (auto err = t->commit())
    return err;
  return c;
}

caf::expected<tip_info> chain::tip() {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  return read_tip(*t);
}

caf::expected<uint64_t> chain::difficulty_for(uint64_t height) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  return expected_difficulty(*t, genesis_, height);
}

caf::error chain::append(const envelope& block_env) {
  // A block comes from a peer: a field of the wrong kind makes Cap'n Proto
  // throw when it is read. That is bad input, named, never a crash (found by
  // fuzz/block_fuzz.cpp: a list pointer where a struct was expected).
  try {
    return append_checked(block_env);
  } catch (const kj::Exception& e) {
    return make_error(errc::malformed_message,
                      fmt::format("block: {}", e.getDescription().cStr()));
  }
}

caf::error chain::append_checked(const envelope& block_env) {
  opened<schema::Block> block{block_env};
  if (!block)
    return block.error();
  // Signatures first, on every core, before the write transaction (which
  // LMDB serializes) is even opened.
  if (auto err = check_signatures_parallel(block->getTransactions()))
    return err;
  auto t = store::txn::begin(*env_, true);
  if (!t)
    return t.error();
  auto tip = read_tip(*t);
  if (!tip)
    return tip.error();
  hash256 hash;
  if (auto err = check_block(*t, genesis_, block.root(), *tip, hash))
    return err;
  lmdb_store st{*t};
  if (auto err = apply_block_body(st, params_, block.root(), true))
    return err;
  auto h = block->getHeader();
  if (auto err = store_block(*t, block_env, h.getHeight(), hash))
    return err;
  tip_info next{h.getHeight(), hash, {}, h.getDifficulty(), h.getTimeMs()};
  std::memcpy(next.state_root.data(), h.getStateRoot().begin(), 32);
  if (auto err = t->put(store::db::meta, key_bytes(tip_key), encode_tip(next)))
    return err;
  return t->commit(); // block, state and tip in one durable commit
}

caf::expected<envelope> chain::propose(const identity& generator, const block_draft& draft,
                                       std::vector<std::pair<size_t, caf::error>>* refused) {
  if (draft.receipts.empty() && draft.transactions.empty())
    return make_error(errc::invalid_argument,
                      "a block needs verified work or waiting transactions: the draft has "
                      "neither");
  auto t = store::txn::begin(*env_, true); // never committed
  if (!t)
    return t.error();
  auto tip = read_tip(*t);
  if (!tip)
    return tip.error();
  auto diff = expected_difficulty(*t, genesis_, tip->height + 1);
  if (!diff)
    return diff.error();
  lmdb_store st{*t};
  // The receipts: valid, unused, one session; their units are the block's work.
  uint64_t work = 0;
  std::deque<opened<schema::SignedWorkReceipt>> receipts; // views are not movable
  for (size_t i = 0; i < draft.receipts.size(); ++i) {
    auto& r = receipts.emplace_back(draft.receipts[i]);
    caf::error err = r ? check_receipt(r.root(), genesis_.authorities) : r.error();
    if (!err) {
      auto used = st.receipt_used(receipt_hash(r.root()));
      if (!used)
        return used.error();
      if (*used)
        err = make_error(errc::invalid_argument,
                         fmt::format("receipt {} already earned block {}", i, **used));
      else if (i > 0 &&
               r->getReceipt().getSessionId() != receipts[0]->getReceipt().getSessionId())
        err = make_error(errc::invalid_argument,
                         fmt::format("receipt {} is for another session than receipt 0", i));
      else if (__builtin_add_overflow(work, r->getReceipt().getUnits(), &work))
        err = make_error(errc::invalid_argument, "the receipts' work units overflow");
      else if (auto m = st.mark_receipt(receipt_hash(r.root()), tip->height + 1))
        return m;
    }
    if (err)
      return make_error(code_of(err), fmt::format("draft receipt {}: {}", i, what_of(err)));
  }
  // The block's time (idle: at the target rate at most); the transactions'
  // deadlines are judged by it.
  auto block_time = receipts.empty()
                      ? std::max(draft.time_ms, tip->time_ms + genesis_.difficulty.target_interval_ms)
                      : std::max(draft.time_ms, tip->time_ms + 1);
  std::vector<size_t> accepted;
  for (size_t i = 0; i < draft.transactions.size(); ++i) {
    opened<schema::SignedTransaction> stx{draft.transactions[i]};
    caf::error err = stx ? apply_transaction(st, params_, stx.root(), false,
                                             std::max<uint64_t>(block_time, 1))
                         : stx.error();
    if (err) {
      if (refused)
        refused->emplace_back(i, std::move(err));
      continue;
    }
    accepted.push_back(i);
  }
  if (receipts.empty() && accepted.empty())
    return make_error(errc::invalid_argument,
                      "an idle block needs a transaction: every transaction of the draft was "
                      "refused");
  auto root = st.state_root();
  if (!root)
    return root.error();
  t->abort();
  auto unsigned_block = make_envelope<schema::Block>([&](schema::Block::Builder b) {
    auto txs = b.initTransactions(static_cast<unsigned>(accepted.size()));
    for (unsigned k = 0; k < accepted.size(); ++k)
      txs.setWithCaveats(k, opened<schema::SignedTransaction>{draft.transactions[accepted[k]]}.root());
    auto rs = b.initReceipts(static_cast<unsigned>(receipts.size()));
    for (unsigned k = 0; k < receipts.size(); ++k)
      rs.setWithCaveats(k, receipts[k].root());
    auto h = b.initHeader();
    h.setHeight(tip->height + 1);
    h.setPrevHash(kj_bytes(tip->hash));
    h.setGenerator(kj::arrayPtr(generator.id().bytes.data(), 32));
    if (receipts.empty()) { // idle: at the target rate at most, naming no session
      hash256 zero{};
      h.setTimeMs(block_time);
      h.setSessionId(kj_bytes(zero));
      h.setJobId(kj_bytes(zero));
      h.setModelId(kj_bytes(zero));
    } else {
      auto first = receipts[0]->getReceipt();
      h.setTimeMs(block_time);
      h.setSessionId(first.getSessionId());
      h.setJobId(first.getJobId());
      h.setModelId(first.getModelId());
    }
    h.setWorkUnits(work);
    h.setDifficulty(*diff);
    h.setTxRoot(kj_bytes(tx_root(txs.asReader())));
    h.setStateRoot(kj_bytes(*root));
    h.setReceiptRoot(kj_bytes(receipt_root(rs.asReader())));
  });
  opened<schema::Block> ub{unsigned_block};
  auto sig = generator.sign(block_signing_bytes(header_hash(ub->getHeader())));
  return rebuild_block(unsigned_block, [&](schema::Block::Builder b) {
    b.setGeneratorSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

envelope rebuild_block(const envelope& block_env,
                       const std::function<void(schema::Block::Builder)>& change) {
  opened<schema::Block> src{block_env};
  return make_envelope<schema::Block>([&](schema::Block::Builder b) {
    b.setHeader(src->getHeader());
    b.setTransactions(src->getTransactions());
    b.setReceipts(src->getReceipts());
    b.setGeneratorSignature(src->getGeneratorSignature());
    b.setVotes(src->getVotes());
    change(b);
  });
}

envelope chain::add_vote(const envelope& block_env, const identity& voter) {
  return with_votes(block_env, {make_vote(block_env, voter)});
}

envelope chain::make_vote(const envelope& block_env, const identity& voter, uint32_t round) {
  opened<schema::Block> block{block_env};
  return sign_vote(voter, block->getHeader().getHeight(), round, schema::VoteKind::PRECOMMIT,
                   header_hash(block->getHeader()));
}

envelope make_double_vote(const identity& reporter, const hash256& chain, uint64_t nonce,
                          const envelope& a, const envelope& b) {
  return make_signed_transaction(reporter, chain, nonce, [&](schema::Transaction::Body::Builder body) {
    auto d = body.initDoubleVote();
    d.setA(opened<schema::Vote>{a}.root());
    d.setB(opened<schema::Vote>{b}.root());
  });
}

envelope chain::with_votes(const envelope& block_env, const std::vector<envelope>& votes) {
  std::deque<opened<schema::Vote>> added;
  for (auto& v : votes)
    if (!added.emplace_back(v))
      added.pop_back();
  opened<schema::Block> src{block_env};
  auto old = src->getVotes();
  return rebuild_block(block_env, [&](schema::Block::Builder b) {
    auto list = b.initVotes(old.size() + static_cast<unsigned>(added.size()));
    for (unsigned i = 0; i < old.size(); ++i)
      list.setWithCaveats(i, old[i]);
    for (unsigned i = 0; i < added.size(); ++i)
      list.setWithCaveats(old.size() + i, added[i].root());
  });
}

caf::error chain::check_proposal(const envelope& block_env) {
  opened<schema::Block> block{block_env};
  if (!block)
    return block.error();
  if (auto err = check_signatures_parallel(block->getTransactions()))
    return err;
  auto t = store::txn::begin(*env_, true); // never committed
  if (!t)
    return t.error();
  auto tip = read_tip(*t);
  if (!tip)
    return tip.error();
  hash256 hash;
  if (auto err = check_block(*t, genesis_, block.root(), *tip, hash, false))
    return err;
  lmdb_store st{*t};
  return apply_block_body(st, params_, block.root(), true);
}

caf::expected<std::optional<uint64_t>> chain::receipt_used(const hash256& receipt) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  lmdb_store st{*t};
  return st.receipt_used(receipt);
}

caf::expected<envelope> chain::block_at(uint64_t height) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  return read_block(*t, height);
}

caf::error chain::check_transaction(const envelope& stx) {
  opened<schema::SignedTransaction> o{stx};
  if (!o)
    return o.error();
  auto t = store::txn::begin(*env_, true);
  if (!t)
    return t.error();
  lmdb_store st{*t};
  try {
    return apply_transaction(st, params_, o.root()); // dropped unchanged with `t`
  } catch (const kj::Exception& e) {
    return make_error(errc::malformed_message,
                      fmt::format("transaction: {}", e.getDescription().cStr()));
  }
}

caf::expected<account> chain::account_of(const node_id& who) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  lmdb_store st{*t};
  return st.get_account(who);
}

caf::expected<std::optional<asset_entry>> chain::asset(const hash256& id) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  lmdb_store st{*t};
  return st.get_asset(id);
}

caf::expected<std::optional<escrow_entry>> chain::escrow_of(const hash256& job) {
  auto t = store::txn::begin(*env_, false);
  if (!t)
    return t.error();
  lmdb_store st{*t};
  return st.get_escrow(job);
}

caf::expected<verify_report> verify_chain(const std::filesystem::path& data_dir,
                                          const genesis_config& genesis) {
  auto c = chain::open(data_dir, genesis);
  if (!c)
    return c.error();
  auto t = store::txn::begin((*c)->env(), false);
  if (!t)
    return t.error();
  auto stored_tip = read_tip(*t);
  if (!stored_tip)
    return stored_tip.error();
  memory_store mem;
  if (auto err = apply_genesis(mem, genesis.allocations))
    return err;
  auto params = params_of(genesis);
  auto block0 = read_block(*t, 0);
  if (!block0)
    return block0.error();
  tip_info tip{0, header_hash(opened<schema::Block>{*block0}->getHeader()), *mem.state_root(),
               genesis.initial_difficulty, genesis.time_ms};
  verify_report report;
  for (uint64_t height = 1; height <= stored_tip->height; ++height) {
    auto env = read_block(*t, height);
    if (!env)
      return env.error();
    opened<schema::Block> block{*env};
    if (!block)
      return make_error(errc::invalid_argument,
                        fmt::format("block {}: {}", height, describe(block.error())));
    hash256 hash;
    auto err = check_block(*t, genesis, block.root(), tip, hash);
    if (!err)
      err = apply_block_body(mem, params, block.root(), false);
    if (err)
      return make_error(code_of(err), fmt::format("block {}: {}", height, what_of(err)));
    tip = tip_info{height, hash, *mem.state_root(), block->getHeader().getDifficulty(),
                   block->getHeader().getTimeMs()};
    report.transactions += block->getTransactions().size();
    ++report.blocks;
  }
  if (tip.hash != stored_tip->hash || tip.state_root != stored_tip->state_root)
    return make_error(errc::invalid_argument,
                      "the stored tip does not match the replayed chain");
  lmdb_store stored{*t};
  auto stored_root = stored.state_root();
  if (!stored_root)
    return stored_root.error();
  if (*stored_root != tip.state_root)
    return make_error(errc::invalid_argument,
                      fmt::format("the stored state (root {}) differs from the replayed state "
                                  "({})", hex(*stored_root), hex(tip.state_root)));
  report.state_root = tip.state_root;
  return report;
}

} // namespace aicon::ledger
