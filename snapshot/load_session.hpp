// The state of one load, shared by load.cpp (the steps, from opening the archive to the
// guest's refresh) and load_stream.cpp (the checked stream fed into QEMU's incoming
// migration, watched until it completes). Private to those two files.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/host_check.hpp"
#include "snapshot/load.hpp"
#include "snapshot/network.hpp"
#include "snapshot/shares.hpp"
#include "snapshot/watchdog.hpp"
#include "storage/archive_reader.hpp"
#include "storage/vmstate_stream.hpp"
#include "util/child_process.hpp"
#include "util/fault.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <unistd.h>

namespace ks {

class LoadSession {
public:
  explicit LoadSession(const LoadOptions& o) : m_o(o) {}
  ~LoadSession() { stop_staging(); }
  LoadSession(const LoadSession&) = delete;
  LoadSession& operator=(const LoadSession&) = delete;

  void open_archive();
  // QEMU's version and machine types are checked on a thread (running `qemu --version`
  // takes as long as a small part of the load) and the result awaited before anything that
  // cannot be undone (shares restored into their directories) and once QEMU started. A QEMU
  // that failed to start is explained by this check first, if it failed.
  void start_host_check() {
    m_host_check = std::async(std::launch::async, [manifest = m_reader->manifest(), qemu = m_o.qemu] {
      return ks::check_host(manifest, qemu);
    });
  }
  void await_host_check() {
    if (m_host_check.valid()) {
      m_host = m_host_check.get();
      require_loadable(m_host);
    }
  }
  void prepare_run_dir();
  void prepare_network();
  void restore_shares();
  void start_staging();
  // mapped-ram: waits until the staging began by start_staging is done (and rethrows its
  // error); nothing for other layouts.
  void await_staging();
  // A watchdog stops what this load starts should the load be killed (snapshot/watchdog.hpp).
  void guard();
  // PATH is a socket of the new VM: removed should the load fail or die.
  void created_socket(const std::string& path);
  void start_daemons() {
    m_shares.start_daemons(m_run_dir, [this](pid_t pid) { m_watchdog->also_stop(pid); });
    for (const auto& [chardev, socket] : m_shares.chardev_paths()) {
      created_socket(socket);
    }
  }
  void start_qemu();
  void replay_devices();
  void stream();
  void resume();
  void refresh();
  LoadResult finish();

private:
  void stream_pipe();
  void stream_mapped_ram();
  void stream_shared_ram();
  void stream_multifd();
  // BODY feeds QEMU on a thread (and returns once it fed everything or failed) while this
  // thread watches QEMU, signals and the incoming migration until it completed.
  void feed_while_watching(const std::function<void(std::atomic<uint64_t>& progress)>& body);
  // A member among the vmstate chunks: a live save's share delta, or damage.
  void other_member(ArchiveReader::Member&& m);
  void stop_staging() noexcept;
  void read_vmstate_into(int fd, const StreamOptions& so);
  bool incoming_completed(std::string& status);
  [[noreturn]] void qemu_failed(const std::string& doing);
  std::string log_path() const { return m_run_dir + "/qemu.log"; }

  const LoadOptions& m_o;
  std::future<HostCheck> m_host_check;
  std::unique_ptr<ArchiveReader> m_reader;
  std::string m_layout;
  // mapped-ram: the vmstate is staged into a file on a thread while QEMU starts.
  Fd m_staging;
  std::thread m_stager;
  std::atomic<bool> m_staged{false};
  std::atomic<bool> m_stage_abort{false};
  std::atomic<uint64_t> m_stage_progress{0};
  std::exception_ptr m_stage_error;
  HostCheck m_host;
  std::string m_run_dir;
  std::string m_qmp_path;
  std::optional<Watchdog> m_watchdog; // before what it guards: disarmed after they are stopped
  // Sockets of the new VM, removed (after QEMU and virtiofsd are stopped) if the load fails.
  struct Sockets {
    std::vector<std::string> paths;
    ~Sockets() {
      for (const auto& p : paths) {
        ::unlink(p.c_str());
      }
    }
  } m_sockets;
  ShareRestore m_shares;
  NetworkInfo m_network;
  std::optional<NetNamespace> m_netns;
  std::map<std::string, std::vector<Fd>> m_taps; // netdev id -> queue fds, re-created in m_netns
  ChildProcess m_qemu;
  std::optional<qmp::Client> m_qmp;
  nlohmann::json m_guest;
  std::optional<std::string> m_helper_socket;
  FaultOnce m_mid_stream{"mid-stream"}; // KSNAP_FAULT's point once the first bytes went in
  std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
};

} // namespace ks
