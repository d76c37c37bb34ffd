// The archive format: round trip through the parallel pipeline, and every kind of damage
// a reader must refuse with exit code 3.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/tar.hpp"
#include "storage/vmstate_stream.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <random>
#include <sys/mman.h>
#include <tuple>
#include <unistd.h>

using namespace ks;
using ks::test::TempDir;

namespace {

// A fake migration stream: QEVM header, then a mix of random and repetitive bytes.
Bytes fake_stream(size_t size) {
  Bytes b(size);
  std::mt19937 rng(42);
  const unsigned char header[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  for (size_t i = 0; i < size; ++i) {
    b[i] = i < 8 ? std::byte(header[i]) : (i / 4096) % 2 ? std::byte(rng() & 0xff) : std::byte('a' + i % 7);
  }
  return b;
}

Json test_manifest(int version = k_format_version) {
  return {{"format", k_format_name},
          {"format_version", version},
          {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
          {"vmstate", {{"chunk_size", 65536}}}};
}

// Writes an archive holding STREAM in 64 KiB chunks on 3 workers; returns its path.
std::string write_archive_file(const TempDir& dir, const Bytes& stream,
                               const Json& manifest = test_manifest(), bool finish = true) {
  std::string raw = dir / "raw";
  {
    Fd f = open_file(raw, O_WRONLY | O_CREAT | O_TRUNC);
    write_all(f.get(), stream, raw);
  }
  std::string path = dir / "a.ksnap";
  Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  Fd in = open_file(raw, O_RDONLY);
  ArchiveWriter w(out.get(), path, manifest);
  StreamStats s = write_vmstate(in.get(), w, {.chunk_size = 65536, .level = 1, .threads = 3});
  CHECK(s.raw_bytes == stream.size());
  if (finish) {
    w.finish();
  }
  return path;
}

// THREADS 1: the writer decompresses in pieces; more: workers decompress whole chunks.
Bytes read_back(const std::string& path, unsigned threads = 3) {
  Fd in = open_file(path, O_RDONLY);
  ArchiveReader r(in.get(), path);
  std::string out_path = path + ".out";
  Fd out = open_file(out_path, O_WRONLY | O_CREAT | O_TRUNC);
  read_vmstate(
    r, out.get(), {.chunk_size = 65536, .threads = threads}, [](ArchiveReader::Member&&) {},
    check_qemu_stream_header);
  std::string data = read_file(out_path);
  return Bytes(reinterpret_cast<const std::byte*>(data.data()),
               reinterpret_cast<const std::byte*>(data.data()) + data.size());
}

void require_invalid(const std::string& path, const std::string& fragment) {
  for (unsigned threads : {1u, 3u}) { // checked by the writer itself, or by workers
    try {
      read_back(path, threads);
      FAIL("the damaged archive was accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::Contains(fragment));
    }
  }
}

// PATH's vmstate read in place into a sparse staging file (workers write each chunk at its
// offset and compare it with a frame of zeros) is refused with FRAGMENT.
void require_refused_in_place(const std::string& path, const std::string& fragment) {
  Fd in = open_file(path, O_RDONLY);
  ArchiveReader r(in.get(), path);
  Fd staged(::memfd_create("staged-test", MFD_CLOEXEC));
  CHECK_THROWS_WITH(read_vmstate(r, staged.get(), {.chunk_size = 65536, .threads = 2, .sparse = true},
                                 [](ArchiveReader::Member&&) {}),
                    Catch::Contains(fragment));
}

void truncate_to(const std::string& path, off_t size) {
  REQUIRE(::truncate(path.c_str(), size) == 0);
}

} // namespace

TEST_CASE("archive: round trip through parallel chunks keeps the stream byte for byte") {
  TempDir dir;
  Bytes stream = fake_stream(1'000'003);
  std::string path = write_archive_file(dir, stream);
  CHECK(read_back(path, 3) == stream);
  CHECK(read_back(path, 1) == stream); // decompressed in pieces by the writer
}

TEST_CASE("zstd: a frame decompressed in pieces equals the whole, and a cut or damaged frame is refused") {
  Bytes data = fake_stream(700'001);
  Bytes frame;
  zstd_compress(data, 1, frame);
  Bytes piece(4096);
  Bytes joined;
  size_t n = zstd_decompress_pieces(frame, 1 << 20, piece, [&](std::span<const std::byte> s) {
    joined.insert(joined.end(), s.begin(), s.end());
  });
  CHECK(n == data.size());
  CHECK(joined == data);
  auto discard = [](std::span<const std::byte>) {};
  Bytes cut(frame.begin(), frame.end() - 100);
  CHECK_THROWS_WITH(zstd_decompress_pieces(cut, 1 << 20, piece, discard),
                    Catch::Contains("corrupt zstd chunk"));
  Bytes damaged = frame;
  damaged[damaged.size() / 2] ^= std::byte{0x55};
  CHECK_THROWS_AS(zstd_decompress_pieces(damaged, 1 << 20, piece, discard), Error);
  CHECK_THROWS_WITH(zstd_decompress_pieces(frame, 1000, piece, discard), Catch::Contains("bad frame header"));
}

TEST_CASE("bytes: append and bytes_of copy exactly, onto what is already there") {
  std::vector<std::byte> a(1000), b(3);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<std::byte>(i * 7);
  }
  b = {std::byte{1}, std::byte{2}, std::byte{3}};
  Bytes out = bytes_of(a);
  CHECK(std::ranges::equal(out, a));
  append(out, b);
  append(out, std::span<const std::byte>());
  REQUIRE(out.size() == 1003);
  CHECK(std::ranges::equal(std::span(out).first(1000), a));
  CHECK(std::ranges::equal(std::span(out).last(3), b));
  CHECK(bytes_of({}).empty());
}

TEST_CASE("archive: GNU tar lists it with manifest first and index last, files 0600") {
  TempDir dir;
  std::string path = write_archive_file(dir, fake_stream(200'000));
  CommandResult r = run_command({"tar", "-tvf", path});
  REQUIRE(r.status == 0);
  CHECK(r.output.find("manifest.json") < r.output.find("vmstate/000000.zst"));
  CHECK(r.output.find("vmstate/000003.zst") < r.output.find("index.json"));
  CHECK(r.output.rfind("-rw-------", 0) == 0);
}

TEST_CASE("archive: a flipped byte inside a vmstate chunk is refused") {
  TempDir dir;
  std::string path = write_archive_file(dir, fake_stream(300'000));
  std::string data = read_file(path);
  size_t pos = data.find("vmstate/000002.zst");
  REQUIRE(pos != std::string::npos);
  // The chunk's data starts at the next 512-byte block after its ustar header.
  size_t header = pos / 512 * 512;
  size_t payload = header + 512 + 100;
  Fd f = open_file(path, O_WRONLY);
  char c = static_cast<char>(data[payload] ^ 0x20);
  REQUIRE(::pwrite(f.get(), &c, 1, static_cast<off_t>(payload)) == 1);
  require_invalid(path, "does not match its SHA-256");
}

// A load stops at the first bad chunk while workers still hold many more (small chunks:
// up to 16 MiB of them in flight); its error comes out, and no worker outlives what it uses.
TEST_CASE("archive: a bad chunk early in a long stream is refused while later ones are in flight") {
  TempDir dir;
  std::string path = write_archive_file(dir, fake_stream(8u << 20)); // 128 chunks
  std::string data = read_file(path);
  size_t pos = data.find("vmstate/000001.zst");
  REQUIRE(pos != std::string::npos);
  size_t payload = pos / 512 * 512 + 512 + 100;
  Fd f = open_file(path, O_WRONLY);
  char c = static_cast<char>(data[payload] ^ 0x20);
  REQUIRE(::pwrite(f.get(), &c, 1, static_cast<off_t>(payload)) == 1);
  for (int i = 0; i < 5; ++i) {
    require_invalid(path, "does not match its SHA-256");
    // In place (a sparse staging file): the workers also compare each chunk with the frame
    // of zeros, which must outlive them (it did not: a use after free, a crash in CI).
    require_refused_in_place(path, "does not match its SHA-256");
  }
}

TEST_CASE("archive: truncated, missing index, future version, empty") {
  TempDir dir;
  SECTION("truncated in the middle") {
    std::string path = write_archive_file(dir, fake_stream(300'000));
    truncate_to(path, static_cast<off_t>(std::filesystem::file_size(path) / 2));
    require_invalid(path, "is damaged");
  }
  SECTION("missing index") {
    std::string path = write_archive_file(dir, fake_stream(300'000), test_manifest(), false);
    require_invalid(path, "index.json is missing");
  }
  SECTION("manifest from a future format version") {
    std::string path = write_archive_file(dir, fake_stream(100'000), test_manifest(k_format_version + 1));
    require_invalid(path, "newer than this kata-snapshot supports");
  }
  SECTION("a huge manifest is refused before it is read") {
    Json manifest = test_manifest();
    manifest["padding"] = std::string(17u << 20, 'x');
    std::string path = write_archive_file(dir, fake_stream(100'000), manifest);
    require_invalid(path, "member manifest.json is implausibly large");
  }
  SECTION("zero-length file") {
    std::string path = dir / "empty.ksnap";
    Fd f = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    require_invalid(path, "is empty or not a");
  }
}

TEST_CASE("archive: the QEMU stream header is checked") {
  Bytes good = fake_stream(16);
  CHECK_NOTHROW(check_qemu_stream_header(good));
  Bytes bad = good;
  bad[7] = std::byte(2);
  CHECK_THROWS_WITH(check_qemu_stream_header(bad), Catch::Contains("version 2"));
}

namespace {

constexpr size_t k_sparse_chunk = 256u << 10;

// A memfd laid out like a mapped-ram file: data, a long hole, a chunk that is mostly zeros,
// another hole, and a short last chunk of data.
Fd sparse_vmstate_file(Bytes& content) {
  content.assign(5 * k_sparse_chunk + 100'000, std::byte{0});
  Bytes data = fake_stream(content.size());
  auto put = [&](size_t offset, size_t size) {
    std::copy_n(data.begin() + static_cast<ptrdiff_t>(offset), size,
                content.begin() + static_cast<ptrdiff_t>(offset));
  };
  put(0, k_sparse_chunk);                    // chunk 0: data (with the QEVM header)
  put(3 * k_sparse_chunk + 4096, 64u << 10); // chunk 3: 64 KiB of data among zeros
  put(5 * k_sparse_chunk, 100'000);          // chunk 5, short: data
  Fd f(::memfd_create("sparse-test", MFD_CLOEXEC));
  REQUIRE(::ftruncate(f.get(), static_cast<off_t>(content.size())) == 0);
  for (size_t off : {size_t{0}, 3 * k_sparse_chunk, 5 * k_sparse_chunk}) {
    size_t n = off == 5 * k_sparse_chunk ? 100'000 : k_sparse_chunk;
    REQUIRE(::pwrite(f.get(), content.data() + off, n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
  }
  return f;
}

} // namespace

TEST_CASE("archive: a sparse vmstate file keeps its holes through save and in-place load") {
  TempDir dir;
  Bytes content;
  Fd source = sparse_vmstate_file(content);
  Json manifest = test_manifest();
  manifest["vmstate"] = {{"chunk_size", k_sparse_chunk}, {"layout", "mapped-ram"}};
  std::string path = dir / "sparse.ksnap";
  {
    Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter w(out.get(), path, manifest);
    StreamStats s = write_vmstate(source.get(), w, {.chunk_size = k_sparse_chunk, .level = 1, .threads = 2});
    CHECK(s.raw_bytes == content.size());
    CHECK(s.chunks == 6);
    w.finish();
  }
  // Chunks 1, 2 and 4 lie in holes: one frame of zeros, stored three times.
  Json index = Json::parse(run_command({"tar", "-xOf", path, "index.json"}).output);
  auto sha = [&](size_t n) { return index["members"][n + 1]["sha256"].get<std::string>(); };
  CHECK(sha(1) == sha(2));
  CHECK(sha(2) == sha(4));
  CHECK(sha(0) != sha(1));

  for (unsigned threads : {1u, 3u}) {
    Fd in = open_file(path, O_RDONLY);
    ArchiveReader r(in.get(), path);
    Fd staged(::memfd_create("staged-test", MFD_CLOEXEC));
    StreamStats s = read_vmstate(
      r, staged.get(), {.chunk_size = k_sparse_chunk, .level = 1, .threads = threads, .sparse = true},
      [](ArchiveReader::Member&&) {}, check_qemu_stream_header);
    CHECK(s.raw_bytes == content.size());
    Bytes back(content.size());
    REQUIRE(::pread(staged.get(), back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
    CHECK(back == content);
    // The holes stayed holes: nothing allocated between chunk 0 and chunk 3's data.
    CHECK(::lseek(staged.get(), static_cast<off_t>(k_sparse_chunk), SEEK_DATA) >=
          static_cast<off_t>(3 * k_sparse_chunk));
  }
}

TEST_CASE("archive: in place, only the last vmstate chunk may be short of the chunk size") {
  TempDir dir;
  std::string path = dir / "short.ksnap";
  {
    Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter w(out.get(), path, test_manifest());
    Bytes stream = fake_stream(size_t{3} * 65536);
    for (auto [n, off, size] : {std::tuple{0, 0, 65536}, {1, 65536, 1000}, {2, 131072, 65536}}) {
      Bytes frame;
      zstd_compress(std::span(stream).subspan(static_cast<size_t>(off), static_cast<size_t>(size)), 1, frame);
      w.add_member(vmstate_member_name(static_cast<uint64_t>(n)), frame, sha256_hex(frame));
    }
    w.finish();
  }
  require_refused_in_place(path, "short of the chunk size");
}

TEST_CASE(
  "tar: directory entries, when asked for, precede a directory's first member and are skipped on read") {
  TempDir dir;
  std::string path = dir.path() + "/d.tar";
  {
    Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    TarWriter w(out.get(), path);
    w.write_directories(true);
    std::string data = "x";
    auto bytes = std::as_bytes(std::span(data));
    for (const char* name : {"config.dump", "checkpoint/a.img", "checkpoint/b.img", "index.json"}) {
      w.add(name, bytes, {});
    }
    w.close();
  }
  CommandResult listed = run_command({"tar", "-tf", path});
  CHECK(listed.output == "config.dump\ncheckpoint/\ncheckpoint/a.img\ncheckpoint/b.img\nindex.json\n");
  Fd in = open_file(path, O_RDONLY);
  TarReader r(in.get(), path);
  std::vector<std::string> names;
  for (ArchiveEntry e; r.next(e);) {
    names.push_back(e.name);
  }
  CHECK(names ==
        std::vector<std::string>{"config.dump", "checkpoint/a.img", "checkpoint/b.img", "index.json"});
}

TEST_CASE("archive: shared-ram: memory blocks then the device state, each chunk placed by its number") {
  TempDir dir;
  const size_t chunk = 65536;
  Bytes ram0 = fake_stream(2 * chunk), ram1(3 * chunk), device = fake_stream(chunk + 100);
  std::memset(ram0.data(), 0x11, 8); // not a QEVM header: only the device state has one
  for (size_t i = 0; i < ram1.size(); ++i) {
    ram1[i] = i < chunk ? std::byte{0} : std::byte(i * 7 % 251); // a chunk of zeros first
  }
  Json manifest = test_manifest();
  manifest["vmstate"] = {
    {"chunk_size", chunk},
    {"layout", "shared-ram"},
    {"memory", {{{"id", "dimm0"}, {"bytes", ram0.size()}}, {{"id", "dimm1"}, {"bytes", ram1.size()}}}}};
  CHECK(shared_ram_bytes(manifest["vmstate"]) == ram0.size() + ram1.size());
  auto write = [&](bool with_device) {
    std::string path = dir / (with_device ? "shared.ksnap" : "cut.ksnap");
    Fd out = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter w(out.get(), path, manifest);
    uint64_t chunks = 0;
    for (const Bytes* part : {&ram0, &ram1, &device}) {
      if (part == &device && !with_device) {
        break;
      }
      Fd f(::memfd_create("part", MFD_CLOEXEC));
      write_all(f.get(), *part, "part");
      REQUIRE(::lseek(f.get(), 0, SEEK_SET) == 0);
      chunks +=
        write_vmstate(f.get(), w, {.chunk_size = chunk, .level = 1, .threads = 2, .first_chunk = chunks})
          .chunks;
    }
    w.finish();
    return path;
  };
  std::string path = write(true);
  for (unsigned threads : {1u, 3u}) {
    Fd in = open_file(path, O_RDONLY);
    ArchiveReader r(in.get(), path);
    std::vector<Fd> files;
    for (int i = 0; i < 3; ++i) {
      files.emplace_back(::memfd_create("placed", MFD_CLOEXEC));
    }
    std::vector<uint64_t> first = {0, 2, 5};
    auto place = [&](uint64_t index, std::span<const std::byte> data) {
      size_t b = index >= 5 ? 2 : index >= 2 ? 1 : 0;
      pwrite_sparse(files[b].get(), data, (index - first[b]) * chunk);
    };
    StreamStats s = read_vmstate(
      r, -1,
      {.chunk_size = chunk,
       .level = 1,
       .threads = threads,
       .sparse = true,
       .place = place,
       .header_chunk = 5},
      [](ArchiveReader::Member&&) {}, check_qemu_stream_header);
    CHECK(s.chunks == 7);
    size_t i = 0;
    for (const Bytes* part : {&ram0, &ram1, &device}) {
      REQUIRE(::ftruncate(files[i].get(), static_cast<off_t>(part->size())) == 0);
      Bytes back(part->size());
      REQUIRE(::pread(files[i++].get(), back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
      CHECK(back == *part);
    }
  }
  // Memory without the device state after it: refused once the archive ends.
  std::string cut = write(false);
  Fd in = open_file(cut, O_RDONLY);
  ArchiveReader r(in.get(), cut);
  Fd sink(::memfd_create("placed", MFD_CLOEXEC));
  auto place = [&](uint64_t index, std::span<const std::byte> data) {
    pwrite_sparse(sink.get(), data, index * chunk);
  };
  CHECK_THROWS_WITH(read_vmstate(
                      r, -1,
                      {.chunk_size = chunk, .threads = 2, .sparse = true, .place = place, .header_chunk = 5},
                      [](ArchiveReader::Member&&) {}, check_qemu_stream_header),
                    Catch::Contains("ends before its device state"));
}

TEST_CASE("manifest: a shared-ram vmstate.memory is checked before anything is loaded") {
  auto vmstate = [](Json memory) {
    return Json{{"layout", "shared-ram"}, {"chunk_size", 1u << 20}, {"memory", std::move(memory)}};
  };
  auto refused = [&](Json memory, const std::string& fragment) {
    Json m = test_manifest();
    m["vmstate"] = vmstate(std::move(memory));
    try {
      validate_manifest(m);
      FAIL("accepted: " << m["vmstate"].dump());
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::archive_invalid);
      CHECK_THAT(e.what(), Catch::Contains(fragment));
    }
  };
  CHECK(shared_ram_bytes(vmstate(Json::array({{{"id", "dimm1"}, {"bytes", 4u << 20}}}))) == 4u << 20);
  refused(Json(), "missing");
  refused(Json::array(), "missing");
  refused(Json::array({{{"id", "1dimm"}, {"bytes", 1u << 20}}}), "valid, unique id");
  refused(Json::array({{{"id", "a/../b"}, {"bytes", 1u << 20}}}), "valid, unique id");
  refused(Json::array({{{"id", "a"}, {"bytes", 1u << 20}}, {{"id", "a"}, {"bytes", 1u << 20}}}), "unique");
  refused(Json::array({{{"id", "a"}, {"bytes", 1000}}}), "multiple of the chunk size");
  refused(Json::array({{{"id", "a"}, {"bytes", 0}}}), "multiple of the chunk size");
  refused(Json::array({{{"id", "a"}, {"bytes", -1}}}), "multiple of the chunk size");
  refused(Json::array({{{"id", "a"}, {"bytes", 1ull << 44}}, {{"id", "b"}, {"bytes", 1u << 20}}}),
          "multiple of the chunk size"); // over 16 TiB in all
  Json m = test_manifest();
  m["vmstate"] = vmstate(Json::array({{{"id", "a"}, {"bytes", 1u << 20}}}));
  m["vmstate"]["chunk_size"] = 0;
  CHECK_THROWS_WITH(validate_manifest(m), Catch::Contains("chunk_size"));
}
