// The QEMU side of a live save: an ordinary pre-copy migration into the archive while the
// guest runs. QEMU sends all of RAM, then again what the guest dirtied meanwhile, until the
// rest fits in the downtime limit; then it stops the vCPUs and, with pause-before-switchover,
// waits for us (status pre-switchover) before it sends the rest and the device state. That
// stop is the snapshot instant: the shares' delta is taken then, and the VM resumes as soon
// as QEMU reports completion.
//
// Every writer of guest memory is caught until that stop: vCPUs and QEMU's own devices
// through QEMU's dirty bitmap (TCG marks the pages; KVM's dirty log under KVM), vhost-user
// back-ends such as virtiofsd through the vhost dirty log QEMU shares with them
// (VHOST_F_LOG_ALL; virtiofsd marks every page it writes into guest memory). At the stop
// QEMU stops the back-ends (GET_VRING_BASE) and syncs both logs before the last pass.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/mapped_ram.hpp"

#include <chrono>
#include <optional>

namespace ks {

inline constexpr const char* k_mechanism_precopy = "pre-copy";

struct PrecopyLimits {
  unsigned max_downtime_ms = 20;         // QEMU's downtime-limit for the final stop
  uint64_t max_bytes = 0;                // give up once QEMU sent more (0: 3 x RAM + 1 GiB)
  std::chrono::seconds max_converge{60}; // give up this long after the first pass
};

class Precopy {
public:
  // Sets QEMU up (put back by the destructor): pause-before-switchover, auto-converge and the
  // downtime limit. QEMU alone decides when the rest fits in the limit: it offers no way to
  // hold that moment back (with the estimate at 0 after a pass it switches over whatever
  // the limit), which is why a live save does not freeze the guest just before the stop.
  Precopy(qmp::Client& qmp, const PrecopyLimits& limits, uint64_t ram_bytes);

  enum class Event { none, stopped, completed };
  // One query-migrate answer while the migration runs: what happened since the last one.
  // Throws when the migration does not converge within the limits.
  Event observe(const nlohmann::json& mig);

  // The VM is stopped at pre-switchover: QEMU sends the rest and the device state.
  void switchover();

  // For the manifest's index and the result: mechanism, instant, downtime, passes, bytes.
  nlohmann::json describe() const;
  std::optional<double> qemu_downtime_seconds() const { return m_downtime; }

private:
  [[noreturn]] void not_converging(const nlohmann::json& ram, const std::string& why) const;

  qmp::Client& m_qmp;
  PrecopyLimits m_limits;
  uint64_t m_max_bytes;
  MigrationCapability m_pause;
  MigrationCapability m_converge;
  MigrationParameters m_params;
  bool m_first_pass = false;
  bool m_stopped = false;
  bool m_completed = false;
  std::chrono::steady_clock::time_point m_first_pass_at;
  std::string m_instant;
  std::optional<double> m_downtime;
  uint64_t m_transferred = 0;
  uint64_t m_passes = 0;
};

// Why a live save of this VM is not possible, or "" when it is.
std::string live_unsupported_reason(qmp::Client& qmp, bool running);

} // namespace ks
