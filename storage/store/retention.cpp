#include "storage/store/retention.hpp"

#include <algorithm>
#include <ctime>
#include <numeric>

namespace ks {

namespace {

// The bucket of a time for one rule: its first characters, or the ISO week.
std::string bucket(const std::string& created, const std::string& rule) {
  if (rule == "hourly") {
    return created.substr(0, 13); // 2026-11-27T02
  }
  if (rule == "daily") {
    return created.substr(0, 10);
  }
  if (rule == "monthly") {
    return created.substr(0, 7);
  }
  std::tm tm{};
  if (::strptime(created.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) {
    return created;
  }
  std::time_t t = ::timegm(&tm);
  ::gmtime_r(&t, &tm); // fills in the weekday
  char buf[16];
  std::strftime(buf, sizeof buf, "%G-W%V", &tm);
  return buf;
}

bool has_tag(const RetentionItem& item, const std::string& t) {
  if (item.tag == t) {
    return true;
  }
  auto eq = t.find('=');
  auto it = item.labels.find(t.substr(0, eq));
  return it != item.labels.end() && (eq == std::string::npos || it->second == t.substr(eq + 1));
}

} // namespace

std::vector<RetentionDecision> apply_policy(const std::vector<RetentionItem>& items,
                                            const KeepPolicy& policy) {
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return items[a].created > items[b].created; });
  struct Rule {
    std::string name;
    unsigned left;
    std::string last_bucket;
  };
  std::vector<Rule> rules = {{"hourly", policy.hourly, {}},
                             {"daily", policy.daily, {}},
                             {"weekly", policy.weekly, {}},
                             {"monthly", policy.monthly, {}}};
  unsigned last_left = policy.last;
  std::vector<RetentionDecision> out(items.size());
  for (size_t i : order) {
    RetentionDecision& d = out[i];
    if (last_left > 0) {
      --last_left;
      d.reasons.emplace_back("last");
    }
    for (auto& r : rules) {
      std::string b = bucket(items[i].created, r.name);
      if (r.left > 0 && b != r.last_bucket) {
        --r.left;
        r.last_bucket = b;
        d.reasons.push_back(r.name);
      }
    }
    for (const auto& t : policy.tags) {
      if (has_tag(items[i], t)) {
        d.reasons.push_back("tag " + t);
      }
    }
    d.keep = !d.reasons.empty();
  }
  return out;
}

} // namespace ks
