#include "snapshot/vm_lock.hpp"

#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

std::string lock_dir() {
  if (const char* env = std::getenv("KSNAP_LOCK_DIR")) {
    return env;
  }
  return ::geteuid() == 0 ? "/run/kata-snapshot/locks"
                          : "/tmp/kata-snapshot-" + std::to_string(::geteuid()) + "/locks";
}

void make_dirs(const std::string& path) {
  std::string sofar;
  for (const auto& part : split(path, '/')) {
    if (part.empty()) {
      continue;
    }
    sofar += "/" + part;
    if (::mkdir(sofar.c_str(), 0700) != 0 && errno != EEXIST) {
      throw_errno("failed to create the lock directory " + sofar);
    }
  }
}

} // namespace

VmLock::VmLock(pid_t qemu_pid) {
  std::string dir = lock_dir();
  make_dirs(dir);
  std::string path = dir + "/qemu-" + std::to_string(qemu_pid) + ".lock";
  m_fd = open_file(path, O_RDWR | O_CREAT, 0600);
  if (::flock(m_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      throw_errno("failed to lock " + path);
    }
    std::string holder = trim(read_file(path));
    throw Error("the VM (QEMU pid " + std::to_string(qemu_pid) + ") is locked by another kata-snapshot" +
                  (holder.empty() ? std::string() : " (pid " + holder + ")"),
                ExitCode::locked, "wait for it to finish, or check " + path);
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(m_fd.get(), 0) == 0) {
    (void)!::pwrite(m_fd.get(), me.data(), me.size(), 0);
  }
}

} // namespace ks
