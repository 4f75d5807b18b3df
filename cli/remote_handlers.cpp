#include "cli/remote_handlers.hpp"

#include <chrono>

#include <fmt/format.h>
#include <sodium.h>

#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/script.capnp.h"

namespace aicon {

namespace {

constexpr auto poll_period = std::chrono::milliseconds(250);
constexpr auto request_timeout = std::chrono::seconds(10);
constexpr size_t queued_max = 10000;

} // namespace

remote_handlers::remote_handlers(client& c) : c_(c) {
}

remote_handlers::~remote_handlers() {
  stop_ = true;
  if (poller_.joinable())
    poller_.join();
  std::map<node_id, host_session> hosts;
  {
    std::lock_guard<std::mutex> lk{mtx_};
    hosts.swap(hosts_);
  }
  for (auto& [host, s] : hosts) {
    auto dst = c_.lookup("script@" + host.hex());
    if (!dst)
      continue;
    c_.request(*dst, make_envelope<schema::ScriptClose>([&](schema::ScriptClose::Builder b) {
                 b.setSession(kj::arrayPtr(s.key.data(), s.key.size()));
               }),
               std::chrono::seconds(1));
  }
}

caf::error remote_handlers::send_handler(const node_id& host, const std::array<uint8_t, 16>& key,
                                         const std::string& event, const std::string& source,
                                         const std::string& chunk, uint32_t line) {
  auto dst = c_.lookup("script@" + host.hex());
  if (!dst)
    return dst.error();
  auto r = c_.request(*dst, make_envelope<schema::ScriptHandler>([&](schema::ScriptHandler::Builder b) {
                        b.setSession(kj::arrayPtr(key.data(), key.size()));
                        b.setEvent(event);
                        b.setSource(source);
                        b.setChunk(chunk);
                        b.setLine(line);
                      }),
                      request_timeout);
  if (!r)
    return r.error();
  return caf::none;
}

caf::error remote_handlers::set(const node_id& host, const std::string& event,
                                const std::string& source, const std::string& chunk,
                                uint32_t line) {
  auto elsewhere = holder(event);
  std::array<uint8_t, 16> key{};
  {
    std::lock_guard<std::mutex> lk{mtx_};
    auto it = hosts_.find(host);
    if (it != hosts_.end())
      key = it->second.key;
    else
      randombytes_buf(key.data(), key.size());
  }
  if (auto err = send_handler(host, key, event, source, chunk, line))
    return err;
  if (elsewhere && *elsewhere != host)
    remove(event);
  {
    std::lock_guard<std::mutex> lk{mtx_};
    auto& s = hosts_[host];
    s.key = key;
    s.events.insert(event);
  }
  if (!poller_.joinable())
    poller_ = std::thread([this] { poll_loop(); });
  return caf::none;
}

caf::error remote_handlers::remove(const std::string& event) {
  std::optional<node_id> host;
  std::array<uint8_t, 16> key{};
  {
    std::lock_guard<std::mutex> lk{mtx_};
    for (auto& [h, s] : hosts_)
      if (s.events.erase(event)) {
        host = h;
        key = s.key;
        break;
      }
  }
  if (!host)
    return caf::none;
  return send_handler(*host, key, event, "", "", 0);
}

std::optional<node_id> remote_handlers::holder(const std::string& event) const {
  std::lock_guard<std::mutex> lk{mtx_};
  for (auto& [h, s] : hosts_)
    if (s.events.count(event))
      return h;
  return std::nullopt;
}

void remote_handlers::post(progress p) {
  std::lock_guard<std::mutex> lk{mtx_};
  if (hosts_.empty())
    return;
  if (progress_.size() < queued_max)
    progress_.push_back(std::move(p));
}

std::vector<remote_handlers::item> remote_handlers::take() {
  std::lock_guard<std::mutex> lk{mtx_};
  std::vector<item> out(std::make_move_iterator(items_.begin()),
                        std::make_move_iterator(items_.end()));
  items_.clear();
  return out;
}

void remote_handlers::poll_loop() {
  while (!stop_) {
    flush();
    for (int i = 0; i < 5 && !stop_; ++i)
      std::this_thread::sleep_for(poll_period / 5);
  }
}

void remote_handlers::flush() {
  std::lock_guard<std::mutex> round{poll_mtx_};
  {
    std::vector<std::pair<node_id, std::array<uint8_t, 16>>> hosts;
    std::vector<progress> prog;
    {
      std::lock_guard<std::mutex> lk{mtx_};
      for (auto& [h, s] : hosts_)
        hosts.emplace_back(h, s.key);
      prog.assign(progress_.begin(), progress_.end());
      progress_.clear();
    }
    for (auto& [host, key] : hosts) {
      auto push = [&](item it) {
        std::lock_guard<std::mutex> lk{mtx_};
        if (items_.size() < queued_max)
          items_.push_back(std::move(it));
      };
      auto dst = c_.lookup("script@" + host.hex());
      caf::expected<envelope> r = dst.error();
      if (dst)
        r = c_.request(*dst, make_envelope<schema::ScriptPoll>([&](schema::ScriptPoll::Builder b) {
                         b.setSession(kj::arrayPtr(key.data(), key.size()));
                         auto l = b.initProgress(static_cast<unsigned>(prog.size()));
                         for (unsigned i = 0; i < prog.size(); ++i) {
                           l[i].setJob(prog[i].job);
                           l[i].setStep(prog[i].step);
                           l[i].setLoss(prog[i].loss);
                           l[i].setSamplesPerS(prog[i].samples_per_s);
                           l[i].setTrainers(prog[i].trainers);
                         }
                       }),
                       request_timeout);
      auto stopped = [&](const caf::error& err) {
        push({host, false, "", fmt::format("handlers there stopped: {}", what_of(err))});
        std::lock_guard<std::mutex> lk{mtx_};
        hosts_.erase(host);
      };
      if (!r) {
        stopped(r.error());
        continue;
      }
      opened<schema::ScriptOutput> out{*r};
      if (!out) {
        stopped(out.error());
        continue;
      }
      for (auto l : out->getLines())
        push({host, false, "", l.cStr()});
      for (auto rep : out->getReplies()) {
        std::string t = rep.cStr();
        auto tab = t.find('\t');
        if (tab != std::string::npos)
          push({host, true, t.substr(0, tab), t.substr(tab + 1)});
      }
      if (out->getDropped() > 0)
        push({host, false, "",
              fmt::format("({} lines of handler output dropped: script_output_max)",
                          out->getDropped())});
    }
  }
}

} // namespace aicon
