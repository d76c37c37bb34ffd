// A share captured as base (guest running) + delta (VM stopped) and restored through the
// load's own path must equal the directory at the moment of the delta, whatever changed in
// between: data, metadata, new, removed, renamed and retyped entries, and changes made in
// the same clock tick as the base.
#include "snapshot/live/share_precopy.hpp"
#include "snapshot/shares.hpp"
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "tests/support/fake_qmp.hpp"
#include "util/beneath.hpp"
#include "util/error.hpp"
#include "util/fd.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace ks;
using ks::test::TempDir;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}

// Everything a restore must reproduce, entry by entry.
std::map<std::string, std::string> describe_tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& [name, stamp] : scan_tree(dir)) {
    std::string d = std::to_string(stamp.mode) + " " + std::to_string(stamp.uid) + " " +
                    std::to_string(stamp.nlink) + " " + std::to_string(stamp.mtime.tv_sec);
    fs::path p = fs::path(dir) / name;
    if (S_ISREG(stamp.mode)) {
      d += " " + read_file(p);
    } else if (S_ISLNK(stamp.mode)) {
      d += " -> " + fs::read_symlink(p).string();
    }
    if (name != ".") {
      out[name] = d;
    }
  }
  return out;
}

// TARGET's tree is SRC's: each entry that differs is named.
void require_same_tree(const std::string& target, const std::string& src) {
  std::map<std::string, std::string> got = describe_tree(target), want = describe_tree(src);
  for (const auto& [name, d] : want) {
    INFO(name);
    CHECK(got[name] == d);
  }
  for (const auto& [name, d] : got) {
    INFO(name << " is not in the source");
    CHECK(want.contains(name));
  }
}

// Writes base and delta as a live save's archive would, and restores it into TARGET.
void restore_through_load(SharePrecopy& p, const ShareDelta& d, const std::string& dir,
                          const std::string& target, const std::string& capture = "full") {
  Json share = {{"tag", "t"},
                {"source_dir", target},
                {"capture", capture},
                {"member", "shares/t.tar.zst"},
                {"removed_member", SharePrecopy::removed_member("t")},
                {"delta_member", SharePrecopy::delta_member("t")}};
  Json manifest = {{"format", k_format_name},
                   {"format_version", k_format_version},
                   {"qemu", {{"argv", {"qemu-system-x86_64"}}}},
                   {"vmstate", {{"chunk_size", 65536}}},
                   {"shares", {share}}};
  std::string archive = dir + "/a.ksnap";
  {
    Fd out = open_file(archive, O_WRONLY | O_CREAT | O_TRUNC);
    ArchiveWriter w(out.get(), archive, manifest);
    w.add_member_from_fd("shares/t.tar.zst", p.base().file.get(), p.base().size, p.base().sha256);
    w.add_member(SharePrecopy::removed_member("t"), std::as_bytes(std::span(d.removed)), d.removed_sha256);
    w.add_member_from_fd(SharePrecopy::delta_member("t"), d.tar.file.get(), d.tar.size, d.tar.sha256);
    w.finish();
  }
  Fd in = open_file(archive, O_RDONLY);
  ArchiveReader r(in.get(), archive);
  ShareRestore restore(r.manifest(), {}, "", false);
  restore.restore(r);
}

} // namespace

TEST_CASE("share pre-copy: base + delta restores the tree as it was at the delta") {
  TempDir tmp;
  std::string src = tmp / "src";
  fs::create_directories(src + "/dir/sub");
  write(src + "/appended", "one\n");
  write(src + "/same-size", "AAAA");
  write(src + "/removed", "gone soon");
  write(src + "/renamed", "moves");
  write(src + "/becomes-dir", "file first");
  write(src + "/dir/sub/deep", "deep");
  write(src + "/untouched", "stays");
  fs::create_symlink("untouched", src + "/link");
  fs::create_hard_link(src + "/untouched", src + "/hard");
  ShareInfo info;
  info.tag = "t";
  info.source_dir = src;
  SharePrecopy p(info, tmp.path(), 1);

  // The guest goes on: at once (the same clock tick as the base), and later.
  write(src + "/same-size", "BBBB");
  write(src + "/appended", "one\ntwo\n");
  fs::remove(src + "/removed");
  fs::rename(src + "/renamed", src + "/dir/renamed");
  fs::remove(src + "/becomes-dir");
  fs::create_directories(src + "/becomes-dir/inner");
  fs::remove_all(src + "/dir/sub");
  write(src + "/new", "new file");
  ::chmod((src + "/untouched").c_str(), 0640);
  fs::create_hard_link(src + "/new", src + "/new-link");

  ShareDelta d = p.delta();
  CHECK(d.removed_count >= 4); // removed, renamed, becomes-dir (retyped), dir/sub
  std::string target = tmp / "target";
  fs::create_directories(target);
  restore_through_load(p, d, tmp.path(), target);
  require_same_tree(target, src);
}

TEST_CASE("share pre-copy: a delta for a share captured without its contents is refused, nothing removed") {
  TempDir tmp;
  std::string src = tmp / "src";
  fs::create_directories(src);
  write(src + "/a", "a");
  ShareInfo info;
  info.tag = "t";
  info.source_dir = src;
  SharePrecopy p(info, tmp.path(), 1);
  fs::remove(src + "/a");
  ShareDelta d = p.delta();
  std::string target = tmp / "target"; // shared storage that the snapshot did not capture
  fs::create_directories(target);
  write(target + "/a", "precious");
  try {
    restore_through_load(p, d, tmp.path(), target, "none");
    FAIL("the delta was applied");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::archive_invalid);
    CHECK_THAT(e.what(), Catch::Contains("which its manifest does not list"));
  }
  CHECK(read_file(target + "/a") == "precious");
}

TEST_CASE("share pre-copy: an unchanged tree has an empty delta once the clock moved on") {
  TempDir tmp;
  std::string src = tmp / "src";
  fs::create_directories(src + "/d");
  write(src + "/d/f", "x");
  // Entries whose ctime is at or after the base's start are always taken again: make them older.
  ::usleep(20000);
  ShareInfo info;
  info.tag = "t";
  info.source_dir = src;
  SharePrecopy p(info, tmp.path(), 1);
  ShareDelta d = p.delta();
  CHECK(d.changed == 0);
  CHECK(d.removed_count == 0);
}

TEST_CASE("remove_beneath never leaves the root, nor follows a symlink") {
  TempDir tmp;
  std::string root = tmp / "root";
  std::string outside = tmp / "outside";
  fs::create_directories(root + "/d/e");
  fs::create_directories(outside);
  write(outside + "/keep", "k");
  write(root + "/d/e/f", "f");
  fs::create_symlink(outside, root + "/link");

  CHECK_THROWS_AS(remove_beneath(root, "../outside/keep"), Error);
  CHECK_THROWS_AS(remove_beneath(root, "/etc/passwd"), Error);
  CHECK_THROWS_AS(remove_beneath(root, "."), Error);
  CHECK_THROWS_AS(remove_beneath(root, "d/../../outside"), Error);
  CHECK_THROWS_AS(remove_beneath(root, "link/keep"), Error); // through a symlink: refused
  CHECK(fs::exists(outside + "/keep"));

  remove_beneath(root, "./link"); // the symlink itself goes, not what it points to
  CHECK_FALSE(fs::is_symlink(root + "/link"));
  CHECK(fs::exists(outside + "/keep"));
  remove_beneath(root, "./d");
  CHECK_FALSE(fs::exists(root + "/d"));
  remove_beneath(root, "./d/e/f"); // already gone with its parent: fine
}
