#include "tests/e2e/guest_vm.hpp"

#include "snapshot/network.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"
#include "util/unix_socket.hpp"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>
#include <unistd.h>

namespace ks::test {

namespace fs = std::filesystem;

namespace {

// The Go runtime's state file, with what kata-snapshot reads from it: the pod's network
// namespace and its endpoint (tap0_kata connected to eth0 by tc redirect).
void write_persist_json(const std::string& dir, const std::string& netns) {
  nlohmann::json endpoints = nlohmann::json::array();
  if (!netns.empty()) {
    endpoints.push_back({{"Type", "virtual"},
                         {"Veth",
                          {{"NetPair",
                            {{"ID", "uuid-0"},
                             {"Name", "br0_kata"},
                             {"TAPIface", {{"Name", "tap0_kata"}}},
                             {"VirtIface", {{"Name", "eth0"}, {"HardAddr", "02:42:ac:11:00:02"}}},
                             {"NetInterworkingModel", 2}}}}}});
  }
  fs::create_directories(dir);
  std::ofstream(dir + "/persist.json") << nlohmann::json{
    {"PersistVersion", 2},
    {"State", "running"},
    {"Network",
     {{"NetworkID", netns.empty() ? "" : "/run/netns/" + netns},
      {"Endpoints", endpoints},
      {"NetworkCreated", !netns.empty()}}}}.dump();
}

constexpr size_t k_max_reaped = 64;

volatile sig_atomic_t g_reaped[k_max_reaped];
volatile sig_atomic_t g_reaped_count = 0;

void kill_reaped() {
  for (sig_atomic_t i = 0; i < g_reaped_count; ++i) {
    if (g_reaped[i] > 0) {
      ::kill(static_cast<pid_t>(g_reaped[i]), SIGKILL);
    }
  }
}

void on_fatal_signal(int sig) {
  kill_reaped();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (const auto& dir : split(path ? path : "/usr/bin", ':')) {
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return {};
}

} // namespace

void skip(const std::string& reason) {
  std::printf("SKIPPED: %s\n", reason.c_str());
  std::fflush(stdout);
  std::_Exit(77);
}

void reap_later(pid_t pid) {
  if (g_reaped_count < static_cast<sig_atomic_t>(k_max_reaped)) {
    g_reaped[g_reaped_count] = pid;
    g_reaped_count = g_reaped_count + 1;
  }
}

void install_reaper() {
  ::signal(SIGINT, on_fatal_signal);
  ::signal(SIGTERM, on_fatal_signal);
  std::atexit(kill_reaped);
}

const TestEnv& test_env() {
  static TestEnv env = [] {
    TestEnv e;
    std::string cache = std::string(KSNAP_SOURCE_DIR) + "/.cache";
    e.qemu = find_in_path("qemu-system-x86_64");
    e.virtiofsd = cache + "/bin/virtiofsd";
    e.kernel = cache + "/guest/current/vmlinuz";
    e.initrd = cache + "/guest/current/initrd";
    e.initrd_criu = cache + "/guest/current/initrd-criu";
    e.ctr_counter = cache + "/guest/current/ctr-counter";
    e.cli = std::string(KSNAP_BINARY_DIR) + "/kata-snapshot";
    return e;
  }();
  if (env.qemu.empty()) {
    skip("qemu-system-x86_64 is not installed (run `make test`, which installs it)");
  }
  if (!fs::exists(env.kernel) || !fs::exists(env.initrd)) {
    skip("the test guest is not built (" + env.kernel + "); run `make test`");
  }
  return env;
}

GuestVm::GuestVm(GuestOptions options) : m_options(std::move(options)) {
  const TestEnv& env = test_env();
  const bool kata = m_options.profile == Profile::kata;
  const std::string& sandbox = m_options.sandbox_id;
  m_vm_dir = sandbox.empty() ? dir() : kata_root() + "/run/vc/vm/" + sandbox;
  m_share_dir = sandbox.empty()
                  ? m_dir / "share"
                  : kata_root() + "/run/kata-containers/shared/sandboxes/" + sandbox + "/shared";
  fs::create_directories(m_vm_dir);
  Fd qmp_listen;
  std::string mem = std::to_string(m_options.memory_mb) + "M";
  std::string append = "console=ttyS0 quiet panic=-1 ksnap.workload=" + m_options.workload;
  for (const auto& a : m_options.kernel_args) {
    append += " " + a;
  }
  if (m_options.criu && !fs::exists(env.initrd_criu)) {
    skip("the test guest has no CRIU (" + env.initrd_criu + "); run `make test`, which downloads it");
  }
  if (!m_options.containers.empty()) {
    append += container_args();
  }
  // clang-format off
  m_argv = {env.qemu,
            "-name", sandbox.empty() ? "ksnap-test" : "sandbox-" + sandbox,
            "-machine", "q35,accel=tcg",
            "-cpu", "max",
            "-smp", "1,maxcpus=4",
            "-m", mem + ",slots=4,maxmem=2G",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", env.kernel,
            "-initrd", m_options.criu ? env.initrd_criu : env.initrd,
            "-append", append,
            "-chardev", "file,id=con,path=" + console_path() + ",append=on",
            "-serial", "chardev:con",
            "-device", "virtio-serial-pci,id=serial0",
            "-qmp", "unix:" + qmp_path() + ",server=on,wait=off",
            "-pidfile", m_vm_dir + (sandbox.empty() ? "/qemu.pid" : "/pid")};
  if (!sandbox.empty()) {
    // Kata's runtime binds qmp.sock and hands the listening socket to QEMU as fd 3.
    qmp_listen = listen_unix(m_vm_dir + "/qmp.sock");
    m_argv.insert(m_argv.end(), {"-qmp", "unix:fd=3,server=on,wait=off"});
  }
  if (m_options.helper_port) {
    m_argv.insert(m_argv.end(), {
      "-chardev", "socket,id=charhelper,path=" + (m_dir / "helper.sock") + ",server=on,wait=off",
      "-device", "virtserialport,bus=serial0.0,chardev=charhelper,id=helper0,name=org.kata-snapshot.helper.0"});
  }
  if (m_options.disk_mb > 0) {
    std::string disk = m_dir / "disk.img";
    CommandResult mk = run_command({"mkfs.ext4", "-q", "-F", disk, std::to_string(m_options.disk_mb) + "M"});
    if (mk.status != 0) {
      throw Error("mkfs.ext4 failed: " + mk.error_output);
    }
    m_argv.insert(m_argv.end(), {
      "-drive", "file=" + disk + ",if=none,id=disk0,format=raw,cache=unsafe",
      "-device", "virtio-blk-pci,drive=disk0,id=blk0"});
  }
  // clang-format on
  if (kata) {
    fs::create_directories(share_dir());
    std::ofstream(share_dir() + "/hello.txt") << "hello from the host\n";
    for (const auto& [name, content] : m_options.share_files) {
      std::ofstream(share_dir() + "/" + name) << content;
    }
    write_containers();
    std::string vfs_sock = m_vm_dir + "/vhost-fs.sock";
    SpawnOptions vo;
    // Kata's virtiofsd options (Kata passes no --migration-mode). For a sandbox, the socket is
    // bound here and inherited as --fd=3, as Kata does; otherwise virtiofsd binds it.
    vo.argv =
      m_options.virtiofsd_cmd.empty() ? std::vector<std::string>{env.virtiofsd} : m_options.virtiofsd_cmd;
    Fd vfs_listen;
    if (sandbox.empty()) {
      vo.argv.push_back("--socket-path=" + vfs_sock);
    } else {
      vfs_listen = listen_unix(vfs_sock);
      vo.inherit = {{vfs_listen.get(), 3}};
      vo.argv.push_back("--fd=3");
    }
    vo.argv.insert(vo.argv.end(), {"--shared-dir=" + share_dir(), "--cache=auto", "--thread-pool-size=1",
                                   "--announce-submounts", "--sandbox=none", "--seccomp=none"});
    vo.stdout_path = vo.stderr_path = m_dir / "virtiofsd.log";
    m_virtiofsd = ChildProcess::spawn(vo);
    Deadline d(Millis(10000));
    while (!fs::exists(vfs_sock)) {
      if (!m_virtiofsd.running() || d.expired()) {
        throw Error("virtiofsd did not start: " + read_file(m_dir / "virtiofsd.log"));
      }
      std::this_thread::sleep_for(Millis(10));
    }
    std::vector<std::string> more = {
      "-object",  "memory-backend-file,id=dimm1,size=" + mem + ",mem-path=/dev/shm,share=on",
      "-numa",    "node,memdev=dimm1",
      "-device",  "pci-bridge,bus=pcie.0,id=pci-bridge-0,chassis_nr=1,shpc=off,addr=2",
      "-device",  "virtconsole,bus=serial0.0,chardev=charconsole0,id=console0",
      "-chardev", "socket,id=charconsole0,path=" + m_vm_dir + "/console.sock,server=on,wait=off",
      "-object",  "rng-random,id=rng0,filename=/dev/urandom",
      "-device",  "virtio-rng-pci,rng=rng0",
      "-chardev", "socket,id=char-vfs,path=" + vfs_sock,
      "-device",  "vhost-user-fs-pci,chardev=char-vfs,tag=kataShared,queue-size=1024"};
    m_argv.insert(m_argv.end(), more.begin(), more.end());
  }
  SpawnOptions qo;
  std::vector<Fd> tap; // closed once QEMU has it: the tap lives exactly as long as the VM
  if (!m_options.netns.empty()) {
    m_netns = NetNamespace::open(m_options.netns);
    tap = m_netns->open_tap("tap0_kata", 1);
    qo.inherit.emplace_back(tap.at(0).get(), 4);
    qo.netns_fd = m_netns->fd(); // QEMU runs in the pod's namespace, as under Kata

    m_argv.insert(m_argv.end(),
                  {"-netdev", "tap,id=network-0,vhost=off,fds=4", "-device",
                   "driver=virtio-net-pci,netdev=network-0,mac=02:42:ac:11:00:02,disable-modern=false"});
  }
  if (!sandbox.empty()) {
    write_persist_json(kata_root() + "/run/vc/sbs/" + sandbox, m_options.netns);
  }
  m_argv.insert(m_argv.end(), m_options.extra_qemu_args.begin(), m_options.extra_qemu_args.end());
  qo.argv = m_argv;
  qo.stdout_path = qo.stderr_path = m_dir / "qemu.log";
  if (qmp_listen) {
    qo.inherit.emplace_back(qmp_listen.get(), 3);
  }

  m_qemu = ChildProcess::spawn(qo);
  if (qmp_listen) {
    m_shim = qmp::Client::connect(m_vm_dir + "/qmp.sock"); // the shim's one connection
  }
  wait_console("ksnap: ready", Millis(120000));
}

std::string GuestVm::container_args() const {
  std::string start;
  std::string pause;
  for (const auto& c : m_options.containers) {
    if (c.start) {
      start += (start.empty() ? "" : ",") + c.id;
    }
    if (c.paused) {
      pause += (pause.empty() ? "" : ",") + c.id;
    }
  }
  return " ksnap.containers=" + start + (pause.empty() ? "" : " ksnap.pause=" + pause);
}

// Each container as Kata's agent gets it: a rootfs on the share, and the OCI spec (one line:
// guest/init.sh reads process.args and linux.cgroupsPath with sed).
void GuestVm::write_containers() const {
  if (m_options.containers.empty()) {
    return;
  }
  const TestEnv& env = test_env();
  if (!fs::exists(env.ctr_counter)) {
    skip("the containers' workload is not built (" + env.ctr_counter + "); run `make test`");
  }
  for (const auto& c : m_options.containers) {
    fs::path dir = fs::path(share_dir()) / c.id;
    for (const char* d :
         {"rootfs/bin", "rootfs/proc", "rootfs/dev", "rootfs/run", "rootfs/tmp", "rootfs/.oldroot"}) {
      fs::create_directories(dir / d);
    }
    fs::copy_file("/bin/busybox", dir / "rootfs/bin/busybox");
    fs::copy_file(env.ctr_counter, dir / "rootfs/bin/ctr-counter");
    nlohmann::json args = {"/bin/ctr-counter"};
    if (c.session_leader) {
      args.push_back("--setsid");
    }
    args.push_back(std::to_string(c.heap_mb));
    nlohmann::json spec = {
      {"ociVersion", "1.0.2"},
      {"process", {{"args", args}, {"cwd", "/"}, {"terminal", false}}},
      {"root", {{"path", "rootfs"}}},
      {"hostname", c.id},
      {"annotations", {{"io.kubernetes.cri.container-name", c.id}}},
      {"linux",
       {{"cgroupsPath", "/kata/" + c.id},
        {"namespaces", {{{"type", "pid"}}, {{"type", "mount"}}, {{"type", "uts"}}, {{"type", "ipc"}}}}}}};
    std::ofstream(dir / "config.json") << spec.dump() << "\n";
  }
}

GuestVm::~GuestVm() {
  kill();
}

void GuestVm::kill() {
  if (m_qemu.pid() > 0) {
    m_qemu.terminate(Millis(0));
  }
  if (m_virtiofsd.pid() > 0) {
    m_virtiofsd.terminate(Millis(0));
  }
}

std::string ConsoleLog::text() const {
  std::string text;
  try {
    text = read_file(m_path);
  } catch (const Error&) {
    return {};
  }
  std::erase(text, '\r');
  return text;
}

std::string ConsoleLog::wait(const std::string& needle, Millis timeout, size_t offset) const {
  Deadline deadline(timeout);
  for (;;) {
    std::string all = text();
    size_t pos = all.size() > offset ? all.find(needle, offset) : std::string::npos;
    if (pos != std::string::npos) {
      size_t start = all.rfind('\n', pos);
      start = start == std::string::npos ? 0 : start + 1;
      // Only a whole line: the guest may not have written the rest of it yet.
      if (size_t end = all.find('\n', pos); end != std::string::npos) {
        return all.substr(start, end - start);
      }
    }
    if (deadline.expired()) {
      throw Error("the guest did not print \"" + needle + "\" within " +
                  std::to_string(timeout.count() / 1000) + " s; console tail:\n" +
                  all.substr(all.size() > 2000 ? all.size() - 2000 : 0) +
                  "\nqemu log: " + log_tail(m_qemu_log, 5));
    }
    std::this_thread::sleep_for(Millis(50));
  }
}

long ConsoleLog::last_tick() const {
  static const std::regex tick(R"(ksnap: tick (\d+))");
  std::string all = text();
  all.resize(all.rfind('\n') == std::string::npos ? 0 : all.rfind('\n')); // whole lines only
  long last = -1;
  for (auto it = std::sregex_iterator(all.begin(), all.end(), tick); it != std::sregex_iterator(); ++it) {
    last = std::stol((*it)[1]);
  }
  return last;
}

CommandResult run_cli(const std::vector<std::string>& args, Millis timeout) {
  std::vector<std::string> argv{test_env().cli};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

} // namespace ks::test
