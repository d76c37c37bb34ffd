// A member posted to a running vmstate writer (a live save's share delta, posted at the
// switchover) lands after every chunk of what was read before the post and before every
// chunk holding a byte read after it.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/member_inbox.hpp"
#include "storage/vmstate_stream.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/deadline.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <fcntl.h>
#include <thread>

using namespace ks;
using ks::test::TempDir;

TEST_CASE("member inbox: a posted member comes between the chunks read before and after the post") {
  TempDir dir;
  constexpr size_t k_chunk = 65536;
  std::string path = dir / "a.ksnap";
  Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  ArchiveWriter w(out.get(), path,
                  {{"format", k_format_name},
                   {"format_version", k_format_version},
                   {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
                   {"vmstate", {{"chunk_size", k_chunk}}}});
  Pipe pipe = make_pipe();
  MemberInbox inbox;
  std::atomic<uint64_t> progress{0};
  std::thread writer([&] {
    write_vmstate(pipe.read.get(), w,
                  {.chunk_size = k_chunk, .level = 1, .threads = 2, .progress = &progress, .inbox = &inbox});
  });
  std::string before(3 * k_chunk, 'b');
  std::memcpy(before.data(), "QEVM\0\0\0\3", 8);
  write_all(pipe.write.get(), before, "the test pipe");
  Deadline d(Millis(10000));
  while (progress < before.size() && !d.expired()) {
    std::this_thread::sleep_for(Millis(1));
  }
  REQUIRE(progress == before.size());
  std::string delta = "the delta";
  inbox.post([&](ArchiveWriter& aw) {
    aw.add_member("shares/t.removed.json", std::as_bytes(std::span(delta)), sha256_hex(delta));
  });
  write_all(pipe.write.get(), std::string(2 * k_chunk + 100, 'a'), "the test pipe");
  pipe.write.reset();
  writer.join();
  w.finish();

  Fd in = open_file(path, O_RDONLY);
  ArchiveReader r(in.get(), path);
  std::vector<std::string> names;
  while (auto m = r.next()) {
    names.push_back(m->name);
  }
  CHECK(names == std::vector<std::string>{"vmstate/000000.zst", "vmstate/000001.zst", "vmstate/000002.zst",
                                          "shares/t.removed.json", "vmstate/000003.zst", "vmstate/000004.zst",
                                          "vmstate/000005.zst"});
}
