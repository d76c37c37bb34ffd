#include "snapshot/shares.hpp"

#include "util/error.hpp"

namespace ks {

ShareRestore::ShareRestore(const Json& manifest, std::map<std::string, std::string> share_dirs,
                           std::string virtiofsd, bool force)
  : m_shares(manifest.value("shares", Json::array())), m_share_dirs(std::move(share_dirs)),
    m_virtiofsd(std::move(virtiofsd)), m_force(force) {
  QemuArgv argv(manifest["qemu"]["argv"].get<std::vector<std::string>>());
  for (const auto& dev : argv.all("device")) {
    if (dev.get("") == "vhost-user-fs-pci" && m_shares.empty()) {
      throw Error("the snapshot has a virtio-fs device but no recorded share", ExitCode::archive_invalid);
    }
  }
}

void ShareRestore::start_daemons(const std::string& /*run_dir*/) {}

std::map<std::string, std::string> ShareRestore::chardev_paths(const QemuArgv& /*recorded*/) const {
  return m_sockets;
}

void ShareRestore::replay_devices(qmp::Client& qmp, const Json& manifest) {
  for (const auto& cmd : manifest.value("devices_added", Json::array())) {
    qmp.execute(cmd.at("execute").get<std::string>(), cmd.value("arguments", Json::object()));
  }
}

void ShareRestore::take_member(ArchiveReader::Member&& member) {
  throw Error("unexpected member " + member.name + " in the archive", ExitCode::archive_invalid);
}

std::vector<int> ShareRestore::release_daemons() {
  std::vector<int> pids;
  for (auto& d : m_daemons) {
    pids.push_back(d->release());
  }
  return pids;
}

} // namespace ks
