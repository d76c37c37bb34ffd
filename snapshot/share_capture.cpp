#include "snapshot/share_capture.hpp"

#include "snapshot/host_check.hpp"
#include "storage/tar.hpp"
#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

#include <climits>
#include <fcntl.h>
#include <filesystem>
#include <regex>
#include <unistd.h>

namespace ks {

namespace fs = std::filesystem;

nlohmann::json ShareInfo::to_json() const {
  return {{"tag", tag},
          {"chardev", chardev},
          {"socket", socket},
          {"source_dir", source_dir},
          {"capture", capture},
          {"member", capture == "full" ? member() : ""},
          {"lost_on_restore", deleted_open},
          {"virtiofsd",
           {{"argv", virtiofsd_argv},
            {"args", virtiofsd_args},
            {"binary", virtiofsd_binary},
            {"loader", virtiofsd_loader},
            {"version", virtiofsd_version}}}};
}

namespace {

// Inodes of UNIX sockets bound to PATH: the listener and connections accepted from it. A
// socket is listed in the network namespace it was made in, so both ours and QEMU's are read
// (under Kata, QEMU runs in the pod's namespace and virtiofsd may not).
std::vector<std::string> socket_inodes(const std::string& path, pid_t qemu_pid) {
  std::vector<std::string> out;
  for (const std::string& table :
       {std::string("/proc/self/net/unix"), "/proc/" + std::to_string(qemu_pid) + "/net/unix"}) {
    for (const auto& line : split(read_file(table), '\n')) {
      auto cols = split(trim(line), ' ');
      std::erase(cols, "");
      if (cols.size() >= 8 && cols[7] == path) {
        out.push_back(cols[6]);
      }
    }
  }
  return out;
}

// The process (other than EXCLUDE) holding one of the sockets INODES.
pid_t socket_owner(const std::vector<std::string>& inodes, pid_t exclude) {
  for (const auto& proc : fs::directory_iterator("/proc")) {
    std::string name = proc.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos || std::stoi(name) == exclude) {
      continue;
    }
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator(proc.path() / "fd", ec)) {
      std::string target = fs::read_symlink(fd.path(), ec);
      for (const auto& inode : inodes) {
        if (target == "socket:[" + inode + "]") {
          return std::stoi(name);
        }
      }
    }
  }
  return -1;
}

// Deleted files under DIR that PID still holds open (/proc/PID/fd links ending in "(deleted)").
std::vector<std::string> deleted_open_files(pid_t pid, const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  const std::string suffix = " (deleted)";
  for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::string target = fs::read_symlink(fd.path(), ec).string();
    if (target.rfind(dir + "/", 0) == 0 && target.ends_with(suffix)) {
      out.push_back(target.substr(0, target.size() - suffix.size()));
    }
  }
  std::sort(out.begin(), out.end()); // virtiofsd holds an inode fd and a handle fd per file
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string option_value(const std::vector<std::string>& argv, const std::string& option) {
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i].rfind(option + "=", 0) == 0) {
      return argv[i].substr(option.size() + 1);
    }
    if (argv[i] == option && i + 1 < argv.size()) {
      return argv[i + 1];
    }
    // C virtiofsd: -o source=DIR
    if (option == "--shared-dir" && argv[i] == "-o" && i + 1 < argv.size()) {
      for (const auto& o : split(argv[i + 1], ',')) {
        if (o.rfind("source=", 0) == 0) {
          return o.substr(7);
        }
      }
    }
  }
  return {};
}

// The real program behind PID: its exe, or the virtiofsd mapped by the ELF loader it runs under.
void find_binary(ShareInfo& s) {
  std::string exe = fs::read_symlink("/proc/" + std::to_string(s.virtiofsd_pid) + "/exe");
  s.virtiofsd_binary = exe;
  if (fs::path(exe).filename().string().rfind("ld-linux", 0) != 0) {
    return;
  }
  s.virtiofsd_loader = exe;
  for (const auto& line : split(read_file("/proc/" + std::to_string(s.virtiofsd_pid) + "/maps"), '\n')) {
    auto slash = line.find('/');
    if (slash != std::string::npos && line.find("r-xp") != std::string::npos) {
      std::string path = line.substr(slash);
      if (fs::path(path).filename() == "virtiofsd") {
        s.virtiofsd_binary = path;
        return;
      }
    }
  }
}

} // namespace

std::vector<std::string> virtiofsd_command(const nlohmann::json& share, const std::string& override_binary) {
  if (!override_binary.empty()) {
    return {override_binary};
  }
  const auto& v = share["virtiofsd"];
  std::string loader = v.value("loader", "");
  std::string binary = v.value("binary", "");
  if (!loader.empty()) {
    return {loader, "--library-path", fs::path(loader).parent_path().string(), binary};
  }
  return {binary};
}

std::vector<pid_t> virtiofsd_pids(const QemuArgv& argv, pid_t qemu_pid) {
  std::vector<pid_t> pids;
  for (const auto& dev : argv.all("device")) {
    if (dev.driver() != "vhost-user-fs-pci") {
      continue;
    }
    auto socket = argv.chardev_socket_path(dev.get("chardev").value_or(""));
    if (pid_t pid = socket ? socket_owner(socket_inodes(*socket, qemu_pid), qemu_pid) : -1; pid > 0) {
      pids.push_back(pid);
    }
  }
  return pids;
}

std::vector<ShareInfo> discover_shares(const QemuArgv& argv, pid_t qemu_pid,
                                       const std::map<std::string, std::string>& policy) {
  std::vector<ShareInfo> out;
  for (const auto& dev : argv.all("device")) {
    if (dev.driver() != "vhost-user-fs-pci") {
      continue;
    }
    ShareInfo s;
    s.tag = dev.get("tag").value_or("");
    s.chardev = dev.get("chardev").value_or("");
    s.socket = argv.chardev_socket_path(s.chardev).value_or("");
    auto p = policy.find(s.tag);
    s.capture = p == policy.end() ? "full" : p->second;
    if (s.socket.empty()) {
      throw Error("virtio-fs share " + s.tag + ": chardev " + s.chardev +
                  " is not a UNIX socket with a path");
    }
    s.virtiofsd_pid = socket_owner(socket_inodes(s.socket, qemu_pid), qemu_pid);

    if (s.virtiofsd_pid <= 0) {
      throw Error("virtio-fs share " + s.tag + ": no process serves its socket " + s.socket, ExitCode::failed,
                  "is virtiofsd running for this VM?");
    }
    s.virtiofsd_argv = read_proc_cmdline(s.virtiofsd_pid);
    s.source_dir = option_value(s.virtiofsd_argv, "--shared-dir");
    find_binary(s);
    // The program's own arguments start after the binary (after argv[0] without a loader).
    auto binary_at = std::find(s.virtiofsd_argv.begin(), s.virtiofsd_argv.end(), s.virtiofsd_binary);
    auto first_arg = s.virtiofsd_loader.empty() || binary_at == s.virtiofsd_argv.end()
                       ? s.virtiofsd_argv.begin() + 1
                       : binary_at + 1;
    s.virtiofsd_args.assign(first_arg, s.virtiofsd_argv.end());

    std::string binary_text = read_file(s.virtiofsd_binary);
    s.migratable = binary_text.find("migration-mode") != std::string::npos;
    std::vector<std::string> version_cmd = virtiofsd_command(s.to_json(), "");
    version_cmd.push_back("--version");
    try {
      s.virtiofsd_version = trim(run_command(version_cmd, std::chrono::seconds(10)).output);
    } catch (const Error&) {
      s.virtiofsd_version = "unknown";
    }
    if (s.source_dir.empty()) {
      throw Error("virtio-fs share " + s.tag +
                  ": cannot tell virtiofsd's shared directory from its command line");
    }
    s.deleted_open = deleted_open_files(s.virtiofsd_pid, s.source_dir);

    out.push_back(std::move(s));
  }
  for (const auto& entry : policy) {
    const std::string& tag = entry.first; // (not a structured binding: lambdas capture it)
    bool known = std::any_of(out.begin(), out.end(), [&](const ShareInfo& s) { return s.tag == tag; });
    if (!known) {
      throw Error("--share " + tag + "=" + entry.second + ": the VM has no virtio-fs share with that tag",

                  ExitCode::usage);
    }
  }
  return out;
}

void preflight_shares(const std::vector<ShareInfo>& shares, const std::string& qemu_version) {
  if (shares.empty()) {
    return;
  }
  if (parse_version(qemu_version) < parse_version("8.2")) {
    throw Error(
      "QEMU " + qemu_version + " cannot migrate virtio-fs devices (vhost-user-fs is unmigratable before 8.2)",
      ExitCode::failed, "run the VM on QEMU 8.2 or newer (Debian: qemu-system-x86 from bookworm-backports)");
  }
  for (const auto& s : shares) {
    if (!s.migratable) {
      throw Error("virtio-fs share " + s.tag + ": virtiofsd " + s.virtiofsd_binary +
                    " cannot migrate its state (it has no --migration-mode)",
                  ExitCode::failed, "run the Rust virtiofsd 1.11 or newer (Debian trixie ships 1.13)");
    }
    if (s.capture == "full" && !fs::is_directory(s.source_dir)) {
      throw Error("virtio-fs share " + s.tag + ": " + s.source_dir + " is not a directory");
    }
  }
}

ShareCapture capture_to_temp(const std::string& temp_dir, const std::string& what,
                             const std::function<uint64_t(int fd)>& write) {
  ShareCapture c;
  c.file = Fd(::open(temp_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!c.file) {
    throw_errno("failed to create a temporary file in " + temp_dir + " for " + what);
  }
  c.entries = write(c.file.get());
  off_t size = ::lseek(c.file.get(), 0, SEEK_END);
  ::lseek(c.file.get(), 0, SEEK_SET);
  c.size = static_cast<uint64_t>(size);
  Sha256 hash;
  std::vector<std::byte> buf(1 << 20);
  while (size_t n = read_full(c.file.get(), buf, what)) {
    hash.update(std::span(buf).first(n));
  }
  c.sha256 = hash.hex_digest();
  ::lseek(c.file.get(), 0, SEEK_SET);
  return c;
}

ShareCapture capture_share(const ShareInfo& share, const std::string& temp_dir, int level) {
  return capture_to_temp(temp_dir, "the capture of share " + share.tag,
                         [&](int fd) { return write_tree_tar_zst(share.source_dir, fd, level); });
}

} // namespace ks
