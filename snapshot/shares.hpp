// virtio-fs shares on load: restoring each shared directory from the archive, and starting
// a virtiofsd per share before QEMU connects to it.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/qemu_argv.hpp"
#include "storage/archive_reader.hpp"
#include "util/child_process.hpp"

#include <functional>
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

  // True when the snapshot has no shares: restore() and start_daemons() do nothing.
  bool empty() const { return m_shares.empty(); }
  // Reads the shares/ members that precede the vmstate and restores each directory.
  void restore(ArchiveReader& reader);
  // A live save's share delta met among the vmstate chunks (it precedes the device state,
  // against which virtiofsd resolves its files): applied at once. False for another member.
  bool apply_inline(const ArchiveReader& reader, ArchiveReader::Member& member);
  // Starts one virtiofsd per share, its socket in RUN_DIR, and waits until it listens;
  // STARTED hears of each pid as soon as it runs.
  void start_daemons(const std::string& run_dir, const std::function<void(pid_t)>& started);
  // chardev id -> the new virtiofsd socket, for the argv rewrite.
  const std::map<std::string, std::string>& chardev_paths() const { return m_sockets; }

  // The daemons' pids.
  std::vector<pid_t> pids() const;
  // Hands the daemons over to the restored VM; returns their pids.
  std::vector<int> release_daemons();

private:
  std::string target_dir(const Json& share) const;
  void prepare_target(const Json& share, const std::string& dir) const;
  // The share whose base, removal list or delta NAME is (nullptr for none), and which.
  enum class Part { base, removed, delta };
  const Json* share_of(const std::string& name, Part& part) const;
  void apply_removed(const Json& share, const std::string& json, const std::string& what) const;

  Json m_shares = Json::array();
  std::map<std::string, std::string> m_share_dirs;
  std::string m_virtiofsd;
  bool m_force = false;
  std::map<std::string, std::string> m_sockets; // chardev id -> socket
  std::vector<std::unique_ptr<ChildProcess>> m_daemons;
};

} // namespace ks
