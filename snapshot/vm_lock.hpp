// One kata-snapshot at a time per VM: an exclusive FileLock on a per-QEMU-pid lock file.
#pragma once

#include "util/file_lock.hpp"

#include <optional>

#include <sys/types.h>

namespace ks {

class VmLock {
public:
  // Takes the lock for QEMU_PID or throws Error(exit 4) naming the holder.
  explicit VmLock(pid_t qemu_pid);

private:
  std::optional<FileLock> m_lock;
};

} // namespace ks
