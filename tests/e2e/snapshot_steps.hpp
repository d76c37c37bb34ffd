// Steps shared by the save/load end-to-end tests.
#pragma once

#include "tests/e2e/guest_vm.hpp"

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ks::test {

// A VM started by `kata-snapshot load` (detached); killed at destruction.
class RestoredVm {
public:
  explicit RestoredVm(const nlohmann::json& load_result);
  ~RestoredVm();
  RestoredVm(RestoredVm&&) = default;
  int pid() const { return m_pid; }
  const std::string& qmp_path() const { return m_qmp; }
  const nlohmann::json& result() const { return m_result; }
  void kill();

private:
  nlohmann::json m_result;
  int m_pid = -1;
  std::string m_qmp;
  std::vector<int> m_daemons;
};

// `save --qmp QMP -o OUT --after pause ARGS...`; requires success; returns the JSON result.
nlohmann::json save_paused(const std::string& qmp, const std::string& out,
                           const std::vector<std::string>& args = {});

// kata-snapshot ARGV (with --json among them); requires success; returns what it printed.
nlohmann::json cli_json(const std::vector<std::string>& argv);

// `load ARCHIVE --run-dir RUN_DIR --json ARGS...`; requires success.
RestoredVm load_ok(const std::string& archive, const std::string& run_dir,
                   const std::vector<std::string>& args = {});

// After a save with --after pause, the tick the snapshot holds, and the console size then.
struct Mark {
  long tick;
  size_t offset;
};
Mark mark(const GuestVm& vm);

// The guest carries on from MARK: the next tick is MARK.tick+1, printed after MARK.offset,
// with no reboot in between, and it keeps counting.
void require_continues(const GuestVm& console, const Mark& m, long more = 5);

// QEMU's migration capabilities and parameters: a failed save must leave them as they were.
struct MigrationSettings {
  nlohmann::json capabilities;
  nlohmann::json parameters;
  static MigrationSettings of(qmp::Client& qmp);
  bool operator==(const MigrationSettings&) const = default;
};

// `kata-snapshot guest status` answers, and says the guest is thawed.
void check_thawed(const GuestVm& vm);

// Polls DONE every 20 ms; fails the test if it is not true within 60 s.
void wait_until(const std::function<bool()>& done);

// Pids of running processes whose command line contains NEEDLE.
std::vector<int> processes_with(const std::string& needle);

// The virtio-fs workloads ("vfs": a file appended to, one read line by line, one deleted
// while open, a cwd inside the share), for the tests of shares across a snapshot.
std::string numbers(int n); // "1\n2\n...N\n"
// The last N of a "PREFIX N" line in TEXT, or -1.
long last_number(const std::string& text, const std::string& prefix);
GuestOptions vfs_guest();
// A Kata-like guest running the "live" workload (a journal, a checksummed file, a rewritten
// file, all in the share): its share holds big.bin, MIB MiB of random bytes from SEED, and
// big.md5; VIRTIOFSD runs its virtiofsd, if given.
GuestOptions live_share_guest(size_t mib, uint64_t seed, const std::vector<std::string>& virtiofsd = {});
// Saves VM paused (with ARGS); returns where each open-file workload stood.
struct VfsMark {
  Mark base;
  long appended;
  long read;
};
VfsMark save_vfs(GuestVm& vm, const std::string& archive, const std::vector<std::string>& args = {});
// The restored guest carries on: appends land at the right offsets, reads continue, no EIO,
// and SHARE_DIR's append.log has every line once.
void require_vfs_continues(const GuestVm& vm, const VfsMark& m, const std::string& share_dir);

} // namespace ks::test
