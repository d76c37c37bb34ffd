#include "storage/vmstate_channels.hpp"

#include "storage/chunk_pipeline.hpp"
#include "storage/ordered_pool.hpp"
#include "util/cancel.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

constexpr uint32_t k_qemu_magic = 0x5145564d;    // "QEVM": the main channel
constexpr uint32_t k_multifd_magic = 0x11223344; // the start of every multifd channel

uint32_t be32(std::span<const std::byte> d) {
  return (std::to_integer<uint32_t>(d[0]) << 24) | (std::to_integer<uint32_t>(d[1]) << 16) |
         (std::to_integer<uint32_t>(d[2]) << 8) | std::to_integer<uint32_t>(d[3]);
}

void throw_if_abandoned(const StreamOptions& o) {
  throw_if_cancelled();
  if (o.abort && o.abort->load()) {
    throw StreamAbandoned();
  }
}

// One migration connection on save: its bytes so far, cut into chunks of its series.
struct Connection {
  Fd fd;
  Bytes chunk;
  size_t filled = 0;
  std::optional<unsigned> series; // known once its first 4 bytes are in
  uint64_t next_chunk = 0;
  uint64_t since = 0; // filled chunks (of every series) counted when this chunk got its first byte
  bool ended = false;
};

} // namespace

size_t channel_chunk_size(size_t wanted, unsigned connections) {
  size_t size = wanted;
  // The save holds a partial chunk per connection; a load may hold k_channel_queue chunks
  // queued and one being decompressed per connection.
  while (size > (1u << 20) && (size * connections > k_chunk_memory_budget / 2 ||
                               size * connections * (k_channel_queue + 1) > k_chunk_memory_budget)) {
    size /= 2;
  }
  return size;
}

StreamStats write_vmstate_channels(const ChannelSource& source, ArchiveWriter& writer,
                                   const StreamOptions& o) {
  BufferPool buffers(zstd_frame_bound(o.chunk_size)); // first: it outlives the workers using it
  OrderedPool<CompressedChunk> pool(
    o.threads, chunk_pool_capacity(o.threads, o.chunk_size, source.connections * o.chunk_size));
  std::vector<Connection> conns;
  StreamStats stats;
  uint64_t filled_chunks = 0;
  unsigned multifd_series = 0;
  bool have_main = false;
  auto write_next = [&] { add_chunk(writer, pool.take_next(), buffers, ++stats.chunks); };
  auto deliver_posted = [&] {
    if (o.inbox) {
      o.inbox->deliver(writer, [&] {
        while (!pool.empty()) {
          write_next();
        }
      });
    }
  };
  auto submit = [&](Connection& c) {
    if (c.filled == 0) {
      return;
    }
    if (!c.series) {
      throw Error("QEMU sent only " + std::to_string(c.filled) + " bytes on a migration connection");
    }
    auto chunk = std::make_shared<Bytes>(std::move(c.chunk));
    chunk->resize(c.filled);
    c.chunk = buffers.get(o.chunk_size);
    c.filled = 0;
    deliver_posted();
    if (pool.full()) {
      write_next();
    }
    pool.submit(
      [chunk, level = o.level, &buffers, &writer, name = vmstate_member_name(c.next_chunk++, *c.series)] {
        return compress_chunk(chunk, level, buffers, name, writer);
      });
  };
  // Which series a connection is, from its first bytes: QEMU's stream header, or multifd.
  auto identify = [&](Connection& c) {
    uint32_t magic = be32(c.chunk);
    if (magic == k_qemu_magic && !have_main) {
      have_main = true;
      c.series = 0;
    } else if (magic == k_multifd_magic && multifd_series + 1 < source.connections) {
      c.series = ++multifd_series;
    } else {
      throw Error("a migration connection from QEMU starts neither a main nor a multifd channel (magic " +
                  std::to_string(magic) + ")");
    }
  };
  // A full chunk goes out after the partial chunks of other series that are stale: a load
  // then finds the data QEMU needs on one channel close to what it waits for on another.
  auto filled_one = [&](Connection& full) {
    ++filled_chunks;
    for (auto& c : conns) {
      if (&c != &full && c.filled > 0 && filled_chunks - c.since >= k_channel_flush_after) {
        submit(c);
      }
    }
    submit(full);
  };
  auto read_some = [&](Connection& c) {
    ssize_t n = ::read(c.fd.get(), c.chunk.data() + c.filled, o.chunk_size - c.filled);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        return;
      }
      throw Error(std::string("failed to read a migration connection from QEMU: ") + std::strerror(errno));
    }
    if (n == 0) {
      c.ended = true;
      submit(c);
      c.fd.reset();
      return;
    }
    if (c.filled == 0) {
      c.since = filled_chunks;
    }
    bool first = !c.series && c.filled < 4;
    c.filled += static_cast<size_t>(n);
    stats.raw_bytes += static_cast<uint64_t>(n);
    if (o.progress) {
      o.progress->store(stats.raw_bytes);
    }
    if (first && c.filled >= 4) {
      identify(c);
    }
    if (c.filled == o.chunk_size) {
      filled_one(c);
    }
  };

  std::vector<pollfd> fds;
  std::vector<size_t> owner; // fds[i] belongs to conns[owner[i]]
  for (;;) {
    // Signals are the caller's: it cancels the migration, and QEMU then ends every connection.
    if (o.abort && o.abort->load()) {
      throw StreamAbandoned();
    }
    const bool accepting = conns.size() < source.connections;
    fds.clear();
    owner.clear();
    if (accepting) {
      fds.push_back({source.listen_fd, POLLIN, 0});
      owner.push_back(SIZE_MAX);
    }
    for (size_t i = 0; i < conns.size(); ++i) {
      if (!conns[i].ended) {
        fds.push_back({conns[i].fd.get(), POLLIN, 0});
        owner.push_back(i);
      }
    }
    if (fds.empty()) {
      break; // every connection came and ended
    }
    if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) {
      throw Error(std::string("poll failed on the migration connections: ") + std::strerror(errno));
    }
    // Every ready connection is read once per round, so none gets far ahead of another.
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      if (owner[i] != SIZE_MAX) {
        read_some(conns[owner[i]]);
        continue;
      }
      Fd conn(::accept4(source.listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (conn && (!source.accept_peer || source.accept_peer(conn.get()))) {
        conns.push_back({.fd = std::move(conn), .chunk = buffers.get(o.chunk_size)});
      }
    }
  }
  deliver_posted();
  while (!pool.empty()) {
    write_next();
  }
  if (!have_main) {
    throw Error("QEMU sent no main migration channel");
  }
  return stats;
}

StreamStats read_vmstate_channels(ArchiveReader& reader, unsigned channels,
                                  const std::function<Fd()>& connect, const StreamOptions& o,
                                  const OtherMember& other) {
  ReaderBuffers reader_buffers(reader, o.chunk_size);
  BufferPool& buffers = reader_buffers.pool();

  struct Series {
    std::deque<ArchiveReader::Member> queue;
    uint64_t queued = 0;   // chunks handed to this series so far
    uint64_t checking = 0; // taken from the queue, hash not checked yet
    uint64_t chunks = 0;
    uint64_t bytes = 0;
    int fd = -1; // the connection to QEMU while it is open (under the mutex)
  };
  std::vector<Series> series(channels + 1);
  std::mutex mutex;
  std::condition_variable cv;
  bool closed = false; // no more chunks will come
  std::exception_ptr error;
  // The first failure stops everything: queues are dropped and every connection is shut
  // down, which unblocks a thread writing to a QEMU that no longer reads.
  // A damaged archive is reported ahead of what it caused (QEMU closing other connections).
  auto archive_fault = [](const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      return err.code() == ExitCode::archive_invalid;
    } catch (...) {
      return false;
    }
  };
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard lock(mutex);
    if (!error || (!archive_fault(error) && archive_fault(e))) {
      error = std::move(e);
    }

    for (auto& s : series) {
      if (s.fd >= 0) {
        ::shutdown(s.fd, SHUT_RDWR);
      }
    }
    cv.notify_all();
  };
  const size_t max_chunk = std::max<size_t>(o.chunk_size, 256u << 20);
  auto feed = [&](unsigned index, Fd& conn) {
    Series& s = series[index];
    Bytes piece = buffers.get(k_piece_size);
    auto write = [&](std::span<const std::byte> data) {
      if (conn) {
        write_all(conn.get(), data, "the migration stream to QEMU");
      }
      s.bytes += data.size();
      add_progress(o.progress, data.size());
    };
    for (;;) {
      ArchiveReader::Member m;
      {
        std::unique_lock lock(mutex);
        cv.wait(lock, [&] { return error || !s.queue.empty() || closed; });
        if (error) {
          return;
        }
        if (s.queue.empty()) {
          break;
        }
        m = std::move(s.queue.front());
        s.queue.pop_front();
        ++s.checking;
      }
      cv.notify_all();        // room in the queue
      reader.check_member(m); // no byte reaches QEMU before its hash matched
      {
        std::lock_guard lock(mutex);
        --s.checking;
      }
      cv.notify_all();
      if (s.chunks++ == 0) {

        Bytes data = buffers.get(0);
        zstd_decompress(m.data, max_chunk, data);
        if (index == 0) {
          check_qemu_stream_header(data);
        } else if (data.size() < 4 || be32(data) != k_multifd_magic) {
          throw Error(reader.what() + ": " + m.name + " does not start a multifd channel",
                      ExitCode::archive_invalid);
        }
        if (connect) {
          conn = connect();
          std::lock_guard lock(mutex);
          if (error) {
            return; // failed while connecting: fail() could not shut this connection down
          }
          s.fd = conn.get();
        }
        write(data);
        buffers.put(std::move(data));
      } else {
        zstd_decompress_pieces(m.data, max_chunk, piece, write);
      }
      buffers.put(std::move(m.data));
    }
    if (conn) {
      ::shutdown(conn.get(), SHUT_WR); // this channel's end of stream
    }
    std::lock_guard lock(mutex);
    s.fd = -1;
  };
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < series.size(); ++i) {
    threads.emplace_back([&, i] {
      // The connection outlives a failure until fail() has recorded it: closed first, QEMU
      // would fail on its end and another channel's broken pipe could be reported first.
      Fd conn;
      try {
        feed(i, conn);
      } catch (...) {
        fail(std::current_exception());
      }
    });
  }
  auto join = [&] {
    for (auto& t : threads) {
      t.join();
    }
    threads.clear();
  };
  auto push = [&](ArchiveReader::Member&& m, unsigned index) {
    std::unique_lock lock(mutex);
    // An archive whose chunks come in an order QEMU cannot load (or a QEMU that hangs)
    // leaves every queue waiting on another: give up instead of waiting forever.
    Deadline stalled(k_channel_stall);
    while (!cv.wait_for(lock, Millis(100),
                        [&] { return error || series[index].queue.size() < k_channel_queue; })) {
      lock.unlock();
      throw_if_abandoned(o); // a signal, or the caller gave up, while QEMU reads nothing
      if (stalled.expired()) {
        throw Error("QEMU read nothing of the migration stream for " +
                    std::to_string(k_channel_stall.count() / 1000) + " s while " + m.name +
                    " waited: the archive's chunks are not in an order QEMU can load, or QEMU hangs");
      }
      lock.lock();
    }
    if (error) {
      std::rethrow_exception(error);
    }
    series[index].queue.push_back(std::move(m));
    ++series[index].queued;
    cv.notify_all();
  };
  auto check_queued = [&] {
    std::unique_lock lock(mutex);
    for (size_t i = 1; i < series.size(); ++i) {
      for (auto& m : series[i].queue) {
        reader.check_member(m); // hashing a few chunks while feeders wait: only at the end
      }
    }
    cv.wait(lock, [&] {
      return error ||
             std::all_of(series.begin(), series.end(), [](const Series& s) { return s.checking == 0; });
    });
    if (error) {
      std::rethrow_exception(error);
    }
  };
  try {
    std::vector<ArchiveReader::Member> held; // the main channel's newest chunk, if any
    while (auto member = reader.next()) {
      throw_if_abandoned(o);
      std::optional<unsigned> index = vmstate_series(member->name);
      if (!index) {
        other(std::move(*member));
        continue;
      }
      if (*index > channels) {
        throw Error(reader.what() + ": " + member->name + " belongs to a multifd channel beyond the " +
                      std::to_string(channels) + " the manifest names",
                    ExitCode::archive_invalid);
      }
      if (!held.empty()) {
        push(std::move(held.back()), 0);
        held.clear();
      }
      if (*index == 0) {
        held.push_back(std::move(*member));
      } else {
        push(std::move(*member), *index);
      }
    }
    // index.json checked (reader.next() returned nullopt). Before the main channel may end,
    // every chunk still queued for the other channels is checked too: QEMU fails as soon as
    // the main channel ends with data missing, and the damage must be what is reported,
    // not the broken pipes of that failure.
    check_queued();
    if (!held.empty()) {
      push(std::move(held.back()), 0);
    }

    for (unsigned i = 0; i < series.size(); ++i) {
      if (series[i].queued == 0) {
        throw Error(
          reader.what() + " holds no chunks of " +
            (i == 0 ? std::string("the main migration channel") : "multifd channel " + std::to_string(i - 1)),
          ExitCode::archive_invalid);
      }
    }
    {
      std::lock_guard lock(mutex);
      closed = true;
    }
    cv.notify_all();
    join();
  } catch (...) {
    fail(std::current_exception());
    join();
    throw;
  }
  if (error) {
    std::rethrow_exception(error);
  }
  StreamStats stats;
  for (const auto& s : series) {
    stats.chunks += s.chunks;
    stats.raw_bytes += s.bytes;
  }
  return stats;
}

} // namespace ks
