// The multifd layout's data path without QEMU: several connections into one archive and
// back out into as many connections, in an order a consumer that waits like QEMU's
// multifd threads accepts with bounded memory.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/vmstate_channels.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/child_process.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/unix_socket.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <csignal>
#include <fcntl.h>
#include <mutex>
#include <random>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace ks;
using ks::test::TempDir;

namespace {

constexpr size_t k_chunk = 64u << 10;
constexpr unsigned k_channels = 2;

// What each connection carries, QEMU-like: the main channel starts with the QEVM header and
// has a FLUSH marker at FLUSH; each multifd channel starts with the multifd magic and has a
// SYNC marker at SYNC, followed by far more data than a load may queue.
struct Streams {
  std::vector<Bytes> data; // [0] main, [1..] multifd
  size_t flush = 0;
  size_t sync = 0;
};

Streams make_streams() {
  Streams s;
  std::mt19937 rng(7);
  auto fill = [&](size_t size, std::initializer_list<unsigned char> magic) {
    Bytes b(size);
    size_t i = 0;
    for (unsigned char m : magic) {
      b[i++] = std::byte(m);
    }
    for (; i < size; ++i) {
      b[i] = (i / 4096) % 3 == 0 ? std::byte(rng() & 0xff) : std::byte('a' + i % 5);
    }
    return b;
  };
  s.flush = 3000;
  s.sync = 5 * k_chunk + 1234;
  s.data.push_back(fill(9000, {'Q', 'E', 'V', 'M', 0, 0, 0, 3}));
  for (unsigned c = 0; c < k_channels; ++c) {
    s.data.push_back(fill(s.sync + 20 * k_chunk + size_t{77} * c, {0x11, 0x22, 0x33, 0x44}));
  }
  return s;
}

void send_range(int fd, const Bytes& b, size_t from, size_t to) {
  write_all(fd, std::span<const std::byte>(b).subspan(from, to - from), "a test channel");
}

// The saving QEMU: every multifd channel sends up to its SYNC; once all have, the main
// channel sends up to and including its FLUSH; then everything else goes at once.
void produce(const std::string& socket, const Streams& s) {
  std::vector<Fd> conns;
  for (size_t i = 0; i < s.data.size(); ++i) {
    conns.push_back(connect_unix(socket, Deadline(Millis(5000))));
  }
  std::vector<std::thread> channels;
  std::atomic<unsigned> synced{0};
  std::atomic<bool> flushed{false};
  for (unsigned c = 1; c < s.data.size(); ++c) {
    channels.emplace_back([&, c] {
      send_range(conns[c].get(), s.data[c], 0, s.sync);
      ++synced;
      while (!flushed) {
        std::this_thread::yield();
      }
      send_range(conns[c].get(), s.data[c], s.sync, s.data[c].size());
      ::shutdown(conns[c].get(), SHUT_WR);
    });
  }
  while (synced < k_channels) {
    std::this_thread::yield();
  }
  send_range(conns[0].get(), s.data[0], 0, s.flush);
  flushed = true;
  for (auto& t : channels) {
    t.join();
  }
  send_range(conns[0].get(), s.data[0], s.flush, s.data[0].size());
  ::shutdown(conns[0].get(), SHUT_WR);
}

std::string save(const TempDir& dir, const Streams& s, StreamStats& stats) {
  std::string socket = dir / "save.sock";
  Fd listen = listen_unix(socket);
  std::thread qemu([&] { produce(socket, s); });
  std::string path = dir / "m.ksnap";
  Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  Json manifest = {{"format", k_format_name},
                   {"format_version", k_format_version},
                   {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
                   {"vmstate", {{"layout", "multifd"}, {"channels", k_channels}, {"chunk_size", k_chunk}}}};
  ArchiveWriter w(out.get(), path, manifest);
  try {
    stats = write_vmstate_channels({listen.get(), k_channels + 1, {}}, w,
                                   {.chunk_size = k_chunk, .level = 1, .threads = 2});
  } catch (...) {
    qemu.join();
    throw;
  }
  qemu.join();
  w.finish();
  return path;
}

// The loading QEMU: a multifd channel stops reading after its SYNC until the main channel
// has read its FLUSH, and the main channel stops after its FLUSH until every multifd channel
// reached its SYNC, as QEMU's threads wait for each other. Returns what each connection got.
std::vector<Bytes> consume(const std::string& archive, const std::string& socket, const Streams& s) {
  Fd listen = listen_unix(socket);
  std::mutex mutex;
  std::condition_variable cv;
  unsigned at_sync = 0;
  bool past_flush = false;
  std::vector<Bytes> got(k_channels + 1);
  std::vector<std::thread> readers;
  auto read_to = [](int fd, Bytes& into, size_t size) {
    size_t start = into.size();
    into.resize(size);
    size_t n = read_full(fd, std::span<std::byte>(into).subspan(start), "a test connection");
    into.resize(start + n);
  };
  auto consume_one = [&](unsigned i, int fd) {
    Bytes b;
    read_to(fd, b, 4);
    bool main = b.size() == 4 && b[0] == std::byte('Q');
    read_to(fd, b, main ? s.flush : s.sync);
    std::unique_lock lock(mutex);
    if (main) {
      past_flush = true;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return at_sync == k_channels; })) {
        return; // deadlocked: got[i] stays empty
      }
    } else {
      ++at_sync;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return past_flush; })) {
        return;
      }
    }
    lock.unlock();
    read_to(fd, b, 64u << 20); // the rest, up to the end
    got[i] = std::move(b);
  };
  std::thread acceptor([&] {
    for (unsigned i = 0; i <= k_channels; ++i) {
      Fd conn(::accept4(listen.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) {
        return; // given up
      }
      readers.emplace_back([&, i, conn = std::make_shared<Fd>(std::move(conn))] {
        try {
          consume_one(i, conn->get());
        } catch (const std::exception&) {
          // got[i] stays empty, which the test reports
        }
      });
    }
  });

  Fd in = open_file(archive, O_RDONLY);
  ArchiveReader r(in.get(), archive);
  std::atomic<bool> give_up{false};
  std::thread watchdog([&] {
    Deadline d(Millis(30000)); // a deadlock fails the test instead of hanging it
    while (!give_up && !d.expired()) {
      std::this_thread::sleep_for(Millis(10));
    }
    give_up = true;
  });
  StreamStats stats;
  try {
    stats = read_vmstate_channels(
      r, k_channels, [&] { return connect_unix(socket, Deadline(Millis(5000))); },
      {.chunk_size = k_chunk, .abort = &give_up}, [](ArchiveReader::Member&&) { FAIL("unexpected member"); });
  } catch (...) {
    give_up = true;
    watchdog.join();
    ::shutdown(listen.get(), SHUT_RDWR);
    acceptor.join();
    for (auto& t : readers) {
      t.join();
    }
    throw;
  }
  give_up = true;
  watchdog.join();
  acceptor.join();
  for (auto& t : readers) {
    t.join();
  }
  uint64_t total = 0;
  for (const auto& d : s.data) {
    total += d.size();
  }
  CHECK(stats.raw_bytes == total);
  return got;
}

} // namespace

TEST_CASE("multifd: connections that wait on each other round-trip through the archive") {
  std::signal(SIGPIPE, SIG_IGN); // as in kata-snapshot: a closed connection is EPIPE
  TempDir dir;

  Streams s = make_streams();
  StreamStats saved;
  std::string archive = save(dir, s, saved);
  uint64_t total = 0;
  for (const auto& d : s.data) {
    total += d.size();
  }
  CHECK(saved.raw_bytes == total);
  // Every series is named after its channel; the main channel's are the plain names.
  CommandResult list = run_command({"tar", "-tf", archive});
  CHECK_THAT(list.output, Catch::Contains("vmstate/000000.zst") &&
                            Catch::Contains("vmstate/multifd-0/000000.zst") &&
                            Catch::Contains("vmstate/multifd-1/000020.zst"));

  std::vector<Bytes> got = consume(archive, dir / "load.sock", s);
  // Each connection got exactly one channel's bytes (multifd channels in any order).
  std::vector<bool> matched(s.data.size(), false);
  for (const auto& g : got) {
    for (size_t i = 0; i < s.data.size(); ++i) {
      if (!matched[i] && g == s.data[i]) {
        matched[i] = true;
        break;
      }
    }
  }
  CHECK(std::count(matched.begin(), matched.end(), true) == static_cast<long>(s.data.size()));

  // verify's path: every series checked and decompressed, nothing connected.
  Fd in = open_file(archive, O_RDONLY);
  ArchiveReader r(in.get(), archive);
  StreamStats checked = read_vmstate_channels(r, k_channels, {}, {.chunk_size = k_chunk}, [](auto&&) {});
  CHECK(checked.raw_bytes == total);
}

TEST_CASE("multifd: vmstate chunk names and their series") {
  CHECK(vmstate_member_name(3) == "vmstate/000003.zst");
  CHECK(vmstate_member_name(12, 1) == "vmstate/multifd-0/000012.zst");
  CHECK(vmstate_series("vmstate/000003.zst") == 0u);
  CHECK(vmstate_series("vmstate/1234567.zst") == 0u);
  CHECK(vmstate_series("vmstate/multifd-0/000012.zst") == 1u);
  CHECK(vmstate_series("vmstate/multifd-7/000000.zst") == 8u);
  for (const char* bad : {"vmstate/00003.zst", "vmstate/multifd-/000001.zst", "vmstate/multifd-x/000001.zst",
                          "vmstate/multifd-1/00001.zst", "vmstate/000003.zstd", "shares/a.tar.zst",
                          "vmstate/multifd-1/../000001.zst"}) {
    INFO(bad);
    CHECK_FALSE(vmstate_series(bad));
  }
}

TEST_CASE("multifd: a manifest without a channel count is refused") {
  Json m = {{"format", k_format_name},
            {"format_version", k_format_version},
            {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
            {"vmstate", {{"layout", "multifd"}}}};
  CHECK_THROWS_WITH(validate_manifest(m), Catch::Contains("vmstate.channels"));
  m["vmstate"]["channels"] = 2;
  CHECK_NOTHROW(validate_manifest(m));
}
