// virtio-fs shares on load: restoring each shared directory from the archive, and starting
// a virtiofsd per share before QEMU connects to it.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/qemu_argv.hpp"
#include "storage/archive_reader.hpp"
#include "util/child_process.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ks {

class ShareRestore {
public:
  ShareRestore() = default;
  ShareRestore(const Json& manifest, std::map<std::string, std::string> share_dirs, std::string virtiofsd,
               bool force);

  // Starts one virtiofsd per share, with its socket in RUN_DIR.
  void start_daemons(const std::string& run_dir);
  // chardev id -> the new virtiofsd socket, for the argv rewrite.
  std::map<std::string, std::string> chardev_paths(const QemuArgv& recorded) const;
  // Re-creates the devices added after boot (recorded as QMP commands).
  void replay_devices(qmp::Client& qmp, const Json& manifest);
  // A non-vmstate member met while streaming.
  void take_member(ArchiveReader::Member&& member);
  // Hands the daemons over to the restored VM; returns their pids.
  std::vector<int> release_daemons();

private:
  Json m_shares = Json::array();
  std::map<std::string, std::string> m_share_dirs;
  std::string m_virtiofsd;
  bool m_force = false;
  std::map<std::string, std::string> m_sockets; // chardev id -> socket
  std::vector<std::unique_ptr<ChildProcess>> m_daemons;
};

} // namespace ks
