#include "actors/block_generator/consensus.hpp"

#include <algorithm>
#include <cassert>

namespace aicon::consensus {

bool is_nil(const hash256& id) {
  return std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; });
}

uint32_t quorum_of(uint32_t n) {
  return (2 * n + 2) / 3;
}

machine::machine(node_id self, params p, app& a) : self_(self), p_(p), app_(a) {}

node_id machine::proposer(uint32_t round) const {
  assert(!committee_.empty());
  return committee_[round % committee_.size()];
}

std::optional<hash256> machine::signed_vote(uint32_t round, vote_kind k) const {
  auto it = signed_.find({round, static_cast<uint8_t>(k)});
  if (it == signed_.end())
    return std::nullopt;
  return it->second;
}

const proposal* machine::proposal_of(uint32_t round) const {
  auto it = proposals_.find(round);
  return it == proposals_.end() ? nullptr : &it->second;
}

bool machine::member() const {
  return in_committee(self_);
}

bool machine::in_committee(const node_id& n) const {
  return std::find(committee_.begin(), committee_.end(), n) != committee_.end();
}

outputs machine::new_height(uint64_t height, std::vector<node_id> committee,
                            std::optional<promise> restored) {
  height_ = height;
  committee_ = std::move(committee);
  quorum_ = quorum_of(static_cast<uint32_t>(committee_.size()));
  round_ = 0;
  step_ = step_propose;
  awake_ = false;
  proposed_ = false;
  decided_ = false;
  locked_round_ = valid_round_ = -1;
  locked_.reset();
  valid_.reset();
  signed_.clear();
  proposals_.clear();
  blocks_.clear();
  validity_.clear();
  votes_.clear();
  tally_.clear();
  prevote_timer_.clear();
  precommit_timer_.clear();
  locked_in_.clear();
  asked_.clear();
  outputs out;
  if (restored && restored->height == height) {
    locked_round_ = restored->locked_round;
    locked_ = restored->locked;
    valid_round_ = restored->valid_round;
    valid_ = restored->valid;
    signed_ = restored->signed_votes;
    for (auto* v : {&locked_, &valid_})
      if (*v)
        blocks_[(*v)->id] = **v;
    // Its own votes count again and are sent again (the caller re-signs
    // them on the way out: ed25519 signatures are deterministic).
    for (auto& [key, id] : signed_) {
      vote v;
      v.height = height;
      v.round = key.first;
      v.kind = static_cast<vote_kind>(key.second);
      v.id = id;
      v.voter = self_;
      votes_[key.first][key.second].emplace(self_, v);
      tally_[key][id].emplace(self_, v);
    }
    awake_ = true;
    start_round(restored->round, out);
    check_rules(out);
  }
  return out;
}

void machine::start_round(uint32_t r, outputs& out) {
  round_ = r;
  step_ = step_propose;
  proposed_ = false;
  if (committee_.empty() || !member())
    return;
  if (proposer(r) == self_)
    try_propose(out);
  start_timer(timer_kind::propose, p_.propose_ms + r * p_.round_delta_ms, out);
}

void machine::try_propose(outputs& out) {
  if (decided_ || proposed_ || step_ != step_propose || !member() || proposer(round_) != self_)
    return;
  proposal p;
  p.height = height_;
  p.round = round_;
  p.proposer = self_;
  if (valid_) {
    p.block = *valid_;
    p.pol_round = valid_round_;
    auto t = tally_.find({static_cast<uint32_t>(valid_round_), static_cast<uint8_t>(vote_kind::prevote)});
    if (t != tally_.end())
      if (auto votes = t->second.find(valid_->id); votes != t->second.end())
        for (auto& [_, v] : votes->second)
          p.pol.push_back(v);
  } else {
    auto b = app_.make_block(height_, round_);
    if (!b)
      return; // nothing to propose yet; asked again on the next poke
    p.block = *b;
  }
  proposed_ = true;
  blocks_[p.block.id] = p.block;
  proposals_[round_] = p;
  output o{output::type::broadcast_proposal};
  o.prop = p;
  out.push_back(std::move(o));
}

void machine::ask_commits(const node_id& peer, outputs& out) {
  if (!asked_.insert({peer, height_}).second)
    return;
  output o{output::type::send_commit_request};
  o.peer = peer;
  o.height = height_;
  out.push_back(std::move(o));
}

void machine::wake(outputs& out) {
  if (awake_)
    return;
  awake_ = true;
  start_round(round_, out);
}

void machine::start_timer(timer_kind t, uint64_t delay_ms, outputs& out) const {
  output o{output::type::start_timer};
  o.timer = t;
  o.height = height_;
  o.round = round_;
  o.delay_ms = delay_ms;
  out.push_back(std::move(o));
}

outputs machine::poke() {
  outputs out;
  if (decided_ || committee_.empty())
    return out;
  if (awake_)
    try_propose(out);
  else
    wake(out);
  check_rules(out);
  return out;
}

outputs machine::on_proposal(const proposal& p) {
  outputs out;
  if (p.height > height_) {
    ask_commits(p.proposer, out);
    return out;
  }
  if (p.height < height_ || decided_ || committee_.empty() || p.proposer != proposer(p.round)
      || p.pol_round >= static_cast<int32_t>(p.round) || p.pol_round < -1)
    return out;
  if (proposals_.count(p.round))
    return out; // the first proposal of a round stands (a second one is the proposer's equivocation)
  proposals_[p.round] = p;
  blocks_.emplace(p.block.id, p.block);
  for (auto& v : p.pol)
    if (v.height == height_ && static_cast<int32_t>(v.round) == p.pol_round
        && v.kind == vote_kind::prevote && v.id == p.block.id && in_committee(v.voter))
      add_vote(v, out);
  wake(out);
  check_rules(out);
  return out;
}

outputs machine::on_vote(const vote& v) {
  outputs out;
  if (v.height > height_) {
    ask_commits(v.voter, out);
    return out;
  }
  if (v.height < height_ || decided_ || !in_committee(v.voter))
    return out;
  add_vote(v, out);
  wake(out);
  check_rules(out);
  return out;
}

void machine::add_vote(const vote& v, outputs& out) {
  auto key = std::make_pair(v.round, static_cast<uint8_t>(v.kind));
  auto& by_voter = tally_[key][v.id];
  if (by_voter.count(v.voter))
    return; // a duplicate changes nothing
  by_voter.emplace(v.voter, v);
  auto& first = votes_[v.round][key.second];
  auto it = first.find(v.voter);
  if (it == first.end()) {
    first.emplace(v.voter, v);
  } else {
    output o{output::type::evidence};
    o.conflict = {it->second, v};
    out.push_back(std::move(o));
  }
}

outputs machine::on_commit(const commit& c) {
  outputs out;
  if (c.height != height_ || decided_ || is_nil(c.block.id))
    return out;
  std::set<node_id> voters;
  for (auto& v : c.precommits)
    if (v.height == c.height && v.round == c.round && v.kind == vote_kind::precommit
        && v.id == c.block.id && in_committee(v.voter))
      voters.insert(v.voter);
  if (voters.size() < quorum_ || !check_valid(c.block))
    return out;
  blocks_[c.block.id] = c.block;
  decided_ = true;
  output o{output::type::decide};
  o.decided = c;
  o.height = c.height;
  o.round = c.round;
  out.push_back(std::move(o));
  return out;
}

outputs machine::on_timeout(timer_kind t, uint64_t height, uint32_t round) {
  outputs out;
  if (height != height_ || round != round_ || decided_)
    return out;
  switch (t) {
    case timer_kind::propose:
      if (step_ == step_propose) {
        cast(vote_kind::prevote, hash256{}, out);
        step_ = step_prevote;
      }
      break;
    case timer_kind::prevote:
      if (step_ == step_prevote) {
        cast(vote_kind::precommit, hash256{}, out);
        step_ = step_precommit;
      }
      break;
    case timer_kind::precommit:
      start_round(round_ + 1, out);
      break;
  }
  check_rules(out);
  return out;
}

outputs machine::resend() const {
  outputs out;
  if (decided_ || !awake_ || !member())
    return out;
  if (auto p = proposals_.find(round_); p != proposals_.end() && p->second.proposer == self_) {
    output o{output::type::broadcast_proposal};
    o.prop = p->second;
    out.push_back(std::move(o));
  }
  // Every round of the height, not just this one: a proposal's proof of
  // lock points at the prevotes of an earlier round, which a member that
  // lost them needs again.
  for (auto& [r, kinds] : votes_)
    for (auto& [_, voters] : kinds)
      if (auto v = voters.find(self_); v != voters.end()) {
        output o{output::type::broadcast_vote};
        o.v = v->second;
        out.push_back(std::move(o));
      }
  return out;
}

void machine::save(outputs& out) {
  output o{output::type::persist};
  promise pr;
  pr.height = height_;
  pr.round = round_;
  pr.step = step_;
  pr.locked_round = locked_round_;
  pr.locked = locked_;
  pr.valid_round = valid_round_;
  pr.valid = valid_;
  pr.signed_votes = signed_;
  o.promise = std::move(pr);
  out.push_back(std::move(o));
}

void machine::cast(vote_kind k, const hash256& id, outputs& out) {
  if (!member())
    return;
  auto key = std::make_pair(round_, static_cast<uint8_t>(k));
  auto it = signed_.find(key);
  if (it != signed_.end() && it->second != id)
    return; // signed another block at this (round, kind) before a restart: never a second one
  bool fresh = it == signed_.end();
  if (fresh) {
    signed_[key] = id;
    save(out); // durable before the vote leaves
  }
  vote v;
  v.height = height_;
  v.round = round_;
  v.kind = k;
  v.id = id;
  v.voter = self_;
  output o{output::type::broadcast_vote};
  o.v = v;
  out.push_back(std::move(o));
  votes_[round_][static_cast<uint8_t>(k)].emplace(self_, v);
  tally_[{round_, static_cast<uint8_t>(k)}][id].emplace(self_, v);
}

uint32_t machine::count(uint32_t r, vote_kind k, const hash256& id) const {
  auto t = tally_.find({r, static_cast<uint8_t>(k)});
  if (t == tally_.end())
    return 0;
  auto votes = t->second.find(id);
  return votes == t->second.end() ? 0 : static_cast<uint32_t>(votes->second.size());
}

uint32_t machine::count_any(uint32_t r, vote_kind k) const {
  auto rr = votes_.find(r);
  if (rr == votes_.end())
    return 0;
  auto kk = rr->second.find(static_cast<uint8_t>(k));
  return kk == rr->second.end() ? 0 : static_cast<uint32_t>(kk->second.size());
}

std::optional<value> machine::known_block(const hash256& id) const {
  auto it = blocks_.find(id);
  if (it == blocks_.end())
    return std::nullopt;
  return it->second;
}

bool machine::check_valid(const value& v) {
  auto it = validity_.find(v.id);
  if (it != validity_.end())
    return it->second;
  bool ok = app_.valid(height_, v);
  validity_.emplace(v.id, ok);
  return ok;
}

void machine::decide(const value& v, uint32_t round, outputs& out) {
  decided_ = true;
  commit c;
  c.height = height_;
  c.round = round;
  c.block = v;
  for (auto& [_, vt] : tally_[{round, static_cast<uint8_t>(vote_kind::precommit)}][v.id])
    c.precommits.push_back(vt);
  output o{output::type::decide};
  o.decided = std::move(c);
  o.height = height_;
  o.round = round;
  out.push_back(std::move(o));
}

void machine::check_rules(outputs& out) {
  if (committee_.empty())
    return;
  // Each pass applies the rules of the algorithm once; a rule that changes
  // the state (a step, a round) makes another pass. Bounded: every change
  // advances (round, step), which only grows.
  for (int pass = 0; pass < 64 && !decided_; ++pass) {
    auto before = std::make_tuple(round_, step_, locked_round_, valid_round_);
    bool again = false;
    // Decide: a quorum of precommits of any round for a block this member holds.
    for (auto& [key, by_block] : tally_) {
      if (key.second != static_cast<uint8_t>(vote_kind::precommit))
        continue;
      for (auto& [id, voters] : by_block)
        if (!is_nil(id) && voters.size() >= quorum_)
          if (auto b = known_block(id); b && check_valid(*b)) {
            decide(*b, key.first, out);
            return;
          }
    }
    // Round skip: members beyond the skip threshold (more than the faulty
    // weight) are in a later round.
    uint32_t skip = static_cast<uint32_t>(committee_.size()) - quorum_ + 1;
    for (auto it = votes_.upper_bound(round_); it != votes_.end(); ++it) {
      std::set<node_id> who;
      for (auto& [_, voters] : it->second)
        for (auto& [n, _v] : voters)
          who.insert(n);
      if (auto pr = proposals_.find(it->first); pr != proposals_.end())
        who.insert(pr->second.proposer);
      if (who.size() >= skip) {
        start_round(it->first, out);
        again = true;
        break;
      }
    }
    if (again)
      continue;
    if (!awake_)
      return;
    auto prop = proposals_.find(round_);
    if (prop != proposals_.end() && step_ == step_propose) {
      auto& p = prop->second;
      auto& v = p.block;
      if (p.pol_round == -1) {
        bool ok = check_valid(v)
                  && (p_.mutation_ignore_lock || locked_round_ == -1 || locked_->id == v.id);
        step_ = step_prevote;
        cast(vote_kind::prevote, ok ? v.id : hash256{}, out);
      } else if (count(static_cast<uint32_t>(p.pol_round), vote_kind::prevote, v.id) >= quorum_) {
        bool ok = check_valid(v)
                  && (p_.mutation_ignore_lock || locked_round_ <= p.pol_round
                      || locked_->id == v.id);
        step_ = step_prevote;
        cast(vote_kind::prevote, ok ? v.id : hash256{}, out);
      }
    }
    if (step_ == step_prevote && count_any(round_, vote_kind::prevote) >= quorum_
        && prevote_timer_.insert(round_).second)
      start_timer(timer_kind::prevote, p_.vote_ms + round_ * p_.round_delta_ms, out);
    if (prop != proposals_.end() && step_ >= step_prevote && !locked_in_.count(round_)) {
      auto& v = prop->second.block;
      if (count(round_, vote_kind::prevote, v.id) >= quorum_ && check_valid(v)) {
        locked_in_.insert(round_);
        valid_ = v;
        valid_round_ = static_cast<int32_t>(round_);
        if (step_ == step_prevote) {
          locked_ = v;
          locked_round_ = static_cast<int32_t>(round_);
          step_ = step_precommit;
          cast(vote_kind::precommit, v.id, out); // persists the lock with the vote
        }
      }
    }
    if (step_ == step_prevote && count(round_, vote_kind::prevote, hash256{}) >= quorum_) {
      step_ = step_precommit;
      cast(vote_kind::precommit, hash256{}, out);
    }
    if (count_any(round_, vote_kind::precommit) >= quorum_
        && precommit_timer_.insert(round_).second)
      start_timer(timer_kind::precommit, p_.vote_ms + round_ * p_.round_delta_ms, out);
    if (before == std::make_tuple(round_, step_, locked_round_, valid_round_))
      break;
  }
}

} // namespace aicon::consensus
