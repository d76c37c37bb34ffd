// Which snapshots a prune keeps, with restic's rules (restic forget --keep-*): walking from
// the newest, --keep-last N keeps the N newest; --keep-hourly/daily/weekly/monthly N keep
// the newest snapshot of each of the last N hours, days, ISO weeks or months that have one;
// --keep-tag T keeps every snapshot tagged T or labelled T (KEY or KEY=VALUE). A snapshot any
// rule keeps is kept. Times are UTC.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ks {

struct KeepPolicy {
  unsigned last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0;
  std::vector<std::string> tags;
  bool empty() const { return !last && !hourly && !daily && !weekly && !monthly && tags.empty(); }
};

struct RetentionItem {
  std::string tag;
  std::string created; // RFC 3339 UTC, as the snapshots record it
  std::map<std::string, std::string> labels;
};

struct RetentionDecision {
  bool keep = false;
  std::vector<std::string> reasons; // "last", "daily", "tag T", ...
};

// One decision per item, in the order given.
std::vector<RetentionDecision> apply_policy(const std::vector<RetentionItem>& items,
                                            const KeepPolicy& policy);

} // namespace ks
