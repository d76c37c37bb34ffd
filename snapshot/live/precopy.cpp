#include "snapshot/live/precopy.hpp"

#include "storage/manifest.hpp"
#include "util/strings.hpp"

namespace ks {

namespace {

constexpr uint64_t k_mib = 1u << 20;

} // namespace

std::string live_unsupported_reason(qmp::Client& qmp, bool running) {
  if (!running) {
    return "the VM is paused, so a stop-mode save does not pause it any longer";
  }
  if (!qemu_has_capability(qmp, "pause-before-switchover")) {
    return "this QEMU has no pause-before-switchover migration capability";
  }
  // Found by the e2e tests: under TCG, a live save of a VM with a hot-plugged vCPU restored
  // into a guest that crashed soon after (a kernel data structure the new vCPU had written
  // during the pre-copy was stale) in 2 runs of 3 on a busy host; stop mode never did. Until
  // that is understood, live mode is kept to where it was shown consistent.
  if (!qmp.execute("query-kvm").value("enabled", false)) {
    for (const auto& cpu : qmp.execute("query-hotpluggable-cpus")) {
      if (cpu.value("qom-path", "").rfind("/machine/peripheral", 0) == 0) {
        return "a vCPU was hot-plugged into this VM, and under TCG live saves of such VMs were found "
               "inconsistent (restored guests crashed); a stop-mode save is consistent";
      }
    }
  }
  return {};
}

Precopy::Precopy(qmp::Client& qmp, const PrecopyLimits& limits, uint64_t ram_bytes)
  : m_qmp(qmp), m_limits(limits),
    m_max_bytes(limits.max_bytes ? limits.max_bytes : 3 * ram_bytes + (1024 * k_mib)),
    m_pause(qmp, "pause-before-switchover", true), m_converge(qmp, "auto-converge", true),
    m_params(qmp, {{"downtime-limit", limits.max_downtime_ms}}) {}

Precopy::Event Precopy::observe(const nlohmann::json& mig) {
  std::string status = mig.value("status", "");
  const nlohmann::json ram = mig.value("ram", nlohmann::json::object());
  m_transferred = ram.value("transferred", m_transferred);
  m_passes = ram.value("dirty-sync-count", m_passes);
  if (status == "completed" && !m_completed) {
    m_completed = true;
    if (mig.contains("downtime")) {
      m_downtime = mig["downtime"].get<double>() / 1000.0;
    }
    return Event::completed;
  }
  if (status == "pre-switchover" && !m_stopped) {
    m_stopped = true;
    m_instant = utc_now(Precision::milliseconds); // the vCPUs stopped just before
    return Event::stopped;
  }
  if (status != "active") {
    return Event::none;
  }
  if (m_transferred > m_max_bytes) {
    not_converging(ram, "QEMU sent " + human_size(m_transferred) + ", more than the bound of " +
                          human_size(m_max_bytes));
  }
  if (!m_first_pass && m_passes >= 2) { // the first full pass over RAM is done
    m_first_pass = true;
    m_first_pass_at = std::chrono::steady_clock::now();
  }
  if (m_first_pass && std::chrono::steady_clock::now() - m_first_pass_at > m_limits.max_converge) {
    not_converging(ram, "it still had " + human_size(ram.value("remaining", 0ull)) + " to send after " +
                          std::to_string(m_limits.max_converge.count()) + " s of passes");
  }
  return Event::none;
}

void Precopy::not_converging(const nlohmann::json& ram, const std::string& why) const {
  if (!m_first_pass) { // no dirty rate yet: the bound is below what the guest has in use
    throw Error("the live save passed its bound during QEMU's first pass over memory: " + why,
                ExitCode::failed,
                "raise --max-transfer (the guest has more memory in use), or save with --mode stop");
  }
  uint64_t rate = ram.value("dirty-pages-rate", 0ull) * ram.value("page-size", 4096ull);
  throw Error(
    "the live save did not converge: the guest dirties memory at " + human_size(rate) + "/s and " + why,
    ExitCode::failed,
    "save with --mode stop (the VM pauses for the whole save), raise --max-downtime (now " +
      std::to_string(m_limits.max_downtime_ms) + " ms) or --max-transfer, or save when the guest is quieter");
}

void Precopy::switchover() {
  m_qmp.execute("migrate-continue", {{"state", "pre-switchover"}});
}

nlohmann::json Precopy::describe() const {
  return {{"mechanism", k_mechanism_precopy},
          {"instant", m_instant},
          {"passes", m_passes},
          {"transferred_bytes", m_transferred},
          {"max_downtime_ms", m_limits.max_downtime_ms},
          {"qemu_downtime_seconds", m_downtime ? nlohmann::json(*m_downtime) : nlohmann::json()}};
}

} // namespace ks
