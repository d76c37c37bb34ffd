// prune's keep rules, with restic's semantics, on made-up times.
#include "storage/store/retention.hpp"

#include <catch2/catch.hpp>

using namespace ks;

namespace {

// The tags POLICY keeps of ITEMS.
std::vector<std::string> kept(const std::vector<RetentionItem>& items, const KeepPolicy& policy) {
  std::vector<std::string> out;
  auto d = apply_policy(items, policy);
  for (size_t i = 0; i < items.size(); ++i) {
    if (d[i].keep) {
      out.push_back(items[i].tag);
    }
  }
  return out;
}

// Two snapshots a day (02:00 and 14:00) from 2026-10-25 to 2026-11-27, oldest first.
std::vector<RetentionItem> twice_daily() {
  std::vector<RetentionItem> items;
  for (int day = 0; day < 34; ++day) {
    int month = day < 7 ? 10 : 11;
    int dom = day < 7 ? 25 + day : day - 6;
    for (int hour : {2, 14}) {
      char created[32];
      std::snprintf(created, sizeof created, "2026-%02d-%02dT%02d:00:00Z", month, dom, hour);
      std::string tag = std::string(created).substr(5, 5) + "-" + std::to_string(hour);
      items.push_back({tag, created, {}});
    }
  }
  return items;
}

} // namespace

TEST_CASE("retention: each keep rule alone") {
  auto items = twice_daily();
  CHECK(kept(items, {.last = 3}) == std::vector<std::string>{"11-26-14", "11-27-2", "11-27-14"});
  // The newest of each of the last 2 days; of each of the last 3 hours that have one.
  CHECK(kept(items, {.daily = 2}) == std::vector<std::string>{"11-26-14", "11-27-14"});
  CHECK(kept(items, {.hourly = 3}) == std::vector<std::string>{"11-26-14", "11-27-2", "11-27-14"});
  // ISO weeks: 2026-11-27 is a Friday of week 48; week 47 ends on Sunday 11-22.
  CHECK(kept(items, {.weekly = 2}) == std::vector<std::string>{"11-22-14", "11-27-14"});
  CHECK(kept(items, {.monthly = 2}) == std::vector<std::string>{"10-31-14", "11-27-14"});
}

TEST_CASE("retention: rules add up, tags and labels keep, nothing is kept twice") {
  auto items = twice_daily();
  items[0].labels["keep"] = "forever";
  items[1].tag = "golden";
  KeepPolicy p{.last = 1, .daily = 2, .monthly = 2, .tags = {"keep=forever", "golden"}};
  auto got = kept(items, p);
  CHECK(got == std::vector<std::string>{"10-25-2", "golden", "10-31-14", "11-26-14", "11-27-14"});
  auto d = apply_policy(items, p);
  CHECK(d.back().reasons == std::vector<std::string>{"last", "daily", "monthly"});
  CHECK(kept(items, {.tags = {"keep"}}) == std::vector<std::string>{"10-25-2"}); // a label key alone
  CHECK(kept(items, {.tags = {"keep=never"}}).empty());                          // the value must match
  CHECK(KeepPolicy{}.empty());
}
