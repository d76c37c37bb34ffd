// The load pipeline: open archive -> host check -> run directory -> start QEMU with
// -S -incoming defer -> feed the checked, decompressed stream -> cont -> refresh the guest.
// Until the end, LoadSession owns the new QEMU: any failure kills it and nothing is left.
#include "snapshot/load_session.hpp"
#include "snapshot/vhost_inflight.hpp"

#include "qmp/qmp_client.hpp"
#include "snapshot/argv_rewrite.hpp"
#include "snapshot/guest_refresh.hpp"
#include "snapshot/host_check.hpp"
#include "snapshot/mapped_ram.hpp"
#include "snapshot/network.hpp"
#include "snapshot/shares.hpp"
#include "snapshot/step_timer.hpp"
#include "snapshot/vm.hpp"
#include "snapshot/watchdog.hpp"
#include "storage/archive_reader.hpp"
#include "storage/store/store.hpp"
#include "util/cancel.hpp"
#include "util/child_process.hpp"
#include "util/deadline.hpp"
#include "util/fault.hpp"
#include "util/signature.hpp"

#include "util/strings.hpp"
#include "util/unix_socket.hpp"

#include <algorithm>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace fs = std::filesystem;

nlohmann::json LoadResult::to_json() const {
  return {
    {"qemu_pid", qemu_pid}, {"qmp", qmp},         {"run_dir", run_dir}, {"virtiofsd_pids", virtiofsd_pids},
    {"status", status},     {"seconds", seconds}, {"guest", guest}};
}

namespace {

std::string default_run_dir() {
  std::string base =
    ::geteuid() == 0 ? "/run/kata-snapshot" : "/tmp/kata-snapshot-" + std::to_string(::geteuid());
  return base + "/vm-" + std::to_string(::time(nullptr)) + "-" + std::to_string(::getpid());
}

} // namespace

void LoadSession::open_archive() {
  // Keys are read, and a signature and an encrypted snapshot's seals checked, before
  // anything else happens.
  std::optional<VerifyKey> verify_key;
  if (!m_o.require_signature.empty()) {
    verify_key = VerifyKey::load(m_o.require_signature);
  }
  std::optional<DecryptKey> decrypt_key;
  if (!m_o.decrypt_key.empty()) {
    decrypt_key = DecryptKey::load(m_o.decrypt_key);
  }
  m_reader = open_snapshot(m_o.archive, m_o.registry); // a .ksnap file, stdin, or a repository's snapshot
  if (manifest_kind(m_reader->manifest()) == k_kind_container) {
    throw Error(m_o.archive + " is a container checkpoint, not a whole-VM snapshot", ExitCode::usage,
                "restore it into a running VM: kata-snapshot load " + m_o.archive +
                  " --into (--sandbox ID | --qmp SOCKET)");
  }
  if (m_reader->encrypted() && !decrypt_key) {
    throw Error(m_o.archive + " is encrypted", ExitCode::usage,
                "pass --decrypt-key with the private key or key file of one of its recipients "
                "(kata-snapshot inspect shows them)");
  }
  if (decrypt_key) {
    m_reader->unlock(*decrypt_key);
  }
  std::optional<PeekedIndex> peeked;
  bool from_pipe = parse_reference(m_o.archive).kind == Reference::Kind::pipe;
  if (verify_key || (decrypt_key && !from_pipe)) { // from a pipe, seals are checked as members arrive
    peeked =
      peek_index(m_o.archive, verify_key ? "a signature is checked" : "seals are checked", m_o.registry);
  }
  if (verify_key) {
    verify_key->check(peeked->signature, peeked->text, m_o.archive);
  }
  if (decrypt_key && peeked) {
    check_sealed_headers(*peeked, *m_reader);
  }
  if (peeked) { // and the index read at the end must be that one, byte for byte
    m_reader->expect_index(peeked->text);
  }
  m_shares = ShareRestore(m_reader->manifest(), m_o.share_dirs, m_o.virtiofsd, m_o.force);
  m_network = NetworkInfo::from_json(m_reader->manifest().value("network", nlohmann::json()));
  m_layout = m_reader->manifest()["vmstate"].value("layout", k_layout_stream);
}

void LoadSession::prepare_network() {
  if (!m_o.netns.empty()) {
    m_netns = NetNamespace::open(m_o.netns);
  }
  if (m_network.taps.empty()) {
    return;
  }
  if (!m_netns) {
    std::vector<std::string> names;
    for (const auto& t : m_network.taps) {
      names.push_back(t.ifnames.at(0));
    }
    std::string source_ns = m_network.netns;
    if (source_ns.empty()) { // Kata's persist.json names the pod's namespace
      const auto& kata = m_reader->manifest().value("kata", nlohmann::json());
      if (kata.is_object() && kata.contains("persist")) {
        source_ns = kata["persist"].value("netns", "");
      }
    }

    throw Error("the snapshot has tap network devices (" + join(names, ", ") +
                  ") that QEMU received as file descriptors; load re-creates them in a network namespace",
                ExitCode::usage,
                "pass --netns NAME|PATH" +
                  (source_ns.empty() ? std::string() : " (the source VM ran in " + source_ns + ")"));
  }
  for (const auto& t : m_network.taps) {
    m_taps[t.id] = m_netns->open_tap(t.ifnames.at(0), t.ifnames.size());
  }
  // Kata's tcfilter endpoints (from persist.json): the pod's interface redirects to the tap.
  const auto& kata = m_reader->manifest().value("kata", nlohmann::json());
  if (!kata.is_object() || !kata.contains("persist")) {
    return;
  }
  for (const auto& e : kata["persist"].value("endpoints", nlohmann::json::array())) {
    std::string tap = e.value("tap", "");
    std::string iface = e.value("interface", "");
    bool recreated = std::any_of(m_network.taps.begin(), m_network.taps.end(),
                                 [&](const TapNetdev& t) { return t.ifnames.at(0) == tap; });
    if (e.value("interworking_model", -1) != k_kata_tcfilter_model || !recreated || iface.empty()) {
      continue;
    }
    try {
      m_netns->connect_tc_redirect(iface, tap);
    } catch (const Error& err) { // the VM itself is fine: say what to fix
      std::fprintf(stderr, "kata-snapshot: warning: %s (hint: %s)\n", err.what(), err.hint().c_str());
    }
  }
}

void LoadSession::restore_shares() {
  if (!m_shares.empty()) {
    await_host_check(); // nothing is written into a share directory for a load that cannot be done
  }
  m_shares.restore(*m_reader);
}

void LoadSession::other_member(ArchiveReader::Member&& m) {
  if (m_shares.apply_inline(*m_reader, m)) {
    return;
  }
  throw Error(m_reader->what() + ": unexpected member " + m.name + " among the vmstate chunks",
              ExitCode::archive_invalid);
}

void LoadSession::guard() {
  WatchdogPlan plan;
  plan.run_dir = m_run_dir;
  m_watchdog.emplace(plan);
  created_socket(m_qmp_path); // a QEMU that is stopped leaves its sockets
}

void LoadSession::created_socket(const std::string& path) {
  m_sockets.paths.push_back(path);
  m_watchdog->also_remove(path);
}

void LoadSession::prepare_run_dir() {
  m_run_dir = !m_o.run_dir.empty() ? m_o.run_dir
              : m_o.name.empty()
                ? default_run_dir()
                : fs::path(default_run_dir()).parent_path().string() + "/sandbox-" + m_o.name;
  std::error_code ec;
  fs::create_directories(m_run_dir, ec);
  if (ec) {
    throw Error("failed to create the run directory " + m_run_dir + ": " + ec.message());
  }
  ::chmod(m_run_dir.c_str(), 0700);
  m_qmp_path = m_o.qmp_socket.empty() ? m_run_dir + "/qmp.sock" : m_o.qmp_socket;
  if (socket_in_use(m_qmp_path)) {
    throw Error(m_qmp_path + " is in use by a running VM", ExitCode::failed,
                "pass another --run-dir or --qmp");
  }
  fs::remove(m_qmp_path, ec); // a stale socket from a VM that is gone, if any
}

void LoadSession::start_qemu() {
  QemuArgv recorded(m_reader->manifest()["qemu"]["argv"].get<std::vector<std::string>>());
  RewriteOptions ro{m_run_dir,
                    m_qmp_path,
                    m_shares.chardev_paths(),
                    {},
                    vhost_net_usable(),
                    m_reader->manifest()["qemu"].value("machine", ""),
                    m_o.name.empty() ? std::string() : "sandbox-" + m_o.name};

  // Taps of -netdev options become inherited fds 3, 4, ... of the new QEMU.
  std::vector<std::pair<int, int>> inherit;
  for (const auto& netdev : recorded.all("netdev")) {
    auto tap = m_taps.find(netdev.get("id").value_or(""));
    if (tap == m_taps.end()) {
      continue;
    }
    for (const Fd& fd : tap->second) {
      int target = 3 + static_cast<int>(inherit.size());
      inherit.emplace_back(fd.get(), target);
      ro.tap_fds[tap->first].push_back(target);
    }
  }
  RewriteResult rw = rewrite_for_restore(recorded, ro);
  for (const auto& w : rw.warnings) {
    std::fprintf(stderr, "kata-snapshot: warning: %s\n", w.c_str());
  }
  m_helper_socket = helper_socket_path(rw.argv);

  std::vector<std::string> argv = rw.argv.to_argv();
  // The sockets QEMU will create in the run directory (chardevs: console, helper, ...).
  for (const auto& arg : argv) {
    for (std::string token : split(arg, ',')) {
      token =
        token.substr(token.find_first_of("=:") == std::string::npos ? 0 : token.find_first_of("=:") + 1);
      if (token.rfind(m_run_dir + "/", 0) == 0 && token.size() > 5 && token.ends_with(".sock")) {
        created_socket(token);
      }
    }
  }
  argv[0] = qemu_binary(m_reader->manifest(), m_o.qemu);
  SpawnOptions so;
  so.argv = argv;
  so.stdout_path = so.stderr_path = log_path();
  so.detach = Detach::yes;
  so.inherit = inherit;
  so.netns_fd = m_netns ? m_netns->fd() : -1; // as under Kata: QEMU runs in the pod's namespace
  try {
    m_qemu = ChildProcess::spawn(so);
    m_watchdog->also_stop(m_qemu.pid());
  } catch (const Error&) {
    await_host_check(); // "QEMU cannot be run" with the hint, if that is why
    throw;
  }
  Deadline deadline(std::chrono::seconds(60));
  while (!fs::exists(m_qmp_path)) {
    if (!m_qemu.running()) {
      qemu_failed("starting");
    }
    if (deadline.expired()) {
      throw Error("QEMU did not open its QMP socket " + m_qmp_path + " within 60 s");
    }
    std::this_thread::sleep_for(Millis(2));
  }
  m_qmp = qmp::Client::connect(m_qmp_path);
}

void LoadSession::replay_devices() {
  for (const auto& cmd : m_reader->manifest().value("devices_added", Json::array())) {
    Json args = cmd.value("arguments", Json::object());
    try {
      if (cmd.contains("tap")) { // getfd of a re-created tap queue
        const Json& tap = cmd["tap"];
        auto fds = m_taps.find(tap.at("netdev").get<std::string>());
        size_t queue = tap.at("queue");
        if (fds == m_taps.end() || queue >= fds->second.size()) {
          throw Error("the snapshot's devices_added names tap " + tap.dump() +
                        " missing from its network section",
                      ExitCode::archive_invalid);
        }
        m_qmp->execute_with_fd("getfd", args, fds->second[queue].get());
        continue;
      }
      if (cmd.at("execute") == "netdev_add" && args.value("vhost", false) && !vhost_net_usable()) {
        std::fprintf(stderr, "kata-snapshot: warning: %s\n", vhost_net_dropped(args.value("id", "")).c_str());

        args["vhost"] = false;
      }
      m_qmp->execute(cmd.at("execute").get<std::string>(), args);
    } catch (const qmp::CommandError& e) {

      throw Error("failed to re-create a device added after boot (" + cmd.dump() + "): " + e.desc(),
                  ExitCode::archive_invalid);
    }
  }
}

void LoadSession::qemu_failed(const std::string& doing) {
  auto status = m_qemu.wait(Deadline(Millis(1000)));
  await_host_check(); // a QEMU too old for the snapshot is the better explanation
  std::string tail = log_tail(log_path(), 3);
  throw Error("QEMU exited while " + doing + " the snapshot" +
                (status ? " (status " + std::to_string(*status) + ")" : std::string()) +
                (tail.empty() ? std::string() : ": " + tail),
              ExitCode::archive_invalid, "QEMU's full log is " + log_path());
}

void LoadSession::resume() {
  if (!m_o.paused) {
    // The snapshot's rings may hold requests and answers the guest was not told about
    // (snapshot/vhost_inflight.hpp): virtiofsd and the guest are told once the VM runs.
    std::vector<Virtiofsd> daemons;
    for (pid_t pid : m_shares.pids()) {
      record_stopped(daemons.emplace_back(Virtiofsd{.pid = pid}), m_qemu.pid());
    }
    m_qmp->execute("cont");
    notify_virtiofsd(*m_qmp, m_qemu.pid(), daemons);
  }
}

void LoadSession::refresh() {
  m_guest = m_o.paused ? nlohmann::json{{"refreshed", false},
                                        {"reason", "--paused: run `kata-snapshot guest refresh` after cont"}}
                       : refresh_guest(m_helper_socket);
}

LoadResult LoadSession::finish() {
  LoadResult r;
  r.qemu_pid = m_qemu.pid();
  r.qmp = m_qmp_path;
  r.run_dir = m_run_dir;
  r.virtiofsd_pids = m_shares.release_daemons();
  r.status = m_o.paused ? "paused" : "running";
  r.seconds = seconds_since(m_start);
  r.guest = m_guest;
  m_qemu.release(); // from here on the VM lives on its own
  m_sockets.paths.clear();
  if (m_watchdog) {
    m_watchdog->disarm();
  }
  return r;
}

LoadResult load(const LoadOptions& options) {
  LoadSession s(options);
  StepLog log(options.verbose, true); // a load stopped by a signal leaves nothing running
  s.open_archive();                   // manifest first: format, version, what the VM needs
  log.done("manifest");
  s.start_host_check(); // QEMU binary, version and machine type, while the load goes on
  s.prepare_run_dir();  // sockets, pid file and logs of the new VM
  s.prepare_network();  // taps re-created by name in --netns
  s.restore_shares();   // shares/ members (they precede the vmstate) into their directories
  log.done("shares");
  s.start_staging(); // mapped-ram: check and stage the vmstate meanwhile, on other threads
  s.guard();         // a watchdog stops what the load starts, should the load be killed
  s.start_daemons(); // virtiofsd per share, listening before QEMU connects
  s.start_qemu();    // recorded argv rewritten, -S -incoming defer, QMP ready
  log.done("start qemu");
  s.await_host_check();
  log.done("host check");

  s.replay_devices(); // devices added after boot, re-created with the same ids and addresses
  s.await_staging();  // mapped-ram: the vmstate checked and in its staging file
  log.done("staged");
  s.stream(); // migrate-incoming from a pipe fed by checked, parallel decompression
  log.done("stream");
  s.resume(); // cont (unless --paused)
  log.done("resume");
  s.refresh(); // thaw, clock and RNG refresh in the guest (it answers once it ran)
  log.done("guest refresh");

  return s.finish(); // detach QEMU and virtiofsd and report
}

} // namespace ks
