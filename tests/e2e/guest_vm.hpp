// The end-to-end fixture: boots the test guest (Debian kernel, busybox initramfs, our helper)
// under real QEMU (TCG), optionally with a real virtiofsd, and reads what the guest prints.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/network.hpp"

#include "tests/support/fake_qmp.hpp"
#include "util/child_process.hpp"

#include <map>
#include <optional>
#include <string>

#include <vector>

namespace ks::test {

enum class Profile {
  plain, // q35, virtio-serial with the helper port, serial console to a file
  kata,  // plus Kata's memory backend, pci-bridge, virtconsole, virtio-rng, virtio-fs
};

// A container for workload "containers" (guest/init.sh): its rootfs (busybox, ctr-counter)
// and a config.json in the share, laid out as Kata's agent lays a container out. Its init runs
// `ctr-counter [--setsid] HEAP_MB`; START: running at boot, or only its bundle there; PAUSED:
// frozen 2 s after boot.
struct TestContainer {
  std::string id;
  unsigned heap_mb = 0;
  bool session_leader = true;
  bool start = true;
  bool paused = false;
};

struct GuestOptions {
  Profile profile = Profile::plain;
  std::string workload = "counter";
  unsigned memory_mb = 256;
  std::vector<std::string> kernel_args;
  std::vector<std::string> extra_qemu_args;
  bool helper_port = true;                        // the virtserialport for kata-snapshot-helper
  unsigned disk_mb = 0;                           // a virtio-blk disk with ext4 (workload "disk")
  std::map<std::string, std::string> share_files; // kata profile: files written into the share first
  std::vector<std::string> virtiofsd_cmd;         // kata profile: instead of the installed virtiofsd
  // kata profile: lay the VM out as Go-runtime sandbox ID under dir()/root, as Kata does: QMP
  // handed over as -qmp unix:fd=3 and held by a pretend shim, extra-monitor.sock, virtiofsd
  // started with --fd=3, -name sandbox-ID.
  std::string sandbox_id;
  // kata profile: a network namespace (an `ip netns` name). As Kata's Go runtime does, the VM
  // gets a virtio-net on tap0_kata created in it and passed as -netdev tap,fds=, and the
  // sandbox's persist.json names the namespace.
  std::string netns;
  // kata profile, workload "containers": the containers in the share.
  std::vector<TestContainer> containers;
  bool criu = false; // boot initrd-criu: CRIU with its libraries, GNU tar and gzip, its modules
};

// Paths of the tools and the guest image; calls skip() when something is missing.
struct TestEnv {
  std::string qemu;
  std::string virtiofsd;
  std::string kernel;
  std::string initrd;
  std::string initrd_criu; // initrd plus CRIU (scripts/build-guest.sh)
  std::string ctr_counter; // the containers' workload, static
  std::string cli;         // the kata-snapshot binary
};
const TestEnv& test_env();

// Reports the test as skipped to CTest (exit code 77) with REASON.
[[noreturn]] void skip(const std::string& reason);

// Kills PID at teardown and on SIGINT/SIGTERM of the test process (for detached processes).
void reap_later(pid_t pid);
void install_reaper();

// A guest's serial console written to a file: read it, and wait for what the guest prints.
class ConsoleLog {
public:
  ConsoleLog(std::string path, std::string qemu_log)
    : m_path(std::move(path)), m_qemu_log(std::move(qemu_log)) {}
  // What the guest printed, with \r removed (the serial console ends lines with \r\n).
  std::string text() const;
  // Waits until a line containing NEEDLE appears after byte OFFSET; returns that line.
  std::string wait(const std::string& needle, Millis timeout = Millis(60000), size_t offset = 0) const;
  // The last "ksnap: tick N" the guest printed, or -1.
  long last_tick() const;

private:
  std::string m_path;
  std::string m_qemu_log;
};

class GuestVm {
public:
  explicit GuestVm(GuestOptions options);
  ~GuestVm();

  const std::string& dir() const { return m_dir.path(); }
  // The QMP socket the test may use (extra-monitor.sock for a sandbox: the shim holds qmp.sock).
  std::string qmp_path() const {
    return m_vm_dir + (m_options.sandbox_id.empty() ? "/qmp.sock" : "/extra-monitor.sock");
  }
  std::string kata_root() const { return m_dir / "root"; }
  std::string console_path() const { return m_dir / "console.log"; }
  std::string share_dir() const { return m_share_dir; }
  std::vector<std::string> argv() const { return m_argv; }
  pid_t qemu_pid() const { return m_qemu.pid(); }
  pid_t virtiofsd_pid() const { return m_virtiofsd.pid(); }

  // Waits until the console shows a line containing NEEDLE after byte OFFSET; returns it.
  std::string wait_console(const std::string& needle, Millis timeout = Millis(60000),
                           size_t offset = 0) const {
    return m_console.wait(needle, timeout, offset);
  }
  // What the guest printed on its serial console, with \r removed.
  std::string console() const { return m_console.text(); }
  // The last "ksnap: tick N" the guest printed, or -1.
  long last_tick() const { return m_console.last_tick(); }

  qmp::Client qmp() const { return qmp::Client::connect(qmp_path()); }

  // Kills QEMU and virtiofsd (as a crash would), leaving the run directory in place.
  void kill();

private:
  std::string container_args() const; // ksnap.containers= and ksnap.pause= for the kernel
  void write_containers() const;

  GuestOptions m_options;
  TempDir m_dir;
  ConsoleLog m_console{m_dir / "console.log", m_dir / "qemu.log"};
  std::string m_vm_dir;
  std::string m_share_dir;
  std::optional<qmp::Client> m_shim;
  std::optional<NetNamespace> m_netns;
  std::vector<std::string> m_argv;
  ChildProcess m_virtiofsd;
  ChildProcess m_qemu;
};

// kata-snapshot ARGS..., with stdout and stderr captured.
CommandResult run_cli(const std::vector<std::string>& args, Millis timeout = Millis(300000));

} // namespace ks::test
