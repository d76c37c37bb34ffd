#include "snapshot/live/share_precopy.hpp"

#include "storage/tar.hpp"
#include "util/error.hpp"
#include "util/sha256.hpp"

#include <chrono>
#include <cstring>
#include <ctime>
#include <fts.h>
#include <memory>

namespace ks {

namespace {

bool at_or_after(const timespec& a, const timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec >= b.tv_nsec);
}

struct FtsDeleter {
  void operator()(FTS* f) const { fts_close(f); }
};

} // namespace

SharePrecopy::Stamp SharePrecopy::Stamp::of(const struct stat& st) {
  return {st.st_ino,   st.st_mode, st.st_uid,  st.st_gid, st.st_size,
          st.st_nlink, st.st_rdev, st.st_mtim, st.st_ctim};
}

bool SharePrecopy::Stamp::operator==(const Stamp& o) const {
  auto same = [](const timespec& a, const timespec& b) {
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
  };
  return ino == o.ino && mode == o.mode && uid == o.uid && gid == o.gid && size == o.size &&
         nlink == o.nlink && rdev == o.rdev && same(mtime, o.mtime) && same(ctime, o.ctime);
}

std::map<std::string, SharePrecopy::Stamp> scan_tree(const std::string& dir) {
  std::string root = dir;
  char* paths[] = {root.data(), nullptr};
  std::unique_ptr<FTS, FtsDeleter> fts(fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, nullptr));
  if (!fts) {
    throw_errno("failed to scan " + dir);
  }
  std::map<std::string, SharePrecopy::Stamp> out;
  const std::string prefix = dir.back() == '/' ? dir : dir + "/";
  while (FTSENT* e = fts_read(fts.get())) {
    switch (e->fts_info) {
    case FTS_DP:
      continue; // directories are seen once, before their entries
    case FTS_DNR:
    case FTS_ERR:
    case FTS_NS:
      throw Error("failed to scan " + std::string(e->fts_path) + ": " + std::strerror(e->fts_errno));
    default:
      break;
    }
    std::string path = e->fts_path;
    std::string name = e->fts_level == 0 ? "." : "./" + path.substr(prefix.size());
    out.emplace(std::move(name), SharePrecopy::Stamp::of(*e->fts_statp));
  }
  return out;
}

TreeChanges compare_trees(const std::map<std::string, SharePrecopy::Stamp>& base, const timespec& started,
                          const std::map<std::string, SharePrecopy::Stamp>& now) {
  TreeChanges c;
  for (const auto& [name, stamp] : base) {
    auto it = now.find(name);
    if (it == now.end() || (it->second.mode & S_IFMT) != (stamp.mode & S_IFMT)) {
      c.removed.push_back(name);
    }
  }
  for (const auto& [name, stamp] : now) {
    auto it = base.find(name);
    if (it == base.end() || !(it->second == stamp) || at_or_after(it->second.ctime, started)) {
      c.changed.push_back(name);
    }
  }
  return c;
}

SharePrecopy::SharePrecopy(const ShareInfo& share, const std::string& temp_dir, int level)
  : m_share(share), m_temp_dir(temp_dir), m_level(level) {
  ::clock_gettime(CLOCK_REALTIME_COARSE, &m_started);
  m_base = capture_to_temp(temp_dir, "the capture of share " + share.tag, [&](int fd) {
    return write_tree_tar_zst(
      share.source_dir, fd, level,
      [this](const std::string& name, const struct stat& st) { m_stamps.emplace(name, Stamp::of(st)); });
  });
}

ShareDelta SharePrecopy::delta() const {
  auto start = std::chrono::steady_clock::now();
  TreeChanges changes = compare_trees(m_stamps, m_started, scan_tree(m_share.source_dir));
  ShareDelta d;
  d.tar = capture_to_temp(m_temp_dir, "the delta of share " + m_share.tag, [&](int fd) {
    return write_entries_tar_zst(m_share.source_dir, changes.changed, fd, m_level);
  });
  d.changed = changes.changed.size();
  d.removed_count = changes.removed.size();
  d.removed = nlohmann::json{{"removed", changes.removed}}.dump();
  d.removed_sha256 = sha256_hex(d.removed);
  d.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return d;
}

} // namespace ks
