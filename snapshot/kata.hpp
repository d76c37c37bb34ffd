// Kata Containers sandboxes: where a sandbox's QEMU, sockets and shared directory are, for the
// Go runtime (/run/vc/...) and runtime-rs (/run/kata/...), under an optional root prefix.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

struct Sandbox {
  std::string id;
  std::string runtime; // "go" or "rs"
  std::string vm_dir;  // /run/vc/vm/<id> or /run/kata/<id>
  std::string qmp;     // the socket kata-snapshot should use (qmp.sock or extra-monitor.sock)
  pid_t qemu_pid = -1;
  std::string shared_dir; // the host side of the kataShared share
};

// Finds sandbox ID under KATA_ROOT ("/" normally). Picks the QMP socket that is free: the shim
// holds qmp.sock, so extra-monitor.sock is used when qmp.sock does not greet. Throws with the
// configuration hint when neither answers.
Sandbox find_sandbox(const std::string& id, const std::string& kata_root);

// What the manifest records about sandbox S: id, runtime, and from the Go runtime's
// /run/vc/sbs/<id>/persist.json (when present) its network namespace and network endpoints.
nlohmann::json sandbox_record(const Sandbox& s, const std::string& kata_root);

// The QEMU process whose command line has -name sandbox-ID (or -1).

pid_t find_sandbox_qemu(const std::string& id);

// The QMP socket for a command given exactly one of --qmp SOCKET or --sandbox ID.
std::string resolve_qmp(const std::string& qmp, const std::string& sandbox, const std::string& kata_root);

// Every QEMU VM on the host, with what `ps` shows.

nlohmann::json list_vms(const std::string& kata_root);

} // namespace ks
