// A save's stream: QEMU migrates into the archive through a pipe (stream), a UNIX socket
// (multifd) or a staging file (mapped-ram), watched until it ends; in live mode the watch
// also takes the final switchover (the snapshot instant).
#include "snapshot/save_session.hpp"
#include "snapshot/vhost_inflight.hpp"
#include "storage/vmstate_channels.hpp"
#include "storage/vmstate_stream.hpp"
#include "util/cancel.hpp"
#include "util/done_flag.hpp"
#include "util/unix_socket.hpp"

#include <cstdio>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_fd_name = "ksnap-save";

} // namespace

void SaveSession::stream() {
  if (m_layout == k_layout_mapped_ram) {
    stream_mapped_ram();
  } else if (m_layout == k_layout_shared_ram) {
    stream_shared_ram();
  } else if (m_layout == k_layout_multifd) {
    stream_multifd();
  } else {
    stream_pipe();
  }
}

// multifd: QEMU connects its main channel and every multifd channel to our socket; each
// connection is chunked and compressed as it comes.
void SaveSession::stream_multifd() {
  struct stat st {};
  uid_t qemu_uid = ::stat(("/proc/" + std::to_string(m_vm->pid)).c_str(), &st) == 0 ? st.st_uid : ::geteuid();
  MigrationSocket socket(qemu_uid);
  m_watchdog->also_remove(dir_name(socket.path()));
  MultifdSetup setup(m_vm->qmp, m_channels);
  pid_t qemu = m_vm->pid;
  ChannelSource source{.listen_fd = socket.listen_fd(),
                       .connections = m_channels + 1,
                       .accept_peer = [qemu](int fd) { return peer_pid(fd) == qemu; }};
  unsigned threads = m_o.threads ? m_o.threads : default_stream_threads();
  migrate_while("unix:" + socket.path(),
                [&](std::atomic<uint64_t>& progress, const std::atomic<bool>& abort) {
                  StreamOptions so{.chunk_size = m_chunk_size,
                                   .level = m_o.compress_level,
                                   .threads = threads,
                                   .progress = &progress,
                                   .abort = &abort,
                                   .inbox = &m_inbox};
                  return write_vmstate_channels(source, *m_writer, so);
                });
}

// mapped-ram: QEMU writes the whole state into a staging file (over multifd channels into a
// repository), then the file is compressed into the archive. With --after resume the VM runs again as soon as
// QEMU is done.
void SaveSession::stream_mapped_ram() {
  Fd file = staging_file(temp_dir(), m_ram);
  try {
    std::optional<MultifdSetup> multifd; // m_channels: QEMU writes the pages from as many threads
    if (m_channels) {
      multifd.emplace(m_vm->qmp, m_channels);
    }
    MigrationCapability cap(m_vm->qmp, k_layout_mapped_ram, true);
    QemuFdset target(m_vm->qmp, file.get(), O_WRONLY);
    ProgressLine bar(m_o.progress, "saving", m_ram);
    m_vm->qmp.execute("migrate", {{"uri", target.uri()}});
    m_migrating = true;
    wait_for_migration_end(Deadline::never(), &bar);
  } catch (...) {
    cancel_migration(); // before the capability goes back: QEMU refuses that mid-migration
    throw;
  }
  if (m_o.after == AfterSave::resume) {
    release_vm(); // the state is in the file: the guest need not wait for the compression
  }
  if (::lseek(file.get(), 0, SEEK_SET) != 0) {
    throw Error("failed to rewind the vmstate staging file");
  }
  // QEMU is done with its part: every core compresses.
  unsigned threads = m_o.threads ? m_o.threads : std::max(1u, std::thread::hardware_concurrency());
  m_stats = write_vmstate(
    file.get(), *m_writer,
    {.chunk_size = m_chunk_size, .level = m_o.compress_level, .threads = threads, .inbox = &m_inbox});
}

// shared-ram (stop mode, the VM stopped): QEMU migrates all but the shared memory blocks
// (x-ignore-shared) into a small staging file; then each block's file is read in place and
// chunked, while the VM is still stopped; then the VM may run again, and the rest of the
// state follows the memory as the last chunks.
void SaveSession::stream_shared_ram() {
  uint64_t shared = 0;
  for (const auto& b : m_shared_ram) {
    shared += b.bytes;
  }
  Fd device = staging_file(temp_dir(), (m_ram > shared ? m_ram - shared : 0) + (64u << 20));
  try {
    MigrationCapability cap(m_vm->qmp, k_ignore_shared, true);
    QemuFdset target(m_vm->qmp, device.get(), O_WRONLY);
    m_vm->qmp.execute("migrate", {{"uri", target.uri()}});
    m_migrating = true;
    wait_for_migration_end(Deadline::never());
  } catch (...) {
    cancel_migration();
    throw;
  }
  unsigned threads = m_o.threads ? m_o.threads : std::max(1u, std::thread::hardware_concurrency());
  std::atomic<uint64_t> block_progress{0}; // of the block being read
  std::atomic<uint64_t> blocks_read{0};    // the blocks before it
  StreamOptions so{.chunk_size = m_chunk_size,
                   .level = m_o.compress_level,
                   .threads = threads,
                   .progress = &block_progress,
                   .inbox = &m_inbox};
  {
    ProgressLine bar(m_o.progress, "saving", shared);
    DoneFlag read;
    std::thread ticker([&] { // the memory is read on this thread: the bar moves on its own
      while (!read.wait_for(std::chrono::milliseconds(100))) {
        bar.update(blocks_read.load() + block_progress.load());
      }
    });
    struct Join {
      DoneFlag& read;
      std::thread& ticker;
      ~Join() {
        read.set();
        ticker.join();
      }
    } join{read, ticker};
    for (const auto& b : m_shared_ram) {
      if (::lseek(b.fd.get(), 0, SEEK_SET) != 0) {
        throw Error("failed to read memory block " + b.id + "'s file");
      }
      so.first_chunk = m_stats.chunks;
      StreamStats s = write_vmstate(b.fd.get(), *m_writer, so);
      if (s.raw_bytes != b.bytes) { // QEMU resized it under us (it cannot: the VM is stopped)
        throw Error("memory block " + b.id + " held " + std::to_string(s.raw_bytes) + " bytes, not " +
                    std::to_string(b.bytes));
      }
      m_stats.raw_bytes += s.raw_bytes;
      m_stats.chunks += s.chunks;
      blocks_read = m_stats.raw_bytes;
      block_progress = 0;
      m_mid_stream.reached();
    }
  }
  if (m_o.after == AfterSave::resume) {
    release_vm(); // the memory is read: the guest need not wait for the rest
  }
  if (::lseek(device.get(), 0, SEEK_SET) != 0) {
    throw Error("failed to rewind the vmstate staging file");
  }
  so.first_chunk = m_stats.chunks;
  so.progress = nullptr;
  StreamStats s = write_vmstate(device.get(), *m_writer, so);
  m_stats.raw_bytes += s.raw_bytes;
  m_stats.chunks += s.chunks;
}

void SaveSession::cancel_migration() noexcept {
  if (!m_migrating) {
    return;
  }
  try {
    m_vm->qmp.execute("migrate_cancel");
    m_migrating = false;
    wait_migration_idle(m_vm->qmp); // QEMU gives a VM it stopped back only once cancelled
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kata-snapshot: warning: migrate_cancel failed: %s\n", e.what());
  }
}

void SaveSession::stream_pipe() {
  Pipe pipe = make_pipe();
  grow_pipe(pipe.write.get(), 1 << 20); // fewer wake-ups between QEMU and the reader
  m_vm->qmp.send_fd(k_fd_name, pipe.write.get());

  pipe.write.reset(); // QEMU holds the only write end: its close is our end of file
  unsigned threads = m_o.threads ? m_o.threads : default_stream_threads();
  Fd& in = pipe.read;
  migrate_while(std::string("fd:") + k_fd_name,
                [&](std::atomic<uint64_t>& progress, const std::atomic<bool>&) {
                  StreamOptions so{.chunk_size = m_chunk_size,
                                   .level = m_o.compress_level,
                                   .threads = threads,
                                   .progress = &progress,
                                   .inbox = &m_inbox};
                  struct Close { // on error, QEMU's next write fails with EPIPE and the migration fails
                    Fd& fd;
                    ~Close() { fd.reset(); }
                  } close{in};
                  return write_vmstate(in.get(), *m_writer, so);
                });
}

// QEMU migrates to URI while BODY, on a thread, reads and archives what it sends until the
// end; meanwhile signals and QEMU's failures are watched for. ABORT turns true when BODY
// should give up (QEMU will not send what it waits for).
void SaveSession::migrate_while(const std::string& uri, const StreamBody& body) {
  DoneFlag done;
  std::atomic<uint64_t> progress{0};
  std::atomic<bool> abort{false};
  std::exception_ptr error;
  bool abandoned = false; // BODY gave up because QEMU failed: QEMU's reason is the one to tell
  std::thread reader([&] {
    try {
      m_stats = body(progress, abort);
    } catch (const StreamAbandoned&) {
      error = std::current_exception();
      abandoned = true;
    } catch (...) {
      error = std::current_exception(); // our own failure (a full disk): QEMU's is its consequence
    }
    done.set();
  });
  ProgressLine bar(m_o.progress, "saving", m_ram);
  try {
    m_vm->qmp.execute("migrate", {{"uri", uri}});
    m_migrating = true;
    // Wake on the end of the stream at once; meanwhile watch for signals and QEMU failing.
    // Live: the final stop waits for us, so QEMU is watched closely.
    const auto poll = std::chrono::milliseconds(m_live ? 5 : 50);
    while (!done.wait_for(poll)) {
      if (cancel_requested()) {
        m_vm->qmp.execute("migrate_cancel");
      }
      Json mig = m_vm->qmp.execute("query-migrate");
      std::string status = mig.value("status", "");
      if (status == "failed") {
        m_vm->qmp.execute("migrate_cancel");
      }
      if (status == "failed" || status == "cancelled") {
        abort = true; // QEMU may never connect, or send the rest
      }
      watch(mig);
      bar.update(progress.load());
      if (progress.load() > 0) {
        m_mid_stream.reached();
      }
    }
  } catch (...) {
    // Make sure the reader thread ends before we unwind (QEMU may still hold the pipe).
    try {
      if (m_migrating) {
        m_vm->qmp.execute("migrate_cancel");
      }
    } catch (...) {
    }
    abort = true;
    reader.join();
    throw;
  }

  reader.join();
  bar.finish();
  throw_if_cancelled();
  if (error && abandoned) {
    wait_for_migration_end(Deadline(Millis(0))); // QEMU's own reason comes first
  }
  if (error) {
    std::rethrow_exception(error);
  }
  wait_for_migration_end(Deadline(std::chrono::seconds(30)));
}

// Polls QEMU until it reports the migration completed; throws when it failed or was
// cancelled, on a signal, or when DEADLINE passes. BAR (if any) follows the RAM sent.
void SaveSession::wait_for_migration_end(const Deadline& deadline, ProgressLine* bar) {
  for (;;) {
    throw_if_cancelled();
    Json mig = m_vm->qmp.execute("query-migrate");
    std::string status = mig.value("status", "");
    if (status == "completed") {
      m_migrating = false;
      watch(mig);
      return;
    }
    if (status == "failed" || status == "cancelled") {
      throw Error("QEMU's migration " + status +
                  (mig.contains("error-desc") ? ": " + mig["error-desc"].get<std::string>() : ""));
    }
    if (deadline.expired()) {
      throw Error("QEMU closed the migration stream but did not report completion (status " + status + ")");
    }
    watch(mig);
    if (bar && mig.contains("ram")) {
      uint64_t sent = mig["ram"].value("transferred", 0ull);
      bar->update(sent);
      if (sent > 0) {
        m_mid_stream.reached();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Live mode, with every query-migrate answer: at the final stop take the shares' deltas and
// let QEMU finish; resume (and thaw) as soon as it completed.
void SaveSession::watch(const Json& mig) {
  if (!m_precopy) {
    return;
  }
  switch (m_precopy->observe(mig)) {
  case Precopy::Event::stopped:
    switchover();
    break;
  case Precopy::Event::completed:
    if (m_o.after == AfterSave::resume) {
      release_vm(); // the state is sent: the guest need not wait for the archive
    }
    break;
  case Precopy::Event::none:
    break;
  }
}

// The VM is stopped (the snapshot instant): the shares' deltas are posted to the archive
// ahead of anything QEMU sends from now on, then QEMU sends the rest.
void SaveSession::switchover() {
  m_paused = true;
  m_stopped_at = std::chrono::steady_clock::now();
  // Answers virtiofsd gives after the stop miss QEMU's last dirty-log sync, so they may not
  // reach the snapshot (snapshot/vhost_inflight.hpp): give this attempt up once they are in.
  auto queues = vhost_fs_queues_at_stop(m_vm->qmp);
  note_untaken(queues);
  if (auto held = in_flight(queues); !held.empty()) {
    record_shares_stopped();
    wait_vhost_fs_answers(m_vm->qmp, held, k_vhost_answer_timeout); // before the VM runs again
    throw InFlightAtSwitchover("virtiofsd held " + describe_in_flight(held) + " when the VM stopped");
  }
  for (auto& p : m_share_precopy) {
    auto delta = std::make_shared<ShareDelta>(p.delta());
    std::string tag = p.share().tag;
    m_inbox.post([delta, tag](ArchiveWriter& w) {
      w.add_member(SharePrecopy::removed_member(tag), std::as_bytes(std::span(delta->removed)),
                   delta->removed_sha256);
      w.add_member_from_fd(SharePrecopy::delta_member(tag), delta->tar.file.get(), delta->tar.size,
                           delta->tar.sha256);
    });
  }
  m_share_downtime = seconds_since(m_stopped_at);
  m_precopy->switchover();
  record_shares_stopped(); // while QEMU sends the rest: the VM runs only once it has
}

} // namespace ks
