#include "snapshot/mapped_ram.hpp"

#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

constexpr uint64_t k_memory_margin = 512ull << 20; // left to the host and the VMs on it

void warn(const std::string& what, const std::exception& e) noexcept {
  std::fprintf(stderr, "kata-snapshot: warning: %s: %s\n", what.c_str(), e.what());
}

// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
uint64_t memory_available() {
  try {
    for (const auto& line : split(read_file("/proc/meminfo"), '\n')) {
      if (line.rfind("MemAvailable:", 0) == 0) {
        return std::stoull(trim(line.substr(13))) * 1024;
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}

} // namespace

void wait_migration_idle(qmp::Client& qmp) {
  Deadline deadline(std::chrono::seconds(10));
  for (;;) {
    std::string status = qmp.execute("query-migrate").value("status", "none");
    if (status == "none" || status == "completed" || status == "failed" || status == "cancelled" ||
        deadline.expired()) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool qemu_has_capability(qmp::Client& qmp, const std::string& name) {
  for (const auto& cap : qmp.execute("query-migrate-capabilities")) {
    if (cap.value("capability", "") == name) {
      return true;
    }
  }
  return false;
}

bool qemu_has_mapped_ram(qmp::Client& qmp) {
  return qemu_has_capability(qmp, k_layout_mapped_ram);
}

Fd staging_file(const std::string& dir, uint64_t bytes, std::string* where) {
  if (memory_available() >= bytes + k_memory_margin) {
    Fd fd(::memfd_create("kata-snapshot-vmstate", MFD_CLOEXEC));
    if (fd) {
      if (where) {
        *where = "memory";
      }
      return fd;
    }
  }
  Fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) {
    throw Error("failed to create a staging file for the vmstate in " + dir + ": " + std::strerror(errno),
                ExitCode::failed, "free " + human_size(bytes) + " of memory, or of disk space in " + dir);
  }
  if (where) {
    *where = dir;
  }
  return fd;
}

QemuFdset::QemuFdset(qmp::Client& qmp, int fd, int access) : m_qmp(qmp) {
  Fd reopened = open_file("/proc/self/fd/" + std::to_string(fd), access | O_CLOEXEC);
  // The opaque tag lets a watchdog find what a killed save left in QEMU (snapshot/watchdog.hpp).
  m_id = m_qmp.execute_with_fd("add-fd", {{"opaque", k_fdset_opaque}}, reopened.get())
           .at("fdset-id")
           .get<int64_t>();
}

void QemuFdset::remove() noexcept {
  if (!m_id) {
    return;
  }
  try {
    m_qmp.execute("remove-fd", {{"fdset-id", *m_id}});
  } catch (const std::exception& e) {
    warn("failed to remove fdset " + std::to_string(*m_id) + " from QEMU", e);
  }
  m_id.reset();
}

MigrationCapability::MigrationCapability(qmp::Client& qmp, std::string name, bool value)
  : m_qmp(qmp), m_name(std::move(name)) {
  for (const auto& cap : m_qmp.execute("query-migrate-capabilities")) {
    if (cap.value("capability", "") == m_name) {
      m_old = cap.value("state", false);
    }
  }
  if (!m_old) {
    throw Error("this QEMU has no migration capability " + m_name);
  }
  if (*m_old == value) {
    m_old.reset(); // nothing to put back
    return;
  }
  m_qmp.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", m_name}, {"state", value}}}}});
}

MigrationParameters::MigrationParameters(qmp::Client& qmp, const qmp::Json& values) : m_qmp(qmp) {
  qmp::Json now = m_qmp.execute("query-migrate-parameters");
  for (const auto& [name, value] : values.items()) {
    if (!now.contains(name)) {
      throw Error("this QEMU has no migration parameter " + name);
    }
    if (now[name] != value) {
      m_old[name] = now[name];
    }
  }
  m_qmp.execute("migrate-set-parameters", values);
}

void MigrationParameters::restore() noexcept {
  if (m_old.empty()) {
    return;
  }
  try {
    wait_migration_idle(m_qmp);
    m_qmp.execute("migrate-set-parameters", m_old);
  } catch (const std::exception& e) {
    warn("failed to restore the migration parameters " + m_old.dump(), e);
  }
  m_old = qmp::Json::object();
}

void MigrationCapability::restore() noexcept {

  if (!m_old) {
    return;
  }
  try {
    wait_migration_idle(m_qmp);
    m_qmp.execute("migrate-set-capabilities",
                  {{"capabilities", {{{"capability", m_name}, {"state", *m_old}}}}});
  } catch (const std::exception& e) {
    warn("failed to restore the migration capability " + m_name, e);
  }
  m_old.reset();
}

} // namespace ks
