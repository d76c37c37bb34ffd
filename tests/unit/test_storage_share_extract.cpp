// A share restored from a hostile archive stays inside its directory: absolute paths, "..",
// a symlink then a write through it, hard links out of the tree, device nodes and duplicate
// entries are each refused or kept inside.
#include "storage/tar.hpp"
#include "storage/zstd_codec.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>

using namespace ks;
using namespace ks::test;
namespace fs = std::filesystem;

namespace {

struct Entry {
  std::string name;
  mode_t type = AE_IFREG;
  std::string data;     // a regular file's content
  std::string symlink;  // a symlink's target
  std::string hardlink; // a hard link's target
  time_t mtime = 0;     // set when not 0
};

// The entries as a .tar.zst share member, in order.
Bytes share_member(const std::vector<Entry>& entries) {
  std::vector<char> tar(1 << 20);
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  REQUIRE(archive_write_open_memory(a, tar.data(), tar.size(), &used) == ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.name.c_str());
    archive_entry_set_filetype(ae, e.type);
    archive_entry_set_perm(ae, 0644);
    if (!e.symlink.empty()) {
      archive_entry_set_symlink(ae, e.symlink.c_str());
    }
    if (!e.hardlink.empty()) {
      archive_entry_set_hardlink(ae, e.hardlink.c_str());
    }
    if (e.type == AE_IFCHR) {
      archive_entry_set_rdev(ae, makedev(1, 3));
    }
    if (e.mtime != 0) {
      archive_entry_set_mtime(ae, e.mtime, 0);
    }
    archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
    REQUIRE(archive_write_header(a, ae) == ARCHIVE_OK);
    archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  archive_write_close(a);
  archive_write_free(a);
  Bytes out;
  zstd_compress(std::span(reinterpret_cast<const std::byte*>(tar.data()), used), 1, out);
  return out;
}

// Extracts ENTRIES into DIR/share; returns the error's text, or "" when it was accepted.
std::string extract(const TempDir& dir, const std::vector<Entry>& entries) {
  Bytes member = share_member(entries);
  size_t offset = 0;
  ByteSource source = [&](std::span<std::byte> buf) {
    size_t n = std::min(buf.size(), member.size() - offset);
    std::memcpy(buf.data(), member.data() + offset, n);
    offset += n;
    return n;
  };
  fs::create_directories(dir / "share");
  try {
    extract_tar_zst(source, dir / "share", "share member");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::archive_invalid);
    return e.what();
  }
  return {};
}

// DIR/outside holds one file, "secret", that no extraction may touch.
void plant_outside(const TempDir& dir) {
  fs::create_directories(dir / "outside");
  std::ofstream(dir / "outside/secret") << "secret";
}

void outside_untouched(const TempDir& dir) {
  CHECK(std::distance(fs::directory_iterator(dir / "outside"), fs::directory_iterator()) == 1);
  CHECK(fs::hard_link_count(dir / "outside/secret") == 1);
  CHECK(read_file(dir / "outside/secret") == "secret");
}

time_t mtime_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mtime;
}

} // namespace

TEST_CASE("share extraction: an ordinary tree is restored") {
  TempDir dir;
  CHECK(extract(dir, {{.name = "d", .type = AE_IFDIR},
                      {.name = "d/f", .data = "hello"},
                      {.name = "l", .type = AE_IFLNK, .symlink = "d/f"},
                      {.name = "h", .hardlink = "d/f"}})
          .empty());
  CHECK(fs::is_symlink(dir / "share/l"));
  CHECK(fs::hard_link_count(dir / "share/d/f") == 2);
}

TEST_CASE("share extraction: absolute paths and .. are refused") {
  TempDir dir;
  plant_outside(dir);
  CHECK_THAT(extract(dir, {{.name = dir / "outside/evil", .data = "x"}}), Catch::Contains("unsafe path"));
  CHECK_THAT(extract(dir, {{.name = "../outside/evil", .data = "x"}}), Catch::Contains("unsafe path"));
  CHECK_THAT(extract(dir, {{.name = "d/../../outside/evil", .data = "x"}}), Catch::Contains("unsafe path"));
  outside_untouched(dir);
}

TEST_CASE("share extraction: no write goes through a symlink an earlier entry planted") {
  TempDir dir;
  plant_outside(dir);
  CHECK_FALSE(extract(dir, {{.name = "link", .type = AE_IFLNK, .symlink = dir / "outside"},
                            {.name = "link/evil", .data = "x"}})
                .empty());
  CHECK_FALSE(extract(dir, {{.name = "rel", .type = AE_IFLNK, .symlink = "../outside"},
                            {.name = "rel/secret", .data = "overwritten"}})
                .empty());
  outside_untouched(dir);
}

TEST_CASE("share extraction: hard links out of the tree are refused") {
  TempDir dir;
  plant_outside(dir);
  CHECK_THAT(extract(dir, {{.name = "h", .hardlink = dir / "outside/secret"}}),
             Catch::Contains("unsafe path"));
  CHECK_THAT(extract(dir, {{.name = "h", .hardlink = "../outside/secret"}}), Catch::Contains("unsafe path"));
  // Through a symlinked directory inside the tree.
  CHECK_FALSE(extract(dir, {{.name = "sym", .type = AE_IFLNK, .symlink = dir / "outside"},
                            {.name = "h", .hardlink = "sym/secret"}})
                .empty());
  outside_untouched(dir);
}

TEST_CASE("share extraction: device nodes are refused") {
  TempDir dir;
  CHECK_THAT(extract(dir, {{.name = "mem", .type = AE_IFCHR}}), Catch::Contains("device node"));
  CHECK_THAT(extract(dir, {{.name = "disk", .type = AE_IFBLK}}), Catch::Contains("device node"));
  CHECK_FALSE(fs::exists(dir / "share/mem"));
}

TEST_CASE("share extraction: duplicate entries stay inside") {
  TempDir dir;
  plant_outside(dir);
  // A file twice: the later one wins, as tar does.
  CHECK(extract(dir, {{.name = "f", .data = "one"}, {.name = "f", .data = "two"}}).empty());
  CHECK(read_file(dir / "share/f") == "two");
  // A directory replaced by a symlink out, then a file under that name.
  extract(dir, {{.name = "d", .type = AE_IFDIR},
                {.name = "d", .type = AE_IFLNK, .symlink = dir / "outside"},
                {.name = "d/evil", .data = "x"}});
  outside_untouched(dir);
}

// A share pre-copy's delta writes into directories its base already made. libarchive sets an
// existing directory's times at once, and the entries written into it afterwards would move
// its mtime to now; every directory's times are set again once the whole member is in.
TEST_CASE("share extraction: a directory keeps its time when entries are added into it later") {
  TempDir dir;
  fs::create_directories(dir / "share/made-by-base");
  CHECK(extract(dir, {{.name = "made-by-base", .type = AE_IFDIR, .mtime = 1000000},
                      {.name = "made-by-base/new", .data = "x", .mtime = 2000000},
                      {.name = "fresh", .type = AE_IFDIR, .mtime = 3000000},
                      {.name = "fresh/sub", .type = AE_IFDIR, .mtime = 4000000},
                      {.name = "fresh/sub/f", .data = "y", .mtime = 5000000}})
          .empty());
  CHECK(mtime_of(dir / "share/made-by-base") == 1000000);
  CHECK(mtime_of(dir / "share/made-by-base/new") == 2000000);
  CHECK(mtime_of(dir / "share/fresh") == 3000000);
  CHECK(mtime_of(dir / "share/fresh/sub") == 4000000);
}

TEST_CASE("share extraction: setting directory times never follows a symlink out") {
  TempDir dir;
  plant_outside(dir);
  fs::last_write_time(dir / "outside", fs::file_time_type::clock::now() - std::chrono::hours(1));
  auto before = mtime_of(dir / "outside");
  // A directory entry with a time, then the same name as a symlink out of the tree.
  extract(dir, {{.name = "d", .type = AE_IFDIR, .mtime = 1000000},
                {.name = "d", .type = AE_IFLNK, .symlink = dir / "outside"}});
  CHECK(mtime_of(dir / "outside") == before);
  outside_untouched(dir);
}
