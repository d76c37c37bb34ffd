// The archive format: round trip through the parallel pipeline, and every kind of damage
// a reader must refuse with exit code 3.
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/vmstate_stream.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/child_process.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <random>
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
