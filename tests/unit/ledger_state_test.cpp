// Every transaction rule, each rejection, supply conservation, and the same
// state root over memory and LMDB.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <functional>
#include <random>

#include "actors/ledger/state.hpp"
#include "chain_util.hpp"
#include "test_util.hpp"

namespace aicon::ledger { // actors/ledger/chain.hpp (its `chain` would shadow this file's)
std::vector<uint8_t> vote_signing_bytes(uint64_t height, uint32_t round, schema::VoteKind kind,
                                        const hash256& block_hash);
} // namespace aicon::ledger

using namespace aicon;
using namespace aicon::ledger;

namespace {

aicon::identity wallet(uint8_t n) {
  return test::seeded_key(n, 0x5a);
}

hash256 id32(uint8_t n) {
  hash256 h{};
  h[0] = n;
  h[1] = 0xee;
  return h;
}

kj::ArrayPtr<const kj::byte> bytes(const node_id& id) {
  return kj::arrayPtr(id.bytes.data(), id.bytes.size());
}

kj::ArrayPtr<const kj::byte> bytes(const hash256& h) {
  return kj::arrayPtr(h.data(), h.size());
}

struct chain {
  memory_store st;
  chain_params params;
  aicon::identity alice = wallet(1), bob = wallet(2), carol = wallet(3), rater = wallet(9);
  std::map<node_id, uint64_t> nonces;
  uint64_t time_ms = 1'000'000; ///< the block time transactions are applied at

  chain() {
    params.authorities = {rater.id()};
    params.chain_id = id32(0xc4);
    BOOST_REQUIRE(!apply_genesis(st, {{alice.id(), 1000, 0}, {bob.id(), 500, 100}}));
  }

  template <class F>
  aicon::envelope tx(const aicon::identity& who, F&& fill, std::optional<uint64_t> nonce = {}) {
    auto n = nonce ? *nonce : nonces[who.id()] + 1;
    return make_signed_transaction(who, params.chain_id, n, std::forward<F>(fill));
  }

  caf::error apply(const aicon::envelope& env) {
    opened<schema::SignedTransaction> stx{env};
    BOOST_REQUIRE(stx.ok());
    auto err = apply_transaction(st, params, stx.root(), false, time_ms);
    if (!err) {
      auto author = node_id::from_bytes({stx->getTx().getAuthor().begin(), 32});
      nonces[*author] = stx->getTx().getNonce();
    }
    return err;
  }

  uint64_t balance(const aicon::identity& who) {
    return st.get_account(who.id())->balance;
  }

  /// Applies `env`, expects it refused for `r`, and checks nothing changed.
  void expect_refused(const aicon::envelope& env, rule r) {
    auto before = *st.state_root();
    auto err = apply(env);
    BOOST_REQUIRE_MESSAGE(err, "accepted a transaction that breaks " << to_string(r));
    BOOST_TEST(rule_of(err) == std::optional<rule>{r}, describe(err));
    BOOST_TEST(describe(err).find(to_string(r)) != std::string::npos, describe(err));
    BOOST_TEST((*st.state_root() == before), "a refused transaction changed the state");
  }
};

auto transfer(const aicon::identity& to, uint64_t amount) {
  return [&to, amount](schema::Transaction::Body::Builder b) {
    auto t = b.initTransfer();
    t.setTo(bytes(to.id()));
    t.setAmount(amount);
  };
}

} // namespace

namespace std {
inline std::ostream& operator<<(std::ostream& os, const std::optional<aicon::ledger::rule>& r) {
  return os << (r ? aicon::ledger::to_string(*r) : "none");
}
} // namespace std

BOOST_AUTO_TEST_SUITE(ledger)

BOOST_AUTO_TEST_CASE(transfers_move_balances_and_bump_nonces) {
  chain c;
  BOOST_TEST(!c.apply(c.tx(c.alice, transfer(c.bob, 300))));
  BOOST_TEST(c.balance(c.alice) == 700u);
  BOOST_TEST(c.balance(c.bob) == 800u);
  BOOST_TEST(c.st.get_account(c.alice.id())->nonce == 1u);
  BOOST_TEST(!c.apply(c.tx(c.alice, transfer(c.alice, 50)))); // to yourself: no change
  BOOST_TEST(c.balance(c.alice) == 700u);
  BOOST_TEST(c.st.get_totals()->supply == 1600u);
}

BOOST_AUTO_TEST_CASE(each_signature_and_nonce_rule_names_itself) {
  chain c;
  auto good = c.tx(c.alice, transfer(c.bob, 1));
  // Forged: flip one byte of the signature.
  auto forged_env = test::with_forged_signature(good);
  c.expect_refused(forged_env, rule::bad_signature);
  // Signed by someone else in alice's name.
  auto impostor = make_envelope<schema::SignedTransaction>([&](schema::SignedTransaction::Builder b) {
    opened<schema::SignedTransaction> src{good};
    b.setTx(src->getTx());
    auto sig = c.carol.sign(signing_bytes(src->getTx()));
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
  c.expect_refused(impostor, rule::bad_signature);
  BOOST_TEST(!c.apply(good));
  c.expect_refused(good, rule::replayed_nonce); // the same bytes again
  c.expect_refused(c.tx(c.alice, transfer(c.bob, 1), 5), rule::skipped_nonce);
  c.expect_refused(c.tx(c.alice, transfer(c.bob, 1), 0), rule::replayed_nonce);
  // Signed for another chain: refused, whatever else is right about it.
  c.expect_refused(make_signed_transaction(c.alice, id32(0xc5), c.nonces[c.alice.id()] + 1,
                                           transfer(c.bob, 1)),
                   rule::wrong_chain);
}

BOOST_AUTO_TEST_CASE(each_amount_rule_names_itself) {
  chain c;
  c.expect_refused(c.tx(c.alice, transfer(c.bob, 1001)), rule::overdraft);
  c.expect_refused(c.tx(c.alice, transfer(c.bob, 0)), rule::zero_amount);
  c.expect_refused(c.tx(c.carol, transfer(c.bob, 1)), rule::overdraft); // no account at all
  // (A transfer can never overflow a balance: balances sum to the supply,
  // which fits in 64 bits; a mint is bounded by an escrow, so by the supply.)
  auto job = id32(3);
  BOOST_TEST(!c.apply(c.tx(c.alice, [&](auto b) {
    auto l = b.initEscrowLock();
    l.setJobId(bytes(job));
    l.setAmount(100);
  })));
  c.expect_refused(c.tx(c.rater, [&](auto b) {
    auto m = b.initMintReward();
    m.setJobId(bytes(job));
    auto p = m.initPayouts(2);
    p[0].setTo(bytes(c.alice.id()));
    p[0].setAmount(UINT64_MAX / 2 + 1);
    p[1].setTo(bytes(c.bob.id()));
    p[1].setAmount(UINT64_MAX / 2 + 1);
  }), rule::amount_overflow); // the payouts' own sum overflows
}

BOOST_AUTO_TEST_CASE(escrow_lock_and_settle) {
  chain c;
  auto job = id32(1);
  auto lock = [&](uint64_t amount) {
    return [&, amount](schema::Transaction::Body::Builder b) {
      auto l = b.initEscrowLock();
      l.setJobId(bytes(job));
      l.setAmount(amount);
    };
  };
  auto settle = [&](std::vector<std::pair<const aicon::identity*, uint64_t>> pays) {
    return [&, pays](schema::Transaction::Body::Builder b) {
      auto s = b.initSettle();
      s.setJobId(bytes(job));
      auto p = s.initPayouts(static_cast<unsigned>(pays.size()));
      for (unsigned i = 0; i < pays.size(); ++i) {
        p[i].setTo(bytes(pays[i].first->id()));
        p[i].setAmount(pays[i].second);
      }
    };
  };
  c.expect_refused(c.tx(c.alice, settle({{&c.bob, 1}})), rule::unknown_escrow);
  BOOST_TEST(!c.apply(c.tx(c.alice, lock(400))));
  BOOST_TEST(c.balance(c.alice) == 600u);
  BOOST_TEST(c.st.get_totals()->supply == 1600u); // escrow is still supply
  c.expect_refused(c.tx(c.alice, lock(10)), rule::escrow_exists);
  c.expect_refused(c.tx(c.bob, settle({{&c.bob, 400}})), rule::not_escrow_payer);
  c.expect_refused(c.tx(c.alice, settle({{&c.bob, 300}, {&c.carol, 101}})),
                   rule::settle_exceeds_escrow);
  BOOST_TEST(!c.apply(c.tx(c.alice, settle({{&c.bob, 300}, {&c.carol, 50}}))));
  BOOST_TEST(c.balance(c.bob) == 800u);
  BOOST_TEST(c.balance(c.carol) == 50u);
  BOOST_TEST(c.balance(c.alice) == 650u); // 50 refunded
  // The record stays, settled and empty: the job's terms for the reward and
  // slash rules, and no second settlement.
  auto done = c.st.get_escrow(job)->value();
  BOOST_TEST(done.settled);
  BOOST_TEST(done.amount == 0u);
  BOOST_TEST(done.locked == 400u);
  c.expect_refused(c.tx(c.alice, settle({{&c.bob, 1}})), rule::escrow_settled);
  c.expect_refused(c.tx(c.alice, lock(10)), rule::escrow_exists); // a job id is used once
  BOOST_TEST(c.st.get_totals()->supply == 1600u);
}

BOOST_AUTO_TEST_CASE(mint_and_slash_follow_the_genesis_rules_not_the_authority) {
  // An authority's signature is not enough: a mint is for an escrowed job,
  // once, at most reward_percent (30) of its escrow; a slash names an
  // escrowed job, once per target, and its amount is the rule's
  // (slash_percent, 50, of the target's stake), never the author's.
  chain c;
  auto job = id32(1), other = id32(2);
  BOOST_TEST(!c.apply(c.tx(c.alice, [&](auto b) {
    auto l = b.initEscrowLock();
    l.setJobId(bytes(job));
    l.setAmount(200);
  })));
  auto mint = [&](const aicon::identity& to, uint64_t amount, const hash256& for_job) {
    return [&to, amount, for_job](schema::Transaction::Body::Builder b) {
      auto m = b.initMintReward();
      m.setJobId(bytes(for_job));
      auto p = m.initPayouts(1);
      p[0].setTo(bytes(to.id()));
      p[0].setAmount(amount);
    };
  };
  auto slash = [&](const aicon::identity& who, uint64_t amount, const hash256& for_job) {
    return [&who, amount, for_job](schema::Transaction::Body::Builder b) {
      auto s = b.initSlash();
      s.setTarget(bytes(who.id()));
      s.setAmount(amount);
      s.setJobId(bytes(for_job));
      s.setReason("failed verification");
    };
  };
  c.expect_refused(c.tx(c.alice, mint(c.alice, 5, job)), rule::not_authority);
  c.expect_refused(c.tx(c.alice, slash(c.bob, 0, job)), rule::not_authority);
  c.expect_refused(c.tx(c.rater, mint(c.carol, 5, other)), rule::unknown_escrow);
  c.expect_refused(c.tx(c.rater, [&](auto b) {
    auto p = b.initMintReward().initPayouts(1); // no job at all
    p[0].setTo(bytes(c.carol.id()));
    p[0].setAmount(1);
  }), rule::malformed);
  c.expect_refused(c.tx(c.rater, mint(c.carol, 61, job)), rule::reward_exceeds_rule); // > 30%
  c.expect_refused(c.tx(c.rater, mint(c.carol, 1'000'000'000'000, job)),
                   rule::reward_exceeds_rule);
  BOOST_TEST(!c.apply(c.tx(c.rater, mint(c.carol, 60, job))));
  c.expect_refused(c.tx(c.rater, mint(c.carol, 1, job)), rule::already_rewarded);
  c.expect_refused(c.tx(c.rater, slash(c.bob, 100, job)), rule::slash_not_by_rule);
  c.expect_refused(c.tx(c.rater, slash(c.bob, 0, other)), rule::unknown_escrow);
  c.expect_refused(c.tx(c.rater, slash(c.carol, 0, job)), rule::zero_amount); // no stake
  BOOST_TEST(!c.apply(c.tx(c.rater, slash(c.bob, 0, job))));
  c.expect_refused(c.tx(c.rater, slash(c.bob, 0, job)), rule::already_slashed);
  auto t = *c.st.get_totals();
  BOOST_TEST(t.minted == 1660u);
  BOOST_TEST(t.slashed == 50u);
  BOOST_TEST(t.supply == 1610u);
  BOOST_TEST(c.st.get_account(c.bob.id())->stake == 50u);
  // Settling does not reopen the reward, and a mint after the settlement
  // still finds the job's terms (the rater's mint may land after it).
  BOOST_TEST(!c.apply(c.tx(c.alice, [&](auto b) {
    auto s = b.initSettle();
    s.setJobId(bytes(job));
  })));
  c.expect_refused(c.tx(c.rater, mint(c.carol, 1, job)), rule::already_rewarded);
  // Stake moves balance to stake.
  BOOST_TEST(!c.apply(c.tx(c.alice, [](auto b) { b.initStake().setAmount(100); })));
  BOOST_TEST(c.st.get_account(c.alice.id())->stake == 100u);
  c.expect_refused(c.tx(c.alice, [](auto b) { b.initStake().setAmount(5000); }), rule::overdraft);
}

BOOST_AUTO_TEST_CASE(an_agent_settles_within_the_payers_terms_and_only_before_the_deadline) {
  chain c;
  // alice pays, carol's job host runs the job (the agent), bob trains; the
  // dataset (asset 5) is registered by bob at price 30.
  auto& agent = c.carol;
  auto dataset = id32(5);
  BOOST_TEST(!c.apply(c.tx(c.bob, [&](schema::Transaction::Body::Builder b) {
    auto r = b.initAssetRegister();
    auto meta = id32(105);
    r.setAssetId(bytes(dataset));
    r.setMetadataHash(bytes(meta));
    r.setKind("dataset");
    r.setPrice(30);
  })));
  auto lock = [&](const hash256& job, uint64_t amount, uint64_t max_price, uint64_t units,
                  uint64_t deadline) {
    return [&, job, amount, max_price, units, deadline](schema::Transaction::Body::Builder b) {
      auto l = b.initEscrowLock();
      l.setJobId(bytes(job));
      l.setAmount(amount);
      auto t = l.initTerms();
      t.setAgent(bytes(agent.id()));
      t.setMaxPrice(max_price);
      t.setUnits(units);
      t.setDeadlineMs(deadline);
      t.initAssets(1).set(0, bytes(dataset));
    };
  };
  auto settle = [&](const hash256& job, std::vector<std::pair<const aicon::identity*, uint64_t>> pays) {
    return [&, job, pays](schema::Transaction::Body::Builder b) {
      auto s = b.initSettle();
      s.setJobId(bytes(job));
      auto p = s.initPayouts(static_cast<unsigned>(pays.size()));
      for (unsigned i = 0; i < pays.size(); ++i) {
        p[i].setTo(bytes(pays[i].first->id()));
        p[i].setAmount(pays[i].second);
      }
    };
  };
  auto job = id32(1);
  // Terms that pay more than the lock, nothing, or end before they begin.
  c.expect_refused(c.tx(c.alice, lock(job, 100, 11, 10, c.time_ms + 5000)),
                   rule::terms_exceed_escrow);
  c.expect_refused(c.tx(c.alice, lock(job, 100, 0, 10, c.time_ms + 5000)),
                   rule::terms_exceed_escrow);
  c.expect_refused(c.tx(c.alice, lock(job, 100, 5, 10, c.time_ms)), rule::terms_exceed_escrow);
  BOOST_TEST(!c.apply(c.tx(c.alice, lock(job, 200, 10, 10, c.time_ms + 5000))));
  BOOST_TEST(c.st.get_escrow(job)->value().terms->agent == agent.id());
  // Until the deadline: only the agent settles (not the payer, not bob).
  c.expect_refused(c.tx(c.alice, settle(job, {})), rule::escrow_has_agent);
  c.expect_refused(c.tx(c.bob, settle(job, {{&c.bob, 10}})), rule::not_escrow_payer);
  // Trainers' pay above maxPrice x units (100): refused, even though the
  // escrow (200) could cover it; bob's 30 as the dataset's owner is allowed.
  c.expect_refused(c.tx(agent, settle(job, {{&c.bob, 131}})), rule::settle_exceeds_terms);
  c.expect_refused(c.tx(agent, settle(job, {{&c.bob, 120}, {&agent, 11}})),
                   rule::settle_exceeds_terms);
  auto alice_before = c.balance(c.alice), bob_before = c.balance(c.bob);
  BOOST_TEST(!c.apply(c.tx(agent, settle(job, {{&c.bob, 130}}))));
  BOOST_TEST(c.balance(c.bob) == bob_before + 130);
  BOOST_TEST(c.balance(c.alice) == alice_before + 70); // the rest to the payer, not the agent
  BOOST_TEST(c.balance(agent) == 0u);
  c.expect_refused(c.tx(agent, settle(job, {})), rule::escrow_settled);
  // The agent registers the trained model for the payer, once; no one
  // else may register in the payer's name.
  auto model_asset = [&](uint8_t n, const char* kind) {
    return [&, n, kind](schema::Transaction::Body::Builder b) {
      auto r = b.initAssetRegister();
      auto id = id32(n);
      r.setAssetId(bytes(id));
      r.setMetadataHash(bytes(id));
      r.setKind(kind);
      r.setForJob(bytes(job));
    };
  };
  c.expect_refused(c.tx(c.bob, model_asset(40, "trained-model")), rule::not_escrow_agent);
  c.expect_refused(c.tx(agent, model_asset(40, "dataset")), rule::not_escrow_agent);
  BOOST_TEST(!c.apply(c.tx(agent, model_asset(40, "trained-model"))));
  BOOST_TEST(c.st.get_asset(id32(40))->value().owner == c.alice.id());
  c.expect_refused(c.tx(agent, model_asset(41, "trained-model")), rule::not_escrow_agent);
  // Past the deadline: the agent can no longer settle, the payer only
  // refund the whole escrow.
  auto late = id32(2);
  BOOST_TEST(!c.apply(c.tx(c.alice, lock(late, 100, 10, 10, c.time_ms + 5000))));
  c.time_ms += 5001;
  c.expect_refused(c.tx(agent, settle(late, {{&c.bob, 10}})), rule::escrow_expired);
  c.expect_refused(c.tx(c.alice, settle(late, {{&c.bob, 10}})), rule::refund_only);
  alice_before = c.balance(c.alice);
  BOOST_TEST(!c.apply(c.tx(c.alice, settle(late, {}))));
  BOOST_TEST(c.balance(c.alice) == alice_before + 100);
  BOOST_TEST(c.st.get_totals()->supply == 1600u);
  // The terms survive the store's encoding (LMDB and memory agree on it).
  auto e = c.st.get_escrow(late)->value();
  BOOST_TEST(e.terms->max_price == 10u);
  BOOST_TEST(e.terms->assets.size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_double_vote_is_evidence_and_slashes_the_voter_once) {
  chain c;
  auto vote = [&](const aicon::identity& signer, const node_id& voter, uint64_t height,
                  const hash256& block, uint32_t round = 0,
                  schema::VoteKind kind = schema::VoteKind::PRECOMMIT) {
    return [&signer, voter, height, block, round, kind](schema::Vote::Builder v) {
      v.setHeight(height);
      v.setBlockHash(kj::arrayPtr(block.data(), 32));
      v.setVoter(kj::arrayPtr(voter.bytes.data(), 32));
      v.setRound(round);
      v.setKind(kind);
      auto sig = signer.sign(vote_signing_bytes(height, round, kind, block));
      v.setSignature(kj::arrayPtr(sig.data(), sig.size()));
    };
  };
  using vote_fn = std::function<void(schema::Vote::Builder)>;
  auto evidence = [&](vote_fn a, vote_fn b) {
    return [a, b](schema::Transaction::Body::Builder body) {
      auto d = body.initDoubleVote();
      a(d.initA());
      b(d.initB());
    };
  };
  auto x = id32(0x11), y = id32(0x22);
  auto& bob = c.bob; // a validator with stake 100
  c.expect_refused(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x), vote(bob, bob.id(), 7, x))),
                   rule::bad_evidence); // the same block twice
  c.expect_refused(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x), vote(bob, bob.id(), 8, y))),
                   rule::bad_evidence); // two heights
  c.expect_refused(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x, 0), vote(bob, bob.id(), 7, y, 1))),
                   rule::bad_evidence); // two rounds: an honest member may change its vote
  c.expect_refused(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x, 0, schema::VoteKind::PREVOTE),
                                          vote(bob, bob.id(), 7, y, 0))),
                   rule::bad_evidence); // a prevote and a precommit
  c.expect_refused(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x), vote(c.carol, bob.id(), 7, y))),
                   rule::bad_evidence); // one vote forged in bob's name
  c.expect_refused(c.tx(c.alice, evidence(vote(c.carol, c.carol.id(), 7, x),
                                          vote(c.carol, c.carol.id(), 7, y))),
                   rule::zero_amount); // carol has no stake
  auto supply = c.st.get_totals()->supply;
  BOOST_TEST(!c.apply(c.tx(c.alice, evidence(vote(bob, bob.id(), 7, x), vote(bob, bob.id(), 7, y)))));
  BOOST_TEST(c.st.get_account(bob.id())->stake == 50u); // slash_percent 50
  BOOST_TEST(c.st.get_totals()->supply == supply - 50);
  BOOST_TEST(c.st.get_totals()->slashed == 50u);
  BOOST_TEST(c.balance(c.alice) == 1000u); // the reporter earns nothing
  // Once per (voter, height), whoever reports it, in whichever order.
  c.expect_refused(c.tx(c.carol, evidence(vote(bob, bob.id(), 7, y), vote(bob, bob.id(), 7, x))),
                   rule::already_punished);
  BOOST_TEST(!c.apply(c.tx(c.alice, evidence(vote(bob, bob.id(), 9, x), vote(bob, bob.id(), 9, y)))));
  BOOST_TEST(c.st.get_account(bob.id())->stake == 25u);
}

BOOST_AUTO_TEST_CASE(assets_belong_to_whoever_registered_or_received_them) {
  chain c;
  auto reg = [&](uint8_t n) {
    return [n](schema::Transaction::Body::Builder b) {
      auto r = b.initAssetRegister();
      auto id = id32(n), meta = id32(100 + n);
      r.setAssetId(kj::arrayPtr(id.data(), 32));
      r.setMetadataHash(kj::arrayPtr(meta.data(), 32));
      r.setKind("dataset");
      r.setPrice(40u + n);
    };
  };
  auto give = [&](uint8_t n, const aicon::identity& to) {
    return [n, &to](schema::Transaction::Body::Builder b) {
      auto t = b.initAssetTransfer();
      auto id = id32(n);
      t.setAssetId(kj::arrayPtr(id.data(), 32));
      t.setTo(bytes(to.id()));
    };
  };
  BOOST_TEST(!c.apply(c.tx(c.alice, reg(7))));
  c.expect_refused(c.tx(c.bob, reg(7)), rule::asset_exists);
  c.expect_refused(c.tx(c.bob, give(7, c.bob)), rule::not_asset_owner);
  c.expect_refused(c.tx(c.bob, give(8, c.bob)), rule::unknown_asset);
  BOOST_TEST(!c.apply(c.tx(c.alice, give(7, c.bob))));
  BOOST_TEST(c.st.get_asset(id32(7))->value().owner == c.bob.id());
  BOOST_TEST(c.st.get_asset(id32(7))->value().price == 47u); // the price stays with the asset
  c.expect_refused(c.tx(c.alice, give(7, c.alice)), rule::not_asset_owner);
}

BOOST_AUTO_TEST_CASE(malformed_fields_are_refused) {
  chain c;
  c.expect_refused(c.tx(c.alice, [](auto b) {
    auto t = b.initTransfer();
    t.initTo(31);
    t.setAmount(1);
  }), rule::malformed);
  c.expect_refused(c.tx(c.alice, [](auto b) {
    auto r = b.initAssetRegister();
    r.initAssetId(32);
    r.initMetadataHash(32);
  }), rule::malformed); // empty kind
}

BOOST_AUTO_TEST_CASE(randomized_supply_is_conserved) {
  // 10,000 mixed transactions, valid and invalid; supply changes exactly by
  // minted minus slashed, and balances + stakes + escrows always equal it.
  uint64_t seed = 20261122;
  BOOST_TEST_MESSAGE("seed " << seed);
  std::mt19937_64 rng{seed};
  chain c;
  std::vector<aicon::identity> people{c.alice, c.bob, c.carol, wallet(4), wallet(5), c.rater};
  // Funds for everyone: mints are scarce now (an escrowed job, once, 30%).
  std::vector<genesis_entry> funds;
  for (auto& p : people)
    funds.push_back({p.id(), 20'000, 0});
  BOOST_REQUIRE(!apply_genesis(c.st, funds));
  auto initial = c.st.get_totals()->supply;
  auto initial_minted = c.st.get_totals()->minted;
  size_t accepted = 0;
  uint32_t next_job = 0;
  auto job_id = [](uint32_t k) {
    hash256 h{};
    std::memcpy(h.data(), &k, sizeof(k));
    h[31] = 0x77;
    return h;
  };
  auto recent_job = [&] { return job_id(next_job - std::min<uint32_t>(next_job, rng() % 8 + 1)); };
  for (int i = 0; i < 10000; ++i) {
    auto& who = people[rng() % people.size()];
    auto& other = people[rng() % people.size()];
    uint64_t amount = rng() % 300;
    aicon::envelope env;
    switch (rng() % 7) {
      case 0:
      case 1: env = c.tx(who, transfer(other, amount)); break;
      case 2: {
        // Job ids are used once: a fresh one now and then, else a recent one
        // (refused: escrow_exists).
        auto job = rng() % 4 ? job_id(next_job++) : recent_job();
        env = c.tx(who, [&](auto b) {
          auto l = b.initEscrowLock();
          l.setJobId(bytes(job));
          l.setAmount(amount);
        });
        break;
      }
      case 3: {
        auto job = recent_job();
        env = c.tx(who, [&](auto b) {
          auto s = b.initSettle();
          s.setJobId(bytes(job));
          auto p = s.initPayouts(1);
          p[0].setTo(bytes(other.id()));
          p[0].setAmount(amount);
        });
        break;
      }
      case 4:
        env = c.tx(rng() % 2 ? c.rater : who, [&](auto b) {
          auto m = b.initMintReward();
          m.setJobId(bytes(recent_job()));
          auto p = m.initPayouts(1);
          p[0].setTo(bytes(other.id()));
          p[0].setAmount(amount / 4);
        });
        break;
      case 5: env = c.tx(who, [&](auto b) { b.initStake().setAmount(amount); }); break;
      default:
        env = c.tx(rng() % 2 ? c.rater : who, [&](auto b) {
          auto s = b.initSlash();
          s.setTarget(bytes(other.id()));
          s.setJobId(bytes(recent_job()));
          s.setAmount(rng() % 4 ? 0 : amount / 4);
        });
        break;
    }
    // Now and then replay an old nonce.
    if (rng() % 50 == 0)
      env = c.tx(who, transfer(other, 1), 1);
    if (!c.apply(env))
      ++accepted;
    auto t = *c.st.get_totals();
    BOOST_REQUIRE_EQUAL(t.supply, initial + (t.minted - initial_minted) - t.slashed);
  }
  // Audit: every unit is somewhere.
  auto t = *c.st.get_totals();
  unsigned __int128 held = 0;
  for (auto& [who, a] : c.st.accounts())
    held += static_cast<unsigned __int128>(a.balance) + a.stake;
  for (uint32_t j = 0; j < next_job; ++j)
    if (auto e = *c.st.get_escrow(job_id(j)))
      held += e->amount;
  BOOST_TEST((held == t.supply));
  BOOST_TEST(accepted > 2000u);
  BOOST_TEST(accepted < 9500u);
}

BOOST_AUTO_TEST_CASE(lmdb_and_memory_agree_and_aborts_change_nothing) {
  test::temp_dir dir;
  auto env = store::environment::open(dir.path());
  BOOST_REQUIRE_MESSAGE(env, test::why(env));
  chain mem;
  auto alice = mem.alice, bob = mem.bob;
  {
    auto t = store::txn::begin(**env, true);
    BOOST_REQUIRE(t);
    lmdb_store st{*t};
    BOOST_REQUIRE(!apply_genesis(st, {{alice.id(), 1000, 0}, {bob.id(), 500, 100}}));
    BOOST_REQUIRE(!t->commit());
  }
  std::vector<aicon::envelope> txs;
  for (int i = 0; i < 20; ++i) {
    txs.push_back(mem.tx(i % 2 ? alice : bob, transfer(i % 2 ? bob : alice, 7)));
    BOOST_REQUIRE(!mem.apply(txs.back()));
  }
  // An escrow that is rewarded, slashed for and settled: its whole record
  // (terms, flags, slashed targets) must read back the same from LMDB.
  auto job = id32(9);
  txs.push_back(mem.tx(alice, [&](auto b) {
    auto l = b.initEscrowLock();
    l.setJobId(bytes(job));
    l.setAmount(100);
  }));
  BOOST_REQUIRE(!mem.apply(txs.back()));
  txs.push_back(mem.tx(mem.rater, [&](auto b) {
    auto m = b.initMintReward();
    m.setJobId(bytes(job));
    auto p = m.initPayouts(1);
    p[0].setTo(bytes(bob.id()));
    p[0].setAmount(30);
  }));
  BOOST_REQUIRE(!mem.apply(txs.back()));
  txs.push_back(mem.tx(mem.rater, [&](auto b) {
    auto s = b.initSlash();
    s.setTarget(bytes(bob.id()));
    s.setJobId(bytes(job));
  }));
  BOOST_REQUIRE(!mem.apply(txs.back()));
  BOOST_REQUIRE(mem.apply(mem.tx(mem.rater, [&](auto b) { // a second one is refused
    auto s = b.initSlash();
    s.setTarget(bytes(bob.id()));
    s.setJobId(bytes(job));
  })));
  {
    auto t = store::txn::begin(**env, true);
    lmdb_store st{*t};
    for (auto& e : txs) {
      opened<schema::SignedTransaction> stx{e};
      BOOST_REQUIRE(!apply_transaction(st, mem.params, stx.root()));
    }
    BOOST_TEST((*st.state_root() == *mem.st.state_root()));
    auto e = st.get_escrow(job);
    BOOST_REQUIRE(e && e->has_value());
    BOOST_TEST((**e == **mem.st.get_escrow(job)));
    BOOST_TEST((*e)->slashed.size() == 1u);
    BOOST_TEST((*e)->rewarded);
    BOOST_REQUIRE(!t->commit());
  }
  hash256 committed;
  {
    auto t = store::txn::begin(**env, false);
    lmdb_store st{*t};
    committed = *st.state_root();
    BOOST_TEST((committed == *mem.st.state_root()));
  }
  // A write transaction that is dropped leaves no trace.
  {
    auto t = store::txn::begin(**env, true);
    lmdb_store st{*t};
    BOOST_REQUIRE(!apply_transaction(st, mem.params,
                                     opened<schema::SignedTransaction>{
                                       mem.tx(alice, transfer(bob, 1))}.root()));
    BOOST_TEST((*st.state_root() != committed));
  } // aborted here
  auto t = store::txn::begin(**env, false);
  lmdb_store st{*t};
  BOOST_TEST((*st.state_root() == committed));
}

BOOST_AUTO_TEST_SUITE_END()
