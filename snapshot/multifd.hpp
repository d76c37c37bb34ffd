// The multifd vmstate layout on the QEMU side (storage/vmstate_channels.hpp has the data
// path): QEMU's multifd migration sends RAM over several connections at once, from threads
// on both sides. It needs a socket transport, so save listens on a UNIX socket QEMU
// connects to, and load connects to the one QEMU listens on.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/mapped_ram.hpp"
#include "util/fd.hpp"

#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace ks {

inline constexpr const char* k_layout_multifd = "multifd"; // manifest vmstate.layout

// True when QEMU migrates multifd with zero pages sent as offsets (QEMU 9.0 and later).
bool qemu_has_multifd(qmp::Client& qmp);

// multifd channels for a save on this host: THREADS if set (at most 16), else every core (2 to 8).
unsigned multifd_channels(unsigned threads);
// More channels add nothing (QEMU's multifd threads only hand pages over; the compression
// workers are --threads whatever the channel count), while a load holds a few chunks per
// channel: its memory grows with them.
inline constexpr unsigned k_max_multifd_channels = 16;

// The multifd capability and parameters for CHANNELS uncompressed channels, put back by
// the destructor.
class MultifdSetup {
public:
  MultifdSetup(qmp::Client& qmp, unsigned channels);
  void forget() noexcept {
    m_cap.forget();
    m_params.forget();
  }

private:
  MigrationCapability m_cap;
  MigrationParameters m_params;
};

// A private directory (mode 0700) holding the UNIX socket a saving QEMU connects to; QEMU
// running as another user (QEMU_UID) gets the directory. Removed by the destructor.
class MigrationSocket {
public:
  MigrationSocket(uid_t qemu_uid);
  ~MigrationSocket();
  MigrationSocket(const MigrationSocket&) = delete;
  MigrationSocket& operator=(const MigrationSocket&) = delete;

  const std::string& path() const { return m_path; }
  int listen_fd() const { return m_listen.get(); }

private:
  std::string m_dir;
  std::string m_path;
  Fd m_listen;
};

} // namespace ks
