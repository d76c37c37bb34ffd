#include "snapshot/quiesce.hpp"

#include "snapshot/vm.hpp"

#include <cstdio>

namespace ks {

void Quiescer::skip(const std::string& why) {
  if (m_policy == QuiescePolicy::required) {
    throw Error("cannot quiesce the guest: " + why, ExitCode::failed,
                "run kata-snapshot-helper in the guest, or pass --quiesce auto|off");
  }
  m_skipped_because = why;
}

void Quiescer::freeze(const QemuArgv& argv) {
  if (m_policy == QuiescePolicy::off) {
    m_skipped_because = "--quiesce off";
    return;
  }
  auto path = helper_socket_path(argv);
  if (!path) {
    skip(std::string("the VM has no ") + k_helper_port_name + " port");
    return;
  }
  try {
    m_channel = guest::Channel::connect(*path, std::chrono::milliseconds(3000));
  } catch (const Error& e) {
    skip(e.what());
    return;
  }
  try {
    nlohmann::json n = m_channel->execute("guest-fsfreeze-freeze", {{"timeout", m_auto_thaw.count()}},
                                          guest::Channel::k_freeze_timeout);
    m_filesystems = n.is_number_integer() ? n.get<int>() : 0;
    m_frozen = m_filesystems > 0; // only synced (ramfs, tmpfs, virtio-fs): nothing to thaw

  } catch (const guest::GuestRefused& e) {
    skip(e.what()); // nothing was frozen
  } catch (const Error& e) {
    // The freeze may have half-happened (timeout): thaw and check before going on.
    m_frozen = true;
    thaw();
    skip(e.what());
  }
}

void Quiescer::thaw() noexcept {
  if (!m_frozen || !m_channel) {
    return;
  }
  m_frozen = false;
  try {
    m_channel->resync();
    m_channel->execute("guest-fsfreeze-thaw");
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "kata-snapshot: warning: failed to thaw the guest: %s (it thaws itself after %lld s)\n",
                 e.what(), static_cast<long long>(m_auto_thaw.count()));
  }
}

nlohmann::json Quiescer::describe() const {
  if (!m_skipped_because.empty()) {
    return {{"method", "none"}, {"reason", m_skipped_because}};
  }
  return {{"method", "helper"}, {"frozen_filesystems", m_filesystems}};
}

} // namespace ks
