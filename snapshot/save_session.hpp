// The state of one save, shared by save.cpp (the steps, from discover to finish, and the
// rollback) and save_stream.cpp (QEMU migrating into the archive, watched until it ends).
// Private to those two files.
#pragma once

#include "snapshot/devices.hpp"
#include "snapshot/live/precopy.hpp"
#include "snapshot/live/share_precopy.hpp"
#include "snapshot/mapped_ram.hpp"
#include "snapshot/multifd.hpp"
#include "snapshot/save.hpp"
#include "snapshot/share_capture.hpp"
#include "snapshot/shared_ram.hpp"
#include "snapshot/vhost_inflight.hpp"
#include "snapshot/vm.hpp"
#include "snapshot/vm_lock.hpp"
#include "snapshot/watchdog.hpp"
#include "storage/archive_writer.hpp"
#include "storage/member_inbox.hpp"
#include "storage/store/store.hpp"
#include "storage/vmstate_stream.hpp"
#include "util/atomic_file.hpp"
#include "util/deadline.hpp"
#include "util/fault.hpp"
#include "util/progress.hpp"
#include "util/signature.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ks {

class ProgressLine;

class SaveSession {
public:
  explicit SaveSession(const SaveOptions& o) : m_o(o), m_quiescer(o.quiesce, std::chrono::seconds(60)) {}
  ~SaveSession() { rollback(); }

  void discover();
  void preflight();
  void guard();
  // Stop mode freezes now, for the whole save. A live save freezes only when required:
  // QEMU picks the final stop (Precopy), so the freeze would span the whole pre-copy, and
  // the snapshot holds the guest's page cache anyway. It is thawed right after that stop.
  void quiesce() {
    if (m_live && m_o.quiesce == QuiescePolicy::automatic) {
      m_quiescer.not_needed("a live save holds the guest's page cache; --quiesce required freezes "
                            "the guest for the whole pre-copy");
      return;
    }
    m_quiescer.freeze(m_vm->argv);
  }
  void pause();
  void stream();
  void commit();
  SaveResult finish();

private:
  Json build_manifest() const;
  std::string choose_layout();
  void choose_mode();
  void capture_shares();
  void watch(const Json& mig);
  void switchover();
  std::string temp_dir() const;
  void stream_pipe();
  void stream_mapped_ram();
  void stream_shared_ram();
  void stream_multifd();
  using StreamBody =
    std::function<StreamStats(std::atomic<uint64_t>& progress, const std::atomic<bool>& abort)>;
  void migrate_while(const std::string& uri, const StreamBody& body);
  void cancel_migration() noexcept;
  void release_vm();
  void wait_for_migration_end(const Deadline& deadline, ProgressLine* bar = nullptr);
  void rollback() noexcept;
  void notify_shares() noexcept;
  void record_shares_stopped() noexcept;
  void note_untaken(const std::vector<VhostQueueInFlight>& queues) const;
  void restore_vm() noexcept;

  const SaveOptions& m_o;
  std::optional<Watchdog> m_watchdog;     // first: it stands down after every other member cleaned up
  std::optional<SigningKey> m_sign_key;   // --sign-key, read before anything is paused
  std::shared_ptr<const Sealer> m_sealer; // --encrypt-*: keys read before anything is paused
  std::optional<Vm> m_vm;
  std::optional<VmLock> m_lock;
  Quiescer m_quiescer;
  std::unique_ptr<SnapshotOutput> m_output; // a file, stdout or a repository
  ArchiveWriter* m_writer = nullptr;        // m_output's, once the manifest is known
  StreamStats m_stats;
  Json m_version;
  std::string m_qemu_version;
  std::vector<ShareInfo> m_shares;
  std::vector<Virtiofsd> m_virtiofsd; // their daemons, as notified after a resume (vhost_inflight.hpp)
  NetworkInfo m_network;
  Json m_devices = Json::array();
  std::string m_machine;
  std::string m_layout = k_layout_stream;
  unsigned m_channels = 0;                  // multifd
  std::vector<SharedRamBlock> m_shared_ram; // shared-ram: the VM's memory files, read in place
  size_t m_chunk_size = 0;                  // --chunk-size, or less where many connections each fill one
  uint64_t m_ram = 0;
  bool m_was_running = false;
  bool m_paused = false;
  bool m_migrating = false;
  std::optional<uint64_t> m_old_bandwidth;
  bool m_done = false;
  FaultOnce m_mid_stream{"mid-stream"}; // KSNAP_FAULT's point once the first bytes went out
  // Live mode: QEMU's pre-copy, the shares' bases, and where their deltas are posted.
  bool m_live = false;
  std::optional<Precopy> m_precopy;
  std::vector<SharePrecopy> m_share_precopy;
  MemberInbox m_inbox;
  std::optional<double> m_share_downtime;
  Json m_live_facts; // Precopy::describe() at the end, with the shares' part of the downtime
  std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point m_stopped_at;
  std::optional<double> m_paused_seconds; // from stop to cont, when this save resumed the VM
};

} // namespace ks
