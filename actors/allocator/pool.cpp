#include "actors/allocator/pool.hpp"

#include <algorithm>
#include <queue>
#include <tuple>

#include <fmt/format.h>

namespace aicon::alloc {

void pool::set_rtt(const std::string& a, const std::string& b, double ms) {
  rtt_[{a, b}] = ms;
  rtt_[{b, a}] = ms;
}

double pool::rtt(const std::string& a, const std::string& b) const {
  if (a == b)
    return 0;
  auto it = rtt_.find({a, b});
  // An unmeasured pair counts as far (one second) rather than near.
  return it == rtt_.end() ? 1000.0 : it->second;
}

std::vector<std::tuple<std::string, std::string, double>> pool::rtts() const {
  std::vector<std::tuple<std::string, std::string, double>> out;
  for (auto& [k, ms] : rtt_)
    if (k.first < k.second)
      out.emplace_back(k.first, k.second, ms);
  return out;
}

bool pool::fits(const offer& o, const ask& a, int64_t now) const {
  return o.device == a.device && o.memory >= a.memory && o.price <= a.max_price
         && o.expires_ms >= now;
}

void pool::index_add(const held& h) {
  index_[h.o.device][h.o.site].insert({base_key(h.o), h.o.trainer});
}

void pool::index_remove(const held& h) {
  auto d = index_.find(h.o.device);
  if (d == index_.end())
    return;
  auto s = d->second.find(h.o.site);
  if (s == d->second.end())
    return;
  s->second.erase({base_key(h.o), h.o.trainer});
  if (s->second.empty())
    d->second.erase(s);
  if (d->second.empty())
    index_.erase(d);
}

std::string pool::put_offer(const offer& o) {
  if (o.slots == 0)
    return "an offer needs at least one slot";
  if (o.rating < 0 || o.rating > 1)
    return fmt::format("rating {} is outside 0..1", o.rating);
  auto it = offers_.find(o.trainer);
  if (it == offers_.end()) {
    auto& h = offers_[o.trainer];
    h.o = o;
    index_add(h);
    return {};
  }
  auto& h = it->second;
  if (o.slots < h.used)
    return fmt::format("offer of {} slots while {} are leased", o.slots, h.used);
  if (h.used < h.o.slots)
    index_remove(h);
  h.o = o;
  if (h.used < h.o.slots)
    index_add(h);
  return {};
}

std::optional<std::vector<std::pair<node_id, uint32_t>>>
pool::choose(const ask& a, int64_t now, const node_id* exclude) const {
  auto dev = index_.find(a.device);
  if (dev == index_.end())
    return std::nullopt;
  using set_it = std::set<slot_entry>::const_iterator;
  struct cursor {
    double score;
    node_id trainer;
    double site_cost;
    set_it it, end;
    bool operator>(const cursor& o) const {
      return std::tie(score, trainer) > std::tie(o.score, o.trainer);
    }
  };
  std::priority_queue<cursor, std::vector<cursor>, std::greater<>> heads;
  for (auto& [site, entries] : dev->second) {
    if (entries.empty())
      continue;
    double c = w_.rtt * rtt(site, a.data_site);
    auto it = entries.begin();
    heads.push({c + it->key, it->trainer, c, it, entries.end()});
  }
  std::vector<std::pair<node_id, uint32_t>> picks;
  uint32_t need = a.k;
  while (need > 0 && !heads.empty()) {
    auto cur = heads.top();
    heads.pop();
    auto& h = offers_.at(cur.trainer);
    if (fits(h.o, a, now) && !(exclude && *exclude == cur.trainer)) {
      auto take = std::min(need, h.o.slots - h.used);
      if (take > 0) {
        picks.emplace_back(cur.trainer, take);
        need -= take;
      }
    }
    if (++cur.it != cur.end) {
      cur.score = cur.site_cost + cur.it->key;
      cur.trainer = cur.it->trainer;
      heads.push(cur);
    }
  }
  if (need > 0)
    return std::nullopt;
  return picks;
}

std::vector<std::pair<node_id, uint32_t>> pool::choose_by_scan(const ask& a, int64_t now) const {
  // Every offer scored (site costs computed once per site), then the best
  // K entries partially sorted: each entry gives at least one slot.
  std::map<std::string, double> site_cost;
  std::vector<std::tuple<double, node_id, uint32_t>> all;
  for (auto& [id, h] : offers_) {
    if (!fits(h.o, a, now) || h.used >= h.o.slots)
      continue;
    auto c = site_cost.find(h.o.site);
    if (c == site_cost.end())
      c = site_cost.emplace(h.o.site, w_.rtt * rtt(h.o.site, a.data_site)).first;
    all.emplace_back(c->second + base_key(h.o), id, h.o.slots - h.used);
  }
  auto less = [](auto& x, auto& y) {
    return std::tie(std::get<0>(x), std::get<1>(x)) < std::tie(std::get<0>(y), std::get<1>(y));
  };
  auto top = std::min<size_t>(all.size(), a.k);
  std::partial_sort(all.begin(), all.begin() + static_cast<ptrdiff_t>(top), all.end(), less);
  std::vector<std::pair<node_id, uint32_t>> picks;
  uint32_t need = a.k;
  for (size_t i = 0; i < top && need > 0; ++i) {
    auto& [score, id, free] = all[i];
    auto take = std::min(need, free);
    picks.emplace_back(id, take);
    need -= take;
  }
  if (need > 0)
    picks.clear();
  return picks;
}

void pool::grant(const ask& a, const std::vector<std::pair<node_id, uint32_t>>& picks,
                 int64_t now, decision& d) {
  for (auto& [id, count] : picks) {
    auto& h = offers_.at(id);
    if (h.used + count == h.o.slots)
      index_remove(h);
    h.used += count;
    lease l{a.job, id, count, h.o.price, a.priority, now + a.lease_ms};
    leases_.emplace(a.job, l);
    d.leases.push_back(l);
  }
  if (!asks_.count(a.job))
    asks_[a.job] = a;
  d.what = decision::kind::granted;
}

decision pool::allocate(const ask& a, int64_t now) {
  decision d;
  if (a.k == 0) {
    d.why = "an ask needs k >= 1 trainers";
    return d;
  }
  if (leases_.count(a.job)) {
    d.why = "this job already holds trainers: renew, release or ask for a replacement";
    return d;
  }
  for (auto& w : waiting_)
    if (w.a.job == a.job) {
      d.what = decision::kind::waiting;
      d.why = "this job's ask is already waiting";
      return d;
    }
  // Asks already waiting for this device at this priority or above go
  // first (first come, first served): a big ask is not starved by small ones.
  size_t ahead = 0;
  for (auto& w : waiting_)
    ahead += w.a.device == a.device && w.a.priority >= a.priority ? 1 : 0;
  if (ahead == 0)
    if (auto picks = choose(a, now, nullptr)) {
      grant(a, *picks, now, d);
      return d;
    }
  // Not now: could it ever, and can it preempt?
  uint64_t total = 0, free = 0;
  for (auto& [id, h] : offers_)
    if (fits(h.o, a, now)) {
      total += h.o.slots;
      free += h.o.slots - h.used;
    }
  if (total < a.k) {
    d.why = fmt::format("only {} trainers in all match device '{}', memory >= {}, price <= {}; "
                        "{} asked",
                        total, a.device, a.memory, a.max_price, a.k);
    return d;
  }
  d.what = decision::kind::waiting;
  // Lower-priority jobs holding matching slots, lowest priority first.
  std::map<job_id, std::pair<uint32_t, uint64_t>> victims; // job -> priority, matching slots
  for (auto& [job, l] : leases_) {
    auto& h = offers_.at(l.trainer);
    if (l.priority < a.priority && fits(h.o, a, now)) {
      auto& v = victims[job];
      v.first = l.priority;
      v.second += l.count;
    }
  }
  std::vector<std::tuple<uint32_t, job_id, uint64_t>> order;
  for (auto& [job, v] : victims)
    order.emplace_back(v.first, job, v.second);
  std::sort(order.begin(), order.end());
  uint64_t reachable = free;
  for (auto& [prio, job, slots] : order) {
    if (reachable >= a.k)
      break;
    d.preempt.push_back(job);
    reachable += slots;
  }
  if (reachable < a.k)
    d.preempt.clear();
  waiting_.push_back({a, seq_++, !d.preempt.empty()});
  d.why = ahead > 0 ? fmt::format("{} trainers asked, {} free now: waiting behind {} earlier "
                                  "ask(s) at priority >= {}",
                                  a.k, free, ahead, a.priority)
          : d.preempt.empty()
            ? fmt::format("{} trainers asked, {} free now: waiting at priority {}", a.k, free,
                          a.priority)
            : fmt::format("{} trainers asked, {} free now: {} lower-priority job(s) asked to "
                          "checkpoint and release",
                          a.k, free, d.preempt.size());
  return d;
}

size_t pool::renew(const job_id& job, int64_t now, int64_t lease_ms) {
  size_t n = 0;
  for (auto [it, end] = leases_.equal_range(job); it != end; ++it, ++n)
    it->second.expires_ms = now + lease_ms;
  return n;
}

void pool::free_lease(const lease& l) {
  auto it = offers_.find(l.trainer);
  if (it == offers_.end())
    return;
  auto& h = it->second;
  bool was_full = h.used == h.o.slots;
  h.used -= std::min(h.used, l.count);
  if (was_full && h.used < h.o.slots)
    index_add(h);
}

void pool::serve_waiting(int64_t now, events& ev) {
  std::stable_sort(waiting_.begin(), waiting_.end(), [](const waiting& x, const waiting& y) {
    return std::tie(y.a.priority, x.seq) < std::tie(x.a.priority, y.seq);
  });
  // Strict order per device: an ask that cannot be served blocks the
  // lower ones of its device, so a big ask is not starved by small ones.
  std::set<std::string> blocked;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (blocked.count(it->a.device)) {
      ++it;
      continue;
    }
    auto picks = choose(it->a, now, nullptr);
    if (!picks) {
      blocked.insert(it->a.device);
      ++it;
      continue;
    }
    decision d;
    grant(it->a, *picks, now, d);
    ev.granted.emplace_back(it->a.job, std::move(d));
    it = waiting_.erase(it);
  }
}

events pool::release(const job_id& job, int64_t now) {
  events ev;
  for (auto [it, end] = leases_.equal_range(job); it != end; ++it)
    free_lease(it->second);
  leases_.erase(job);
  asks_.erase(job);
  std::erase_if(waiting_, [&](const waiting& w) { return w.a.job == job; });
  serve_waiting(now, ev);
  return ev;
}

decision pool::replace(const job_id& job, const node_id& lost, int64_t now) {
  decision d;
  auto it = asks_.find(job);
  if (it == asks_.end()) {
    d.why = "this job holds no trainers to replace";
    return d;
  }
  ask a = it->second;
  a.k = 1;
  if (auto picks = choose(a, now, &lost)) {
    grant(a, *picks, now, d);
    return d;
  }
  d.why = fmt::format("no free trainer matches device '{}', memory >= {}, price <= {}", a.device,
                      a.memory, a.max_price);
  return d;
}

events pool::tick(int64_t now) {
  events ev;
  // Offers that stopped heart-beating: gone, and so are their leases.
  for (auto it = offers_.begin(); it != offers_.end();) {
    auto& h = it->second;
    if (h.o.expires_ms >= now) {
      ++it;
      continue;
    }
    for (auto l = leases_.begin(); l != leases_.end();) {
      if (l->second.trainer == it->first) {
        ev.lost.emplace_back(l->first, it->first);
        l = leases_.erase(l);
      } else {
        ++l;
      }
    }
    if (h.used < h.o.slots)
      index_remove(h);
    it = offers_.erase(it);
  }
  // Leases their job did not renew.
  for (auto l = leases_.begin(); l != leases_.end();) {
    if (l->second.expires_ms >= now) {
      ++l;
      continue;
    }
    if (ev.expired.empty() || ev.expired.back() != l->first)
      ev.expired.push_back(l->first);
    free_lease(l->second);
    l = leases_.erase(l);
  }
  for (auto& job : ev.expired)
    if (!leases_.count(job))
      asks_.erase(job);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->a.deadline_ms > 0 && now > it->a.deadline_ms) {
      ev.refused.emplace_back(it->a.job, fmt::format("no {} trainers became free before the "
                                                     "deadline",
                                                     it->a.k));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  serve_waiting(now, ev);
  return ev;
}

std::vector<offer> pool::offers() const {
  std::vector<offer> out;
  for (auto& [id, h] : offers_)
    out.push_back(h.o);
  return out;
}

std::vector<lease> pool::leases() const {
  std::vector<lease> out;
  for (auto& [job, l] : leases_)
    out.push_back(l);
  return out;
}

std::vector<ask> pool::asks_held() const {
  std::vector<ask> out;
  for (auto& [job, a] : asks_)
    out.push_back(a);
  return out;
}

void pool::restore(const std::vector<offer>& offers, const std::vector<lease>& leases,
                   const std::vector<ask>& asks) {
  offers_.clear();
  index_.clear();
  leases_.clear();
  asks_.clear();
  waiting_.clear();
  for (auto& o : offers)
    offers_[o.trainer].o = o;
  for (auto& l : leases) {
    auto it = offers_.find(l.trainer);
    if (it == offers_.end())
      continue; // its offer is gone: the lease goes too
    it->second.used += l.count;
    leases_.emplace(l.job, l);
  }
  for (auto& a : asks)
    if (leases_.count(a.job))
      asks_[a.job] = a;
  for (auto& [id, h] : offers_)
    if (h.used < h.o.slots)
      index_add(h);
}

void pool::set_rating(const node_id& trainer, double rating) {
  auto it = offers_.find(trainer);
  if (it == offers_.end())
    return;
  auto& h = it->second;
  bool indexed = h.used < h.o.slots;
  if (indexed)
    index_remove(h);
  h.o.rating = std::clamp(rating, 0.0, 1.0);
  if (indexed)
    index_add(h);
}

size_t pool::free_slots() const {
  size_t n = 0;
  for (auto& [id, h] : offers_)
    n += h.o.slots - h.used;
  return n;
}

} // namespace aicon::alloc
