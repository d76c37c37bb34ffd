// The vmstate in QEMU's mapped-ram layout: QEMU writes (and reads back) the migration as a
// seekable file with every RAM page at a fixed offset and zero pages left as holes, which it
// loads with large reads straight into guest memory instead of page by page. The file is
// staged in memory (a memfd) or, when memory is short, in an unlinked file on disk; either
// way it disappears with the process that made it.
#pragma once

#include "qmp/qmp_client.hpp"
#include "util/fd.hpp"

#include <optional>
#include <string>

namespace ks {

// manifest vmstate.layout values
inline constexpr const char* k_layout_stream = "stream";         // the plain stream (fd: pipe)
inline constexpr const char* k_layout_mapped_ram = "mapped-ram"; // QEMU's mapped-ram file

// Waits (up to 10 s) until no migration is running: capabilities cannot change during one,
// and a cancelled migration has given the VM back only then.
void wait_migration_idle(qmp::Client& qmp);

// True when QEMU knows the migration capability NAME.
bool qemu_has_capability(qmp::Client& qmp, const std::string& name);

// True when QEMU knows the mapped-ram migration capability (QEMU 9.0 and later).
bool qemu_has_mapped_ram(qmp::Client& qmp);

// A read-write file for about BYTES of vmstate: a memfd when it fits in memory, otherwise
// an unlinked file in DIR. WHERE (if given) receives a description for messages.
Fd staging_file(const std::string& dir, uint64_t bytes, std::string* where = nullptr);

// The opaque string of every fd kata-snapshot adds to a QEMU fdset.
inline constexpr const char* k_fdset_opaque = "kata-snapshot";

// FD handed to QEMU through an fdset (add-fd), for a "file:/dev/fdset/N" URI; QEMU opens
// it with ACCESS (O_RDONLY to load, O_WRONLY to save), so FD is reopened that way. The
// destructor removes the fdset again.
class QemuFdset {
public:
  QemuFdset(qmp::Client& qmp, int fd, int access);
  ~QemuFdset() { remove(); }
  QemuFdset(const QemuFdset&) = delete;
  QemuFdset& operator=(const QemuFdset&) = delete;

  std::string uri() const { return "file:/dev/fdset/" + std::to_string(m_id.value_or(-1)); }
  void remove() noexcept;

private:
  qmp::Client& m_qmp;
  std::optional<int64_t> m_id;
};

// Sets migration capability NAME to VALUE; the destructor (or restore()) puts the old value
// back once no migration is running.
class MigrationCapability {
public:
  MigrationCapability(qmp::Client& qmp, std::string name, bool value);
  ~MigrationCapability() { restore(); }
  MigrationCapability(const MigrationCapability&) = delete;
  MigrationCapability& operator=(const MigrationCapability&) = delete;

  void restore() noexcept;
  void forget() noexcept { m_old.reset(); } // QEMU is gone: nothing to put back

private:
  qmp::Client& m_qmp;
  std::string m_name;
  std::optional<bool> m_old;
};

// Sets migration parameters; the destructor (or restore()) puts the old values back once
// no migration is running.
class MigrationParameters {
public:
  MigrationParameters(qmp::Client& qmp, const qmp::Json& values);
  ~MigrationParameters() { restore(); }
  MigrationParameters(const MigrationParameters&) = delete;
  MigrationParameters& operator=(const MigrationParameters&) = delete;

  void restore() noexcept;
  void forget() noexcept { m_old = qmp::Json::object(); } // QEMU is gone: nothing to put back

private:
  qmp::Client& m_qmp;
  qmp::Json m_old = qmp::Json::object();
};

} // namespace ks
