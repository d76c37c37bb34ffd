#include "snapshot/multifd.hpp"

#include "util/error.hpp"
#include "util/unix_socket.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <unistd.h>

namespace ks {

bool qemu_has_multifd(qmp::Client& qmp) {
  // zero-page-detection=multifd (QEMU 9.0): zero pages travel as offsets, not as pages.
  return qemu_has_capability(qmp, k_layout_multifd) &&
         qmp.execute("query-migrate-parameters").contains("zero-page-detection");
}

unsigned multifd_channels(unsigned threads) {
  if (threads > 0) {
    return std::min(threads, k_max_multifd_channels);
  }
  return std::clamp(std::thread::hardware_concurrency(), 2u, 8u);
}

MultifdSetup::MultifdSetup(qmp::Client& qmp, unsigned channels)
  : m_cap(qmp, k_layout_multifd, true),
    m_params(qmp, {{"multifd-channels", channels}, {"multifd-compression", "none"}}) {}

MigrationSocket::MigrationSocket(uid_t qemu_uid) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = std::string(tmp && *tmp ? tmp : "/tmp") + "/kata-snapshot-migrate-XXXXXX";
  if (::mkdtemp(base.data()) == nullptr) {
    throw Error("failed to create a directory for the migration socket in " + base + ": " +
                  std::strerror(errno),
                ExitCode::failed, "set TMPDIR to a writable directory");
  }
  m_dir = base;
  m_path = m_dir + "/migrate.sock";
  try {
    m_listen = listen_unix(m_path);
    // QEMU running as another user (Kata's rootless mode) must reach the socket.
    if (qemu_uid != ::geteuid() && ::chown(m_dir.c_str(), qemu_uid, static_cast<gid_t>(-1)) != 0) {
      throw Error("QEMU runs as uid " + std::to_string(qemu_uid) +
                    " and cannot reach the migration socket in " + m_dir + ": " + std::strerror(errno),
                  ExitCode::failed, "run kata-snapshot as root or as QEMU's user, or pass --vmstate stream");
    }
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(m_dir, ec);
    throw;
  }
}

MigrationSocket::~MigrationSocket() {
  m_listen.reset();
  std::error_code ec;
  std::filesystem::remove_all(m_dir, ec);
}

} // namespace ks
