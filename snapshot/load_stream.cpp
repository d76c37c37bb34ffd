// A load's stream: the checked, decompressed vmstate fed into QEMU's incoming migration
// through a pipe (stream), UNIX sockets (multifd) or a staging file (mapped-ram), while QEMU,
// signals and the migration's status are watched until it completes.
#include "snapshot/load_session.hpp"
#include "snapshot/mapped_ram.hpp"
#include "snapshot/multifd.hpp"
#include "snapshot/shared_ram.hpp"
#include "storage/vmstate_channels.hpp"
#include "util/cancel.hpp"
#include "util/deadline.hpp"
#include "util/progress.hpp"
#include "util/unix_socket.hpp"

#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>

namespace ks {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_fd_name = "ksnap-load";

} // namespace

// mapped-ram: the vmstate chunks that follow the shares are checked and written into a
// staging file while virtiofsd and QEMU start; QEMU reads the file only once the whole
// archive, index.json included, has been checked.
void LoadSession::start_staging() {
  if (m_layout != k_layout_mapped_ram) {
    return;
  }
  const Json& vmstate = m_reader->manifest()["vmstate"];
  m_staging = staging_file(m_run_dir, m_reader->manifest()["vm"].value("ram_bytes", 0ull));
  unsigned threads = m_o.threads ? m_o.threads : std::max(1u, std::thread::hardware_concurrency());
  StreamOptions so{.chunk_size = vmstate.value("chunk_size", size_t{8} << 20),
                   .level = vmstate.value("level", 1),
                   .threads = threads,
                   .progress = &m_stage_progress,
                   .sparse = true,
                   .abort = &m_stage_abort};
  m_stager = std::thread([this, so] {
    try {
      read_vmstate_into(m_staging.get(), so);
    } catch (...) {
      m_stage_error = std::current_exception();
    }
    m_staged = true;
  });
}

// The rest of the archive: vmstate chunks, checked, into FD; the stream header checked.
void LoadSession::read_vmstate_into(int fd, const StreamOptions& so) {
  read_vmstate(
    *m_reader, fd, so, [&](ArchiveReader::Member&& m) { other_member(std::move(m)); },
    check_qemu_stream_header);
}

// One look at the incoming migration: true once it completed; a failure ends in
// qemu_failed. STATUS is empty when QEMU did not answer (it went away: the caller's next
// check of the process says why).
bool LoadSession::incoming_completed(std::string& status) {
  try {
    status = m_qmp->execute("query-migrate").value("status", "");
  } catch (const Error&) {
    status.clear();
    return false;
  }
  if (status == "failed") {
    qemu_failed("loading");
  }
  return status == "completed";
}

void LoadSession::stop_staging() noexcept {
  if (m_stager.joinable()) {
    m_stage_abort = true;
    m_stager.join();
  }
}

void LoadSession::stream() {
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

// multifd: QEMU listens in the run directory; every chunk series gets its own connection,
// fed by its own thread as soon as its first chunk comes.
void LoadSession::stream_multifd() {
  const Json& vmstate = m_reader->manifest()["vmstate"];
  unsigned channels = vmstate.at("channels").get<unsigned>();
  MultifdSetup setup(*m_qmp, channels);
  std::string socket = m_run_dir + "/migrate.sock";
  std::error_code ec;
  fs::remove(socket, ec);
  created_socket(socket); // QEMU listens there: gone with it should the load fail or die
  try {
    m_qmp->execute("migrate-incoming", {{"uri", "unix:" + socket}});
    feed_while_watching([&](std::atomic<uint64_t>& progress) {
      StreamOptions so{.chunk_size = vmstate.value("chunk_size", size_t{8} << 20), .progress = &progress};
      read_vmstate_channels(
        *m_reader, channels, [&] { return connect_unix(socket, Deadline(std::chrono::seconds(10))); }, so,
        [&](ArchiveReader::Member&& m) { other_member(std::move(m)); });
    });
  } catch (...) {
    setup.forget(); // this QEMU is being killed
    fs::remove(socket, ec);
    throw;
  }
  fs::remove(socket, ec);
}

void LoadSession::await_staging() {
  if (!m_stager.joinable()) {
    return;
  }
  {
    ProgressLine bar(m_o.progress, "loading", m_reader->manifest()["vm"].value("ram_bytes", 0ull));
    while (!m_staged) {
      throw_if_cancelled();
      bar.update(m_stage_progress.load());
      if (m_stage_progress.load() > 0) {
        m_mid_stream.reached();
      }
      std::this_thread::sleep_for(Millis(5));
    }
  }
  m_stager.join();
  if (m_stage_error) {
    std::rethrow_exception(m_stage_error);
  }
}

void LoadSession::stream_mapped_ram() {
  await_staging();
  // Written over multifd channels (format 5): read back over as many.
  unsigned channels = m_reader->manifest()["vmstate"].value("channels", 0u);
  std::optional<MultifdSetup> multifd;
  if (channels) {
    multifd.emplace(*m_qmp, channels);
  }
  MigrationCapability cap(*m_qmp, k_layout_mapped_ram, true);
  QemuFdset source(*m_qmp, m_staging.get(), O_RDONLY);
  m_qmp->execute("migrate-incoming", {{"uri", source.uri()}});
  for (;;) {
    if (!m_qemu.running()) {
      cap.forget();
      if (multifd) {
        multifd->forget();
      }
      qemu_failed("loading");
    }
    throw_if_cancelled();
    std::string status;
    if (incoming_completed(status)) {
      break;
    }
    std::this_thread::sleep_for(Millis(2));
  }

  m_staging.reset(); // QEMU has it all: give the memory back
}

// shared-ram: the memory chunks are written, checked, in place into the new QEMU's shared
// memory files (emptied first) by every core, while QEMU waits on its incoming pipe with
// x-ignore-shared on; the device state that follows them is staged, and goes down the pipe
// only once the whole archive, index.json included, has been checked.
void LoadSession::stream_shared_ram() {
  const Json& vmstate = m_reader->manifest()["vmstate"];
  const uint64_t chunk = vmstate.value("chunk_size", uint64_t{8} << 20);
  std::vector<SharedRamBlock> blocks =
    open_shared_ram_for_load(*m_qmp, m_qemu.pid(), vmstate.at("memory"), chunk);
  std::vector<uint64_t> first; // each block's first chunk
  uint64_t ram_chunks = 0;
  for (const auto& b : blocks) {
    first.push_back(ram_chunks);
    ram_chunks += b.bytes / chunk;
  }
  if (!qemu_has_capability(*m_qmp, k_ignore_shared)) {
    throw Error("this QEMU has no x-ignore-shared migration capability, which the snapshot's layout needs",
                ExitCode::usage, "load it with the QEMU that saved it, or a newer one");
  }
  MigrationCapability cap(*m_qmp, k_ignore_shared, true);
  Pipe pipe = make_pipe();
  grow_pipe(pipe.write.get(), 1 << 20);
  m_qmp->send_fd(k_fd_name, pipe.read.get());
  pipe.read.reset();
  m_qmp->execute("migrate-incoming", {{"uri", std::string("fd:") + k_fd_name}});
  try {
    feed_while_watching([&](std::atomic<uint64_t>& progress) {
      struct Close { // end of stream for QEMU (complete, or cut short on error)
        Fd& fd;
        ~Close() { fd.reset(); }
      } close{pipe.write};
      Fd device = staging_file(m_run_dir, 64u << 20);
      auto place = [&](uint64_t index, std::span<const std::byte> data) {
        if (index >= ram_chunks) {
          pwrite_sparse(device.get(), data, (index - ram_chunks) * chunk);
          return;
        }
        size_t b = std::upper_bound(first.begin(), first.end(), index) - first.begin() - 1;
        if (data.size() != chunk) {
          throw Error(m_reader->what() + ": memory chunk " + std::to_string(index) + " is not a whole chunk",
                      ExitCode::archive_invalid);
        }
        pwrite_sparse(blocks[b].fd.get(), data, (index - first[b]) * chunk);
      };
      unsigned threads = m_o.threads ? m_o.threads : std::max(1u, std::thread::hardware_concurrency());
      StreamOptions so{.chunk_size = chunk,
                       .level = vmstate.value("level", 1),
                       .threads = threads,
                       .progress = &progress,
                       .sparse = true,
                       .place = place,
                       .header_chunk = ram_chunks};
      StreamStats stats = read_vmstate(
        *m_reader, -1, so, [&](ArchiveReader::Member&& m) { other_member(std::move(m)); },
        check_qemu_stream_header);
      // Checked to the end: the device state goes to QEMU.
      uint64_t bytes = stats.raw_bytes - ram_chunks * chunk;
      if (::ftruncate(device.get(), static_cast<off_t>(bytes)) != 0) { // a zero tail is a hole
        throw Error("failed to size the staged device state");
      }
      Bytes buf(1u << 20);
      for (uint64_t at = 0; at < bytes;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - at));
        if (::pread(device.get(), buf.data(), n, static_cast<off_t>(at)) != static_cast<ssize_t>(n)) {
          throw Error("failed to read back the staged device state");
        }
        write_all(pipe.write.get(), std::span(buf.data(), n), "the migration stream to QEMU");
        at += n;
      }
    });
  } catch (...) {
    cap.forget(); // this QEMU is being killed
    throw;
  }
}

void LoadSession::stream_pipe() {
  Pipe pipe = make_pipe();
  grow_pipe(pipe.write.get(), 1 << 20);
  m_qmp->send_fd(k_fd_name, pipe.read.get());

  pipe.read.reset();
  m_qmp->execute("migrate-incoming", {{"uri", std::string("fd:") + k_fd_name}});
  unsigned threads = m_o.threads ? m_o.threads : default_stream_threads();
  feed_while_watching([&](std::atomic<uint64_t>& progress) {
    StreamOptions so{.chunk_size = m_reader->manifest()["vmstate"].value("chunk_size", size_t{8} << 20),
                     .threads = threads,
                     .progress = &progress};
    struct Close { // end of stream for QEMU (complete, or cut short on error)
      Fd& fd;
      ~Close() { fd.reset(); }
    } close{pipe.write};
    read_vmstate_into(pipe.write.get(), so);
  });
}

void LoadSession::feed_while_watching(const std::function<void(std::atomic<uint64_t>& progress)>& body) {
  std::atomic<bool> done{false};
  std::atomic<uint64_t> progress{0};
  std::exception_ptr error;
  std::thread writer([&] {
    try {
      body(progress);
    } catch (...) {
      error = std::current_exception();
    }
    done = true;
  });

  ProgressLine bar(m_o.progress, "loading", m_reader->manifest()["vm"].value("ram_bytes", 0ull));
  auto join_writer = [&] {
    if (writer.joinable()) {
      writer.join();
    }
  };
  try {
    std::string status;
    std::optional<Deadline> after_eof; // QEMU gets 60 s to finish once the whole stream is in
    for (;;) {
      if (!m_qemu.running()) {
        join_writer();
        if (error) {
          std::rethrow_exception(error); // the archive's fault comes first
        }
        qemu_failed("loading");
      }
      if (cancel_requested()) {
        throw_if_cancelled();
      }
      if (done && error) {
        std::rethrow_exception(error);
      }
      if (incoming_completed(status)) {
        break;
      }
      if (done && !after_eof) {
        after_eof.emplace(std::chrono::seconds(60));
      }
      if (after_eof && after_eof->expired()) {
        throw Error("QEMU did not finish loading the stream (status " + status + ")");
      }

      bar.update(progress.load());
      if (progress.load() > 0) {
        m_mid_stream.reached();
      }
      std::this_thread::sleep_for(Millis(done ? 2 : 20));
    }
  } catch (...) {
    m_qemu.terminate(Millis(0)); // unblocks the writer (EPIPE)
    join_writer();
    throw;
  }
  join_writer();
  if (error) {
    std::rethrow_exception(error);
  }
}

} // namespace ks
