#include "snapshot/guest_ops.hpp"

#include "snapshot/guest_refresh.hpp"
#include "snapshot/share_capture.hpp"
#include "snapshot/vhost_inflight.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_hot_id = "ksnap-helper0";

bool has_virtio_serial_bus(qmp::Client& qmp) {
  for (const auto& bus : qmp.execute("query-pci")) {
    for (const auto& dev : bus.value("devices", nlohmann::json::array())) {
      // virtio-serial: Red Hat vendor 0x1af4, device 0x1003 (legacy) or 0x1043 (modern).
      int id = dev["id"].value("device", 0);
      if (dev["id"].value("vendor", 0) == 0x1af4 && (id == 0x1003 || id == 0x1043)) {
        return true;
      }
    }
  }
  return false;
}

} // namespace

GuestSession::GuestSession(const GuestTarget& target) : m_vm(open_vm(target.qmp_socket)) {
  if (auto path = helper_socket_path(m_vm.argv)) {
    m_channel = guest::Channel::connect(*path);
    return;
  }
  hot_add();
}

GuestSession::~GuestSession() {
  m_channel.reset();
  remove_hot_added();
}

void GuestSession::hot_add() {
  if (!has_virtio_serial_bus(m_vm.qmp)) {
    throw Error(std::string("the VM has no virtio-serial bus, so no ") + k_helper_port_name +
                  " port can be added",
                ExitCode::failed, "start the VM with -device virtio-serial-pci");
  }
  char tmpl[] = "/tmp/ksnap-helper-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    throw_errno("failed to create a directory for the helper socket");
  }
  m_socket_dir = tmpl;
  std::string path = m_socket_dir + "/helper.sock";
  m_vm.qmp.execute(
    "chardev-add",
    {{"id", k_hot_id},
     {"backend",
      {{"type", "socket"},
       {"data",
        {{"addr", {{"type", "unix"}, {"data", {{"path", path}}}}}, {"server", true}, {"wait", false}}}}}});
  m_hot_added = true;
  m_vm.qmp.execute(
    "device_add",
    {{"driver", "virtserialport"}, {"id", k_hot_id}, {"chardev", k_hot_id}, {"name", k_helper_port_name}});
  // The helper polls for the port to appear; give it time to find and open it.
  m_channel = guest::Channel::connect(path, std::chrono::milliseconds(10000));
}

void GuestSession::remove_hot_added() noexcept {
  if (!m_hot_added) {
    return;
  }
  try {
    m_vm.qmp.execute("device_del", {{"id", k_hot_id}});
    auto gone = m_vm.qmp.wait_event(
      "DEVICE_DELETED", [](const nlohmann::json& d) { return d.value("device", "") == k_hot_id; },
      std::chrono::milliseconds(10000));
    if (!gone) {
      std::fprintf(stderr, "kata-snapshot: warning: QEMU did not confirm removal of %s\n", k_hot_id);
    }
    m_vm.qmp.execute("chardev-remove", {{"id", k_hot_id}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kata-snapshot: warning: failed to remove the hot-added helper port: %s\n",
                 e.what());
  }
  std::error_code ec;
  std::filesystem::remove_all(m_socket_dir, ec);
}

nlohmann::json guest_ping(const GuestTarget& target) {
  GuestSession s(target);
  s.channel().execute("guest-ping");
  nlohmann::json info = s.channel().execute("guest-info");
  return {{"status", "ok"}, {"version", info.value("version", "")}, {"hot_added_port", s.hot_added()}};
}

nlohmann::json guest_freeze(const GuestTarget& target, std::chrono::seconds auto_thaw) {
  GuestSession s(target);
  nlohmann::json n;
  try {
    n = s.channel().execute("guest-fsfreeze-freeze", {{"timeout", auto_thaw.count()}},
                            guest::Channel::k_freeze_timeout);
  } catch (const guest::GuestRefused&) {
    throw;
  } catch (const Error& e) {
    // No answer: the freeze may be half done. Thaw, and say what state the guest is in.
    std::string state = "unknown";
    try {
      s.channel().resync();
      s.channel().execute("guest-fsfreeze-thaw");
      state = s.channel().execute("guest-fsfreeze-status").get<std::string>();
    } catch (const std::exception&) {
    }
    throw Error(std::string(e.what()) + "; sent a thaw, guest filesystems are now " + state, ExitCode::failed,
                "the helper thaws by itself after " + std::to_string(auto_thaw.count()) + " s");
  }
  return {{"status", "frozen"}, {"filesystems", n}, {"auto_thaw_seconds", auto_thaw.count()}};
}

nlohmann::json guest_thaw(const GuestTarget& target) {
  GuestSession s(target);
  nlohmann::json n = s.channel().execute("guest-fsfreeze-thaw");
  return {{"status", "thawed"}, {"filesystems", n}};
}

nlohmann::json guest_refresh(const GuestTarget& target) {
  GuestSession s(target);
  nlohmann::json r = s.channel().execute("kata-snapshot-post-restore", post_restore_arguments());
  // A VM loaded with --paused and resumed by its owner: requests queued at the save's stop
  // reach virtiofsd (snapshot/vhost_inflight.hpp).
  notify_virtiofsd(s.vm().qmp, s.vm().pid, virtiofsd_pids(s.vm().argv, s.vm().pid));
  return r;
}

nlohmann::json guest_status(const GuestTarget& target) {
  GuestSession s(target);
  return {{"status", s.channel().execute("guest-fsfreeze-status")}};
}

} // namespace ks
