// Every limit and tunable of the runtime, each with its unit, default and
// reason. All can be set from the `[limits]` table of host.toml.
#pragma once

#include <cstdint>

namespace aicon {

struct limits {
  /// Largest envelope a host accepts or sends. 64 MiB fits one model shard or
  /// a gradient bucket with room to spare while bounding what one message can
  /// make a host allocate.
  uint64_t envelope_bytes_max = 64ull << 20;

  /// Cap'n Proto traversal limit when reading a message. Twice the largest
  /// envelope: validation walks every pointer once and the handler reads the
  /// fields again, while an amplification attack (many pointers to the same
  /// words) is still cut off.
  uint64_t traversal_words_max = 2 * ((64ull << 20) / 8);

  /// Cap'n Proto nesting limit; our schemas nest at most a few levels.
  uint32_t nesting_max = 64;

  /// Default timeout of a request between roles; long enough for a loaded
  /// 2-core host, short enough that a caller is never stuck.
  uint32_t request_timeout_ms = 10000;

  /// Interval of CAF's BASP heartbeats on every link.
  uint32_t heartbeat_interval_ms = 1000;

  /// A link that has not been heard from for this long is closed by CAF: three
  /// missed heartbeats, so a frozen or killed peer is noticed in seconds.
  uint32_t connection_timeout_ms = 3000;

  /// Timeout of one connection attempt (TCP + TLS + BASP handshake + hello).
  uint32_t connect_timeout_ms = 5000;

  /// First delay before reconnecting to a configured peer; doubles on every
  /// failure up to reconnect_max_ms.
  uint32_t reconnect_min_ms = 500;

  /// Largest delay between reconnect attempts.
  uint32_t reconnect_max_ms = 8000;

  /// An accepted connection that has received no byte for this long is cut.
  /// CAF 0.17 keeps a connection that never starts its handshake forever; a
  /// healthy link receives a heartbeat every heartbeat_interval_ms.
  uint32_t idle_connection_ms = 5000;

  /// An accepted connection that has not received this many bytes within
  /// handshake_deadline_ms is cut even if it trickles bytes: a mutual TLS
  /// 1.3 handshake with an Ed25519 client certificate plus CAF's BASP
  /// handshake sends well over 1 KiB.
  uint32_t handshake_bytes_min = 600;

  /// See handshake_bytes_min.
  uint32_t handshake_deadline_ms = 10000;

  /// Accepted connections allowed at once from one IP address; more are cut.
  uint32_t connections_per_address_max = 64;

  /// Period of the connection watchdog that enforces the two limits above.
  uint32_t watchdog_period_ms = 500;

  /// Longest delay an echo request may ask for.
  uint32_t echo_delay_ms_max = 60000;

  /// Delayed echo answers pending at once (each holds its payload).
  uint32_t echo_delayed_max = 256;

  /// How often the block generator looks at its round (tip, work, votes).
  uint32_t block_tick_ms = 100;

  /// Consensus round 0 waits this long for its proposer's proposal before
  /// prevoting nil (a silent proposer is replaced by the next round's);
  /// also how often a member sends its votes of the height again, since a
  /// quorum needs every vote eventually and a link may lose some.
  uint32_t block_takeover_ms = 3000;

  /// Once a quorum of a round's votes of one kind arrived, wait this long
  /// for the rest before moving on; every later round waits this much
  /// longer again (timeouts grow until messages arrive in time).
  uint32_t vote_wait_ms = 1000;

  /// Most transactions a generator puts in one block.
  uint32_t block_txs_max = 1000;

  /// Work receipts a generator holds while waiting for enough work.
  uint32_t receipt_pool_max = 10000;

  /// A validator refuses a proposal whose time is this far ahead of its clock.
  uint32_t clock_skew_ms_max = 10000;

  /// How often a ledger compares its tip with its peers' and fetches the
  /// blocks it lacks (catch-up after a restart or a missed broadcast).
  uint32_t ledger_sync_ms = 1000;

  /// Most blocks one catch-up round fetches from one peer.
  uint32_t sync_blocks_max = 512;

  /// Block requests a catching-up ledger keeps in flight to one peer; the
  /// answers are appended strictly in height order. One at a time costs a
  /// round trip per block.
  uint32_t sync_window = 16;

  /// Copies of every dataset a data node keeps on the network, its own
  /// included: one lost disk loses no data.
  uint32_t data_replicas = 2;

  /// Shares a trainer may ask for in one FetchShares, and so have in flight
  /// per data node: a slow trainer makes a data node hold at most this many
  /// shares (1 MiB each by default) for it.
  uint32_t stream_credits = 4;

  /// Share bytes per UploadShares message (well under envelope_bytes_max).
  uint64_t upload_batch_bytes = 8ull << 20;

  /// The largest model file a data node stores (`aicon model put`): one
  /// ModelPut carries the whole file, so at most half of envelope_bytes_max.
  uint64_t model_bytes_max = 32ull << 20;

  /// The most model-file bytes a data node keeps for one owner, all its
  /// models together: an admitted peer cannot fill the node's disk.
  uint64_t model_bytes_per_owner = 256ull << 20;

  /// The most model-file bytes a data node keeps in all: owner keys cost
  /// nothing to make, so the per-owner quota alone does not bound the disk.
  uint64_t model_bytes_total = 4ull << 30;

  /// Test-only fault ([faults] job_crash_before_settle in this host's own
  /// config, never from the wire): a job host exits between writing a
  /// job's settlement plan and submitting it.
  bool fault_job_crash_before_settle = false;
  /// Test-only fault ([faults] job_crash_after_settle): a job host exits
  /// once a job's settlement is final, before it registers the trained
  /// model and ends the job.
  bool fault_job_crash_after_settle = false;
  /// Test-only fault ([faults] job_crash_after_rating): a job host exits
  /// once the rater answered a job's verification, before it writes the
  /// settlement plan.
  bool fault_job_crash_after_rating = false;
  /// Test-only fault ([faults] rater_crash_after_deciding): a rater exits
  /// once a rating's decision is written, before any of its transactions
  /// is sent.
  bool fault_rater_crash_after_deciding = false;
  /// Test-only fault ([faults] trainer_cheat_weights): the cheating steps
  /// of trainer_cheat_percent compute their gradient at all-zero weights
  /// (nearly free for an MLP) and show those as the step's evidence,
  /// instead of sending noise.
  bool fault_trainer_cheat_weights = false;
  /// Test-only fault ([faults] trainer_hide_evidence): this host's trainers
  /// answer every evidence challenge with a "link down" error, as a host
  /// hiding steps it cannot show would (the rater must not take that code
  /// for its own finding that the host is out of reach).
  bool fault_trainer_hide_evidence = false;
  /// Test-only fault ([faults] trainer_poison_ring): on 20% of its steps a
  /// trainer of this host commits to its gradient in its log but sends its
  /// ring noise instead (signing the noise it sends, as a saboteur must
  /// for its partner to take it).
  bool fault_trainer_poison_ring = false;

  /// How often a data node challenges one peer holding a copy of its data
  /// to prove it still has a random share.
  uint32_t storage_challenge_ms = 30000;

  /// A trainer host sends its offer to every allocator it is linked to this
  /// often; the offer lives three times as long.
  uint32_t offer_heartbeat_ms = 1000;

  /// Trainers a trainer host offers at once, and its price per trainer per
  /// job step.
  uint32_t trainer_slots = 2;
  uint64_t trainer_price = 1;
  /// A running trainer whose coordinator sent nothing for this long (it
  /// died, or its client did) is dropped and its slot freed.
  uint32_t trainer_idle_ms = 120000;
  /// The evidence one trainer session keeps for the rater (the weights
  /// before each step of a verified job, in files under the data dir's
  /// evidence/): a run that would need more is refused by name.
  uint64_t trainer_evidence_bytes = 8ull << 30;
  /// Jobs a job host runs at once (each has a thread of its own); more are
  /// refused `busy`.
  uint32_t jobs_running_max = 16;

  /// Membership: every `gossip_ms` a host bumps its own signed heartbeat
  /// and swaps views with one random up peer; a member whose heartbeat has
  /// not advanced for `member_down_ms` is down. Every `ping_ms` it pings
  /// each up peer and keeps the round trip (exported to the allocator).
  uint32_t gossip_ms = 500;
  uint32_t member_down_ms = 3000;
  uint32_t ping_ms = 1000;

  /// The script role (on(event, fn) handlers run inside the host): console
  /// sessions at once (each a Lua state of its own), the memory one session
  /// may allocate, the Lua instructions one handler call may run before it
  /// is stopped, how long a session lives without a poll from its console,
  /// and the lines and replies kept for it between polls.
  uint32_t script_sessions_max = 16;
  uint64_t script_memory_bytes = 16ull << 20;
  uint64_t script_instructions_max = 5'000'000;
  /// Wall clock one handler call (or one poll's calls together) may take:
  /// a handler can never hold a host core for longer, whatever it calls.
  uint32_t script_wall_ms_max = 250;
  uint32_t script_idle_ms = 30000;
  uint32_t script_output_max = 1000;

  /// Fault injection for tests and demos of the rater, set only from this
  /// host's own `[faults]` table (trainer_cheat_percent): its trainers send
  /// random gradients on this percent of their steps, as a dishonest
  /// provider would. Never carried by any message.
  uint32_t fault_trainer_cheat_percent = 0;
};

} // namespace aicon
