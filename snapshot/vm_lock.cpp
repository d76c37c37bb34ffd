#include "snapshot/vm_lock.hpp"

#include <cstdlib>
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

} // namespace

VmLock::VmLock(pid_t qemu_pid) {
  std::string dir = lock_dir();
  make_dirs(dir);
  std::string path = dir + "/qemu-" + std::to_string(qemu_pid) + ".lock";
  m_lock.emplace(path,
                 FileLock::Options{.mode = LockMode::exclusive,
                                   .purpose = "kata-snapshot on this VM",
                                   .what = "the VM (QEMU pid " + std::to_string(qemu_pid) + ")",
                                   .hint = "wait for the other kata-snapshot to finish, or check " + path});
}

} // namespace ks
