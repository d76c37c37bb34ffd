// One kata-snapshot at a time per VM: an flock on a per-QEMU-pid lock file.
#pragma once

#include "util/fd.hpp"

#include <sys/types.h>

namespace ks {

class VmLock {
public:
  // Takes the lock for QEMU_PID or throws Error(exit 4) naming the holder.
  explicit VmLock(pid_t qemu_pid);

private:
  Fd m_fd;
};

} // namespace ks
