// The save pipeline: discover -> lock -> preflight -> guard -> quiesce -> pause -> stream ->
// commit -> thaw and resume. SaveSession's destructor undoes whatever a failed or
// interrupted save changed: it cancels the migration, restores QEMU's migration settings,
// thaws, resumes a VM that was running, and deletes the temp file; a watchdog process does
// the same should this process be killed. The streaming itself is in save_stream.cpp.
#include "snapshot/save_session.hpp"
#include "snapshot/step_timer.hpp"
#include "snapshot/vhost_inflight.hpp"
#include "storage/store/oci_layout.hpp"
#include "storage/vmstate_channels.hpp"
#include "util/cancel.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace ks {

namespace {

constexpr uint64_t k_unlimited_bandwidth = 1ull << 40; // bytes/s: effectively no cap

// Resident memory of PID in bytes (anon + file + shmem), or 0 when unknown.

uint64_t resident_bytes(pid_t pid) {
  try {
    for (const auto& line : split(read_file("/proc/" + std::to_string(pid) + "/status"), '\n')) {
      if (line.rfind("VmRSS:", 0) == 0) {
        return std::stoull(trim(line.substr(6))) * 1024;
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}

// Into a repository, small chunks: a guest that changed little changes few of them. 1 MiB
// up to 4 GiB of RAM, then larger, so that a snapshot stays within 4096 chunks (a manifest
// of about 1.5 MB, under the 4 MiB registries take). Measured on the idle 1 GiB bench guest,
// a second save writes again 8 % of the first's bytes with 8 MiB chunks, 1.3 % with 1 MiB
// and 0.9 % with 256 KiB; but 256 KiB made the first save 1.6x slower, a file per blob
// costing more than the bytes saved.
// What one chunk's layer descriptor takes in a snapshot's image manifest (digest, size,
// media type, title, raw-blake3 and sealed-key annotations), with a margin.
constexpr uint64_t k_layer_descriptor_bytes = 640;

// Whether RAM in chunks of CHUNK makes an image manifest registries accept (about 4 MiB).
bool manifest_fits(uint64_t ram, uint64_t chunk) {
  return (ram / chunk + 64) * k_layer_descriptor_bytes <= k_max_manifest_size;
}

size_t repository_chunk_size(uint64_t ram) {
  size_t chunk = 1u << 20;
  while ((chunk < (8u << 20) && chunk * 4096 < ram) || !manifest_fits(ram, chunk)) {
    chunk *= 2;
  }
  return chunk;
}

} // namespace

void SaveSession::discover() {
  m_vm = open_vm(m_o.qmp_socket);
  m_lock.emplace(m_vm->pid);
  m_version = m_vm->qmp.execute("query-version");
  const Json& q = m_version["qemu"];
  m_qemu_version = std::to_string(q.value("major", 0)) + "." + std::to_string(q.value("minor", 0)) + "." +
                   std::to_string(q.value("micro", 0));
  m_shares = discover_shares(m_vm->argv, m_vm->pid, m_o.share_policy);
  m_network = discover_network(m_vm->qmp, m_vm->pid);
  m_devices = discover_added_devices(m_vm->qmp, m_vm->argv, m_network);
  std::string status = m_vm->qmp.execute("query-status").value("status", "");
  m_was_running = status == "running";
  if (status == "postmigrate") { // QEMU refuses a second migration out of this state
    throw Error(
      "the VM is stopped at the end of an earlier save or migration (QEMU's postmigrate state), and "
      "QEMU will not migrate it again",
      ExitCode::usage, "load the snapshot that save made, or resume this VM (QMP cont) and save again");
  }
  std::string type = m_vm->qmp.execute("qom-get", {{"path", "/machine"}, {"property", "type"}});
  const std::string suffix = "-machine";
  m_machine = type.size() > suffix.size() && type.ends_with(suffix)
                ? type.substr(0, type.size() - suffix.size())
                : type;
  Json mem = m_vm->qmp.execute("query-memory-size-summary");
  m_ram = mem.value("base-memory", 0ull) + mem.value("plugged-memory", 0ull);
}

void SaveSession::preflight() {
  preflight_shares(m_shares, m_qemu_version);
  for (const auto& share : m_shares) {
    for (const auto& lost : share.deleted_open) {
      std::fprintf(
        stderr,
        "kata-snapshot: warning: virtio-fs share %s: %s was deleted while open in the guest; virtiofsd "
        "cannot carry it over, so the restored guest will get I/O errors on it\n",
        share.tag.c_str(), lost.c_str());
    }
  }

  Json mig = m_vm->qmp.execute("query-migrate");
  std::string status = mig.value("status", "none");
  if (status == "active" || status == "setup" || status == "device" || status == "pre-switchover") {
    throw Error("a migration is already running on this VM (status " + status + ")");
  }
  if (mig.contains("blocked-reasons") && !mig["blocked-reasons"].empty()) {
    std::vector<std::string> reasons;
    for (const auto& r : mig["blocked-reasons"]) {
      reasons.push_back(r.get<std::string>());
    }
    throw Error("QEMU cannot migrate this VM: " + join(reasons, "; "));
  }
  m_output = SnapshotOutput::open(m_o.output, {.overwrite = m_o.overwrite == Overwrite::yes,
                                               .lock_wait = m_o.lock_wait,
                                               .purpose = "save",
                                               .registry = m_o.registry});
  for (const auto& path : m_output->temp_paths()) {
    m_watchdog->also_remove(path);
  }
  if (!m_o.sign_key.empty()) {
    m_sign_key = SigningKey::load(m_o.sign_key); // a bad key fails before anything is paused
  }
  if (!m_o.encryption.empty()) { // the same for encryption keys
    m_sealer = Sealer::create(m_o.encryption, m_output->deduplicates());
  }
  m_layout = choose_layout();
  choose_mode();
  // A guess (2:1 compression of what QEMU holds in memory), so a warning: a save that runs
  // out of space fails cleanly at that point, and many guests compress far better.
  uint64_t estimate = resident_bytes(m_vm->pid) / 2;
  if (auto free_bytes = m_output->free_bytes(); free_bytes && *free_bytes < estimate && !m_o.quiet) {
    std::fprintf(stderr,
                 "kata-snapshot: warning: %s free in %s, and the snapshot may need about %s; a save that "
                 "runs out of space stops there and leaves nothing behind\n",
                 human_size(*free_bytes).c_str(), m_output->temp_dir().c_str(), human_size(estimate).c_str());
  }
  m_output->prepare(); // a repository's known chunks, read meanwhile: not while the VM is paused
}

// The plain stream flows through a pipe as QEMU makes it, compressed while QEMU runs.
// multifd (the default where QEMU has it) does the same over several connections at once,
// which a load decompresses and QEMU reads back in parallel.
// mapped-ram goes to a staging file first: the VM is stopped only while QEMU writes it, and
// QEMU loads it with large reads, but the compression no longer overlaps QEMU's work
// (docs/kata-snapshot.1.md has the measured trade-off).
std::string SaveSession::choose_layout() {
  m_chunk_size = m_o.chunk_size             ? m_o.chunk_size
                 : m_output->deduplicates() ? repository_chunk_size(m_ram)
                                            : 8u << 20;
  if (m_output->deduplicates() && !manifest_fits(m_ram, m_chunk_size)) { // an explicit --chunk-size
    throw Error("--chunk-size " + std::to_string(m_chunk_size >> 20) + " would make " +
                  std::to_string(m_ram / m_chunk_size) + " chunks of this VM's " + human_size(m_ram) +
                  " of RAM, an OCI manifest over the " + human_size(k_max_manifest_size) +
                  " registries accept",
                ExitCode::usage,
                "pass --chunk-size " + std::to_string(repository_chunk_size(m_ram) >> 20) +
                  " or more, or leave it out");
  }
  if (m_o.layout == VmstateLayout::stream) {
    return k_layout_stream;
  }
  // Into a repository in stop mode, the RAM of a VM whose memory is shared files (Kata) is
  // read in place: QEMU copies none of it, and an unchanged chunk is hashed, not compressed.
  bool shared_ram_default =
    m_o.layout == VmstateLayout::automatic && m_output->deduplicates() && m_o.mode == SaveMode::stop;
  if (m_o.layout == VmstateLayout::shared_ram || shared_ram_default) {
    try {
      m_shared_ram = open_shared_ram(m_vm->qmp, m_vm->pid, O_RDONLY, m_chunk_size);
      return k_layout_shared_ram;
    } catch (const Error& e) {
      if (!shared_ram_default) {
        throw Error(std::string("cannot use --vmstate shared-ram: ") + e.what(), ExitCode::usage,
                    "leave --vmstate out (auto)");
      }
    }
  }
  // Into a repository, mapped-ram: each page at a fixed offset, so an unchanged part of
  // memory makes the same chunk as last time, which the repository already holds.
  bool incremental =
    m_o.layout == VmstateLayout::automatic && m_output->deduplicates() && qemu_has_mapped_ram(m_vm->qmp);
  if (incremental && qemu_has_multifd(m_vm->qmp)) {
    m_channels = multifd_channels(m_o.threads); // QEMU writes the pages from as many threads
    return k_layout_mapped_ram;
  }
  if (!incremental && (m_o.layout == VmstateLayout::automatic || m_o.layout == VmstateLayout::multifd)) {
    if (qemu_has_multifd(m_vm->qmp)) {
      m_channels = multifd_channels(m_o.threads);
      m_chunk_size = channel_chunk_size(m_chunk_size, m_channels + 1);
      return k_layout_multifd;
    }
    if (m_o.layout == VmstateLayout::automatic) {
      return k_layout_stream;
    }
    throw Error("QEMU " + m_qemu_version +
                  " has no multifd migration with zero-page detection (it came with QEMU 9.0)",
                ExitCode::usage, "use --vmstate stream");
  }
  if (!qemu_has_mapped_ram(m_vm->qmp)) {
    throw Error("QEMU " + m_qemu_version + " has no mapped-ram migration (it came with QEMU 9.0)",
                ExitCode::usage, "use --vmstate stream");
  }
  return k_layout_mapped_ram;
}

// Live where QEMU and the VM allow it (auto says once why not); stop otherwise.
void SaveSession::choose_mode() {
  if (m_o.mode == SaveMode::stop) {
    return;
  }
  if (m_layout == k_layout_shared_ram) { // memory is read while the VM is stopped
    if (m_o.mode == SaveMode::live) {
      throw Error("--vmstate shared-ram reads the memory while the VM is stopped: it cannot be live",
                  ExitCode::usage, "use --mode stop, or another --vmstate");
    }
    if (!m_o.quiet) {
      std::fprintf(stderr, "kata-snapshot: notice: saving in stop mode: --vmstate shared-ram reads the "
                           "memory while the VM is stopped\n");
    }
    return;
  }
  std::string why_not = live_unsupported_reason(m_vm->qmp, m_was_running);
  if (why_not.empty()) {
    m_live = true;
  } else if (m_o.mode == SaveMode::live) {
    throw Error("cannot save this VM live: " + why_not, ExitCode::usage, "use --mode stop (or auto)");
  } else if (!m_o.quiet) {
    std::fprintf(stderr, "kata-snapshot: notice: saving in stop mode: %s\n", why_not.c_str());
  }
}

// From here on a killed save would leave the VM changed: a watchdog process of our own
// puts it back if this process dies before the session ends (snapshot/watchdog.hpp).
void SaveSession::guard() {
  WatchdogPlan plan;
  plan.qmp_socket = m_o.qmp_socket;
  plan.qemu_pid = m_vm->pid;
  plan.was_running = m_was_running;
  plan.capabilities = m_vm->qmp.execute("query-migrate-capabilities");
  Json params = m_vm->qmp.execute("query-migrate-parameters");
  for (const auto& name : watched_parameters()) {
    if (params.contains(name)) {
      plan.parameters[name] = params[name];
    }
  }
  plan.helper_socket = helper_socket_path(m_vm->argv).value_or("");
  for (const auto& share : m_shares) {
    plan.virtiofsd.push_back(share.virtiofsd_pid);
    m_virtiofsd.push_back({.pid = share.virtiofsd_pid});
  }
  m_watchdog.emplace(plan);
}

std::string SaveSession::temp_dir() const {
  return m_output->temp_dir();
}

void SaveSession::pause() {
  throw_if_cancelled();
  if (m_was_running && !m_live) {
    m_vm->qmp.execute("stop");
    m_paused = true;
    m_stopped_at = std::chrono::steady_clock::now();
  }
  if (!m_live) {
    // virtiofsd may still answer requests it took before the stop: wait for those answers,
    // so that the memory QEMU sends next holds them (snapshot/vhost_inflight.hpp).
    record_shares_stopped();
    auto queues = vhost_fs_queues_at_stop(m_vm->qmp);
    if (auto held = in_flight(queues); !held.empty()) {
      auto since = std::chrono::steady_clock::now();
      wait_vhost_fs_answers(m_vm->qmp, held, k_vhost_answer_timeout);
      if (m_o.verbose) {
        std::fprintf(stderr, "kata-snapshot: virtiofsd held %s at the stop: its answers came in %.0f ms\n",
                     describe_in_flight(held).c_str(), 1000 * seconds_since(since));
      }
    }
    note_untaken(queues);
  }
  Json params = m_vm->qmp.execute("query-migrate-parameters");
  m_old_bandwidth = params.value("max-bandwidth", 134217728ull);
  m_vm->qmp.execute("migrate-set-parameters", {{"max-bandwidth", k_unlimited_bandwidth}});
  if (m_live) {
    m_precopy.emplace(m_vm->qmp, m_o.live_limits, m_ram);
  }
  capture_shares();
}

// Stop mode: each share whole, while the vCPUs are stopped (the same instant as the
// memory). Live mode: each share's base while the guest runs; its delta at the switchover.
void SaveSession::capture_shares() {
  std::vector<ShareCapture> captures;
  for (const auto& share : m_shares) {
    if (share.capture != "full") {
      continue;
    }
    if (m_live) {
      m_share_precopy.emplace_back(share, temp_dir(), m_o.compress_level);
    } else {
      captures.push_back(capture_share(share, temp_dir(), m_o.compress_level));
    }
  }
  Json manifest = build_manifest();
  m_writer = &m_output->start(ArchiveWriter::ManifestText{manifest.dump(2) + "\n", m_sealer});
  for (auto& p : m_share_precopy) {
    captures.push_back(std::move(p.base()));
  }
  size_t i = 0;
  for (const auto& share : m_shares) {
    if (share.capture == "full") {
      ShareCapture& c = captures[i++];
      m_writer->add_member_from_fd(share.member(), c.file.get(), c.size, c.sha256);
    }
  }
}

Json SaveSession::build_manifest() const {
  std::string binary = m_vm->argv.binary();
  char exe[4096];
  ssize_t n = ::readlink(("/proc/" + std::to_string(m_vm->pid) + "/exe").c_str(), exe, sizeof exe - 1);
  if (n > 0) {
    binary = std::string(exe, static_cast<size_t>(n));
  }
  Json shares = Json::array();
  bool deltas = false;
  for (const auto& share : m_shares) {
    shares.push_back(share.to_json());
    if (m_live && share.capture == "full") { // base + delta (snapshot/live/share_precopy.hpp)
      shares.back()["removed_member"] = SharePrecopy::removed_member(share.tag);
      shares.back()["delta_member"] = SharePrecopy::delta_member(share.tag);
      deltas = true;
    }
  }
  Json vmstate = {{"layout", m_layout},
                  {"compression", "zstd"},
                  {"level", m_o.compress_level},
                  {"chunk_size", m_chunk_size}};
  int version = k_format_version_stream;
  if (m_layout == k_layout_mapped_ram) {
    version = m_channels ? k_format_version_mapped_ram_multifd : k_format_version_mapped_ram;
    if (m_channels) {
      vmstate["channels"] = m_channels;
    }
  } else if (m_layout == k_layout_multifd) {
    version = k_format_version_multifd;
    vmstate["channels"] = m_channels;
  } else if (m_layout == k_layout_shared_ram) {
    version = k_format_version_shared_ram;
    vmstate["memory"] = describe_shared_ram(m_shared_ram);
  }
  if (deltas) {
    version = std::max(version, k_format_version_share_delta);
  }
  if (m_sealer) {
    version = std::max(version, k_format_version_encrypted);
  }
  return {{"format", k_format_name},
          {"format_version", version},
          {"created", utc_now()},
          {"tool_version", KSNAP_VERSION},
          {"host", describe_host()},
          {"qemu",
           {{"version", m_qemu_version},
            {"package", m_version.value("package", "")},
            {"binary", binary},
            {"machine", m_machine},
            {"argv", m_vm->argv.to_argv()}}},
          {"vm", {{"ram_bytes", m_ram}, {"run_state", m_was_running ? "running" : "paused"}}},
          {"devices_added", m_devices},
          {"network", m_network.to_json()},
          {"kata", m_o.kata},
          {"shares", shares},
          {"quiesce", m_quiescer.describe()},
          {"mode", m_live ? "live" : "stop"},
          {"encryption", m_sealer ? m_sealer->header() : Json()},
          {"live", m_live ? Json{{"mechanism", k_mechanism_precopy}, {"instant", "switchover"}} : Json()},
          {"labels", m_o.labels},
          {"vmstate", vmstate}};
}

void SaveSession::commit() {
  throw_if_cancelled();
  Json index = {{"vmstate_bytes", m_stats.raw_bytes}, {"vmstate_chunks", m_stats.chunks}};
  if (m_precopy) { // what is known only at the end: the instant and the downtime
    m_live_facts = m_precopy->describe();
    m_live_facts["share_seconds"] = m_share_downtime ? Json(*m_share_downtime) : Json();
    index["live"] = m_live_facts;
  }
  ArchiveWriter::IndexSigner sign;
  if (m_sign_key) {
    sign = [this](const std::string& text) { return m_sign_key->sign(text); };
  }
  m_writer->finish(index, sign);
  m_output->commit();
}

SaveResult SaveSession::finish() {
  m_done = true;
  restore_vm();
  m_precopy.reset(); // capabilities and parameters back while the VM is still there
  std::string state = m_was_running ? "running" : "paused";
  if (m_o.after == AfterSave::quit) {
    m_quiescer.forget(); // a frozen guest ends with the VM; no thaw to send
    m_vm->qmp.execute("quit");

    state = "shut down";
  } else if (m_paused) {
    release_vm();
    state = m_paused ? "paused" : "running";
  }
  SaveResult r;
  r.output = m_o.output;
  r.destination = m_output->describe();
  r.archive_bytes = m_writer->bytes_written();
  r.stored_bytes = m_writer->bytes_stored();
  r.vmstate_bytes = m_stats.raw_bytes;
  r.chunks = m_stats.chunks;
  r.seconds = seconds_since(m_start);
  r.quiesce = m_quiescer.describe();
  r.vm_state = state;
  r.vm_paused_seconds = m_paused_seconds;
  r.mode = m_live ? "live" : "stop";
  r.live = m_live_facts;
  if (m_watchdog) {
    m_watchdog->disarm(); // the VM is where it should be (a VM left paused stays so)
  }
  return r;
}

// Once the VM runs again: requests its guest queued just before the stop reach virtiofsd
// (snapshot/vhost_inflight.hpp).
void SaveSession::notify_shares() noexcept {
  Notified n = notify_virtiofsd(m_vm->qmp, m_vm->pid, m_virtiofsd);
  if (n.kicks > 0 && m_o.verbose) {
    std::fprintf(
      stderr,
      "kata-snapshot: notified virtiofsd on %d queue(s) and interrupted the guest on %d after the VM "
      "resumed\n",
      n.kicks, n.interrupts);
  }
}

// The devices are stopped: what virtiofsd holds now tells its notifiers apart later.
void SaveSession::record_shares_stopped() noexcept {
  for (auto& d : m_virtiofsd) {
    record_stopped(d, m_vm->pid);
  }
}

// -v: requests the guest queued at the stop that virtiofsd had not taken yet.
void SaveSession::note_untaken(const std::vector<VhostQueueInFlight>& queues) const {
  if (unsigned n = untaken(queues); n > 0 && m_o.verbose) {
    std::fprintf(
      stderr,
      "kata-snapshot: the guest had queued %u FUSE request(s) virtiofsd had not taken at the stop: "
      "virtiofsd is notified once the VM runs\n",
      n);
  }
}

// The VM this save paused runs again and is thawed; with --after pause it ends paused.
void SaveSession::release_vm() {
  if (!m_paused) {
    return;
  }
  // The helper can only thaw while the vCPUs run: resume first. With --after pause and a
  // frozen guest, that means a moment of running before the VM is paused again.
  bool stay_paused = m_o.after == AfterSave::pause;
  if (!stay_paused || m_quiescer.frozen()) {
    m_vm->qmp.execute("cont");
    notify_shares();
    if (!stay_paused) {
      m_paused_seconds = seconds_since(m_stopped_at);
    }
    m_quiescer.thaw();
    if (stay_paused) {
      m_vm->qmp.execute("stop");
    }
  }
  m_paused = stay_paused;
}

// Puts the migration parameters back as they were.
void SaveSession::restore_vm() noexcept {
  if (!m_vm || !m_old_bandwidth) {
    return;
  }
  try {
    m_vm->qmp.execute("migrate-set-parameters", {{"max-bandwidth", *m_old_bandwidth}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kata-snapshot: warning: failed to restore max-bandwidth: %s\n", e.what());
  }
  m_old_bandwidth.reset();
}

void SaveSession::rollback() noexcept {
  if (m_done) {
    return;
  }
  if (m_output) {
    m_output->discard();
  }
  if (!m_vm) {
    return;
  }
  cancel_migration();
  restore_vm();

  m_precopy.reset(); // capabilities and parameters back
  try {
    // Paused by this save, or by QEMU at a live save's final stop (a cancelled migration
    // resumes it itself; one that completed leaves it stopped).
    if (m_paused || (m_live && !m_vm->qmp.execute("query-status").value("running", true))) {
      m_vm->qmp.execute("cont");
    }
    if (m_paused || m_live) { // a cancelled live save: QEMU stopped and started the devices itself
      notify_shares();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kata-snapshot: warning: failed to resume the VM: %s\n", e.what());
  }
  m_quiescer.thaw(); // after cont: the helper answers only while the vCPUs run
}

namespace {

SaveResult save_once(const SaveOptions& options) {
  SaveSession s(options);
  StepLog log(options.verbose);
  s.discover(); // QMP, QEMU pid and argv, version, machine, RAM, shares, devices; take the lock
  log.done("discover");
  s.guard(); // a watchdog process puts the VM back and removes temp files should we be killed
  log.done("guard");
  s.preflight(); // migratable, output writable with room, before anything is paused
  log.done("preflight");
  s.quiesce(); // helper: sync + freeze (or recorded as skipped)
  log.done("quiesce");
  s.pause(); // stop the vCPUs, lift the bandwidth cap, capture the shares, start the archive
  log.done("pause+capture");
  s.stream(); // QEMU migrates into a pipe; we chunk, compress, hash and write
  log.done("stream");
  s.commit(); // index.json, fsync, rename, fsync(dir)
  log.done("commit");
  SaveResult r = s.finish(); // restore parameters, then resume (and thaw) / pause / quit
  log.done("resume");
  return r;
}

} // namespace

// A live save whose switchover caught virtiofsd with requests in hand is taken again: each
// attempt is a whole save (the last one cancelled and put everything back), and such a
// moment is rare, so a later switchover almost always finds none. After 3, --mode live fails
// and --mode auto saves in stop mode.
SaveResult save(const SaveOptions& options) {
  constexpr int k_attempts = 3;
  for (int attempt = 1;; ++attempt) {
    try {
      return save_once(options);
    } catch (const InFlightAtSwitchover& e) {
      if (attempt == k_attempts && options.mode == SaveMode::automatic) {
        // auto means live where it is safe: a stop-mode save waits for the answers instead.
        if (!options.quiet) {
          std::fprintf(stderr, "kata-snapshot: notice: %s, at each of %d switchovers; saving in stop mode\n",
                       e.what(), k_attempts);
        }
        SaveOptions stop = options;
        stop.mode = SaveMode::stop;
        return save_once(stop);
      }
      if (attempt == k_attempts) {
        throw Error(
          std::string(e.what()) + ", at each of " + std::to_string(k_attempts) + " switchovers",
          ExitCode::failed,
          "save again, or with --mode stop (it waits for virtiofsd's answers before it reads memory)");
      }
      if (!options.quiet) {
        std::fprintf(stderr, "kata-snapshot: notice: %s; taking the live snapshot again (attempt %d of %d)\n",
                     e.what(), attempt + 1, k_attempts);
      }
    }
  }
}

} // namespace ks
