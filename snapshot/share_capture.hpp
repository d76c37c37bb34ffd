// virtio-fs shares on save: which virtiofsd serves each vhost-user-fs device, whether it can
// migrate its state, and the shared directory's contents captured at the snapshot instant.
#pragma once

#include "snapshot/qemu_argv.hpp"
#include "util/fd.hpp"

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

struct ShareInfo {
  std::string tag;
  std::string chardev;
  std::string socket;     // the vhost-user socket QEMU connects to
  std::string source_dir; // virtiofsd's --shared-dir
  std::string capture;    // full | none
  pid_t virtiofsd_pid = -1;
  std::vector<std::string> virtiofsd_argv; // as in /proc (with the loader's options, if any)
  std::vector<std::string> virtiofsd_args; // the program's own arguments

  std::string virtiofsd_binary; // the real program (not the loader it may run under)
  std::string virtiofsd_loader; // the ELF loader it runs under, if any
  std::string virtiofsd_version;
  bool migratable = false;
  // Files of the share that virtiofsd holds open but that were deleted: virtiofsd cannot
  // migrate them (no path left), so after a restore the guest gets errors on them.
  std::vector<std::string> deleted_open;

  std::string member() const { return "shares/" + tag + ".tar.zst"; }
  nlohmann::json to_json() const;
};

// Every vhost-user-fs-pci device of the VM and the virtiofsd behind it. POLICY: tag -> full|none.
std::vector<ShareInfo> discover_shares(const QemuArgv& argv, pid_t qemu_pid,
                                       const std::map<std::string, std::string>& policy);

// The virtiofsd processes serving the VM's vhost-user-fs-pci devices (those found).
std::vector<pid_t> virtiofsd_pids(const QemuArgv& argv, pid_t qemu_pid);

// Refuses (before anything is paused) when QEMU or a virtiofsd cannot migrate virtio-fs.
void preflight_shares(const std::vector<ShareInfo>& shares, const std::string& qemu_version);

struct ShareCapture {
  Fd file; // unnamed temp file, rewound
  uint64_t size = 0;
  std::string sha256;
  uint64_t entries = 0;
};

// WRITE (returning an entry count) fills an unnamed temp file in TEMP_DIR, which is then
// hashed and rewound; WHAT names it in errors.
ShareCapture capture_to_temp(const std::string& temp_dir, const std::string& what,
                             const std::function<uint64_t(int fd)>& write);

// Captures SHARE's directory into an unnamed temp file in TEMP_DIR.
ShareCapture capture_share(const ShareInfo& share, const std::string& temp_dir, int level);

// The virtiofsd argv of a share, for running it again (loader, library path and binary).
std::vector<std::string> virtiofsd_command(const nlohmann::json& share, const std::string& override_binary);

} // namespace ks
