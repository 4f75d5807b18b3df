// The Resource Allocator's book: offers, leases, waiting asks. Pure C++ (no
// CAF, no LMDB): the allocator role feeds it messages and the clock, and
// persists what it changes (allocator.hpp); the benchmark drives it alone.
//
// Offers: a trainer host advertises `slots` trainers of one device kind with
// memory, measured speed, a price per trainer and its site, valid until
// `expires_ms` and renewed by heartbeat. A job asks for K trainers with
// constraints (device, memory, max price) near its data (the site of the
// dataset's nearest replica). The answer is all K or nothing (gang): the
// K free slots with the lowest score
//   score = w_rtt x RTT(offer's site, data site) [ms] + w_price x price
//           - w_rating x rating
// ties broken by trainer id, so the choice is deterministic. If there are not
// K, the ask waits in priority order (then arrival); a higher-priority ask
// that lower-priority leases could satisfy preempts those jobs (they
// checkpoint, release and ask again: multi-task switching). Leases expire
// unless renewed; an offer that stops heart-beating loses its leases, and the
// job is told so and may ask for a replacement.
//
// Index: free slots are kept per (device, site) in a set ordered by the
// site-independent part of the score, so a decision walks the sites' sets
// in merged score order and stops after K hits: O(sites + K log n), not a
// scan over every offer (the benchmark shows both).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/identity.hpp"

namespace aicon::alloc {

using job_id = std::array<uint8_t, 32>;

struct offer {
  node_id trainer;
  std::string device = "cpu";  ///< "cpu", "gpu:h100", ...
  uint32_t slots = 1;          ///< trainers this host runs at once
  uint64_t memory = 0;         ///< bytes per trainer
  double samples_per_s = 0;    ///< measured on the reference model
  uint64_t price = 0;          ///< per trainer per job step
  std::string site;
  double rating = 0.5;         ///< 0..1, from the rater
  int64_t expires_ms = 0;
};

struct ask {
  job_id job{};
  uint32_t k = 1;
  std::string device = "cpu";
  uint64_t memory = 0;              ///< at least this per trainer
  uint64_t max_price = UINT64_MAX;  ///< per trainer
  std::string data_site;            ///< where the dataset's nearest replica is
  uint32_t priority = 0;            ///< higher preempts lower
  int64_t deadline_ms = 0;          ///< a waiting ask is refused after this (0: never)
  int64_t lease_ms = 30000;
};

struct lease {
  job_id job{};
  node_id trainer;
  uint32_t count = 1;       ///< slots of that trainer host
  uint64_t price = 0;       ///< per trainer, as offered
  uint32_t priority = 0;
  int64_t expires_ms = 0;
};

struct weights {
  double rtt = 1.0;     ///< per ms
  double price = 1.0;   ///< per token
  double rating = 10.0; ///< per unit of rating
};

struct decision {
  enum class kind { granted, waiting, refused } what = kind::refused;
  std::vector<lease> leases;   ///< granted: one per trainer host used
  std::vector<job_id> preempt; ///< waiting: jobs asked to checkpoint and release
  std::string why;             ///< waiting or refused: the reason
};

/// What changed on `tick` or `release`.
struct events {
  std::vector<std::pair<job_id, node_id>> lost;      ///< leases revoked (trainer silent)
  std::vector<job_id> expired;                        ///< leases the job did not renew
  std::vector<std::pair<job_id, decision>> granted;   ///< waiting asks now satisfied
  std::vector<std::pair<job_id, std::string>> refused; ///< waiting asks past their deadline
};

class pool {
public:
  explicit pool(weights w = {}) : w_(w) {
  }

  /// Measured round trip between two sites (symmetric). Same site: 0.
  void set_rtt(const std::string& a, const std::string& b, double ms);
  double rtt(const std::string& a, const std::string& b) const;
  /// Every pair set, each once (a < b).
  std::vector<std::tuple<std::string, std::string, double>> rtts() const;

  /// Adds or renews an offer (a heartbeat). Slots already leased stay
  /// leased; fewer slots than leased is refused.
  std::string put_offer(const offer& o);

  /// Gang allocation; see the header comment.
  decision allocate(const ask& a, int64_t now);

  /// Extends every lease of `job` to now + lease_ms; how many.
  size_t renew(const job_id& job, int64_t now, int64_t lease_ms);

  /// Frees every lease of `job` (and drops its waiting ask); then serves
  /// waiting asks.
  events release(const job_id& job, int64_t now);

  /// One trainer of a job whose host was lost: the best free slot under
  /// the job's original constraints, not on `lost`.
  decision replace(const job_id& job, const node_id& lost, int64_t now);

  /// Expires offers and leases, refuses waiting asks past their deadline,
  /// serves waiting asks.
  events tick(int64_t now);

  /// The state to persist and restore (restore rebuilds the index).
  std::vector<offer> offers() const;
  std::vector<lease> leases() const;
  std::vector<ask> asks_held() const; ///< the asks of jobs holding leases
  void restore(const std::vector<offer>& offers, const std::vector<lease>& leases,
               const std::vector<ask>& asks);

  size_t free_slots() const;
  /// Sets the rating (0..1) of `trainer`'s offer, if it has one.
  void set_rating(const node_id& trainer, double rating);

  /// The offer of `trainer`, if any.
  const offer* find_offer(const node_id& trainer) const {
    auto it = offers_.find(trainer);
    return it == offers_.end() ? nullptr : &it->second.o;
  }
  size_t offer_count() const {
    return offers_.size();
  }

  /// The same choice as allocate() by a scan over every offer (the
  /// benchmark's baseline and the tests' oracle); changes nothing.
  std::vector<std::pair<node_id, uint32_t>> choose_by_scan(const ask& a, int64_t now) const;

private:
  struct slot_entry {
    double key; ///< price/rating part of the score
    node_id trainer;
    auto operator<=>(const slot_entry&) const = default;
  };
  struct held {
    offer o;
    uint32_t used = 0;
  };
  double base_key(const offer& o) const {
    return w_.price * static_cast<double>(o.price) - w_.rating * o.rating;
  }
  bool fits(const offer& o, const ask& a, int64_t now) const;
  void index_add(const held& h);
  void index_remove(const held& h);
  std::optional<std::vector<std::pair<node_id, uint32_t>>>
  choose(const ask& a, int64_t now, const node_id* exclude) const;
  void grant(const ask& a, const std::vector<std::pair<node_id, uint32_t>>& picks, int64_t now,
             decision& d);
  void free_lease(const lease& l);
  void serve_waiting(int64_t now, events& ev);

  weights w_;
  std::map<std::pair<std::string, std::string>, double> rtt_;
  std::map<node_id, held> offers_;
  /// device -> site -> free slots ordered by base key.
  std::map<std::string, std::map<std::string, std::set<slot_entry>>> index_;
  std::multimap<job_id, lease> leases_;
  std::map<job_id, ask> asks_; ///< of jobs holding leases (for replacements)
  struct waiting {
    ask a;
    uint64_t seq;
    bool preempting = false;
  };
  std::vector<waiting> waiting_;
  uint64_t seq_ = 0;
};

} // namespace aicon::alloc
