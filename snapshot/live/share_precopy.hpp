// A virtio-fs share captured like RAM in a pre-copy: the whole directory while the guest
// runs (the base), then, while the VM is stopped for the switchover, only the entries that
// changed since (the delta). Base + delta = the directory at the snapshot instant.
//
// Why nothing is missed: every entry's lstat() is recorded just before the base reads it.
// Any later change to an entry's data, metadata, xattrs or links sets its ctime to the
// kernel's coarse clock, which no process can set back. An entry is in the delta when its
// stamp (inode, type, mode, owner, size, mtime, ctime, link count) differs, when it is new,
// or when its recorded ctime is not older than the start of the base (a change within the
// same clock tick would leave ctime equal: such "racily clean" entries are always taken
// again). Removed entries, and entries whose type changed, are listed for removal. A
// directory whose entries changed has a new mtime, so its own metadata is taken again too.
#pragma once

#include "snapshot/share_capture.hpp"

#include <map>
#include <sys/stat.h>

namespace ks {

struct ShareDelta {
  ShareCapture tar;    // the changed entries, zstd pax tar
  std::string removed; // JSON {"removed": [names]}: removed before the tar is applied
  std::string removed_sha256;
  uint64_t changed = 0; // entries in the tar
  uint64_t removed_count = 0;
  double seconds = 0; // rescan + capture, all while the VM is stopped
};

class SharePrecopy {
public:
  // Captures the base of SHARE into an unnamed file in TEMP_DIR (the guest keeps running).
  SharePrecopy(const ShareInfo& share, const std::string& temp_dir, int level);

  const ShareInfo& share() const { return m_share; }
  ShareCapture& base() { return m_base; }

  // What changed since the base; to be called while the VM is stopped.
  ShareDelta delta() const;

  // Archive member names of the delta.
  static std::string removed_member(const std::string& tag) { return "shares/" + tag + ".removed.json"; }
  static std::string delta_member(const std::string& tag) { return "shares/" + tag + ".delta.tar.zst"; }

  struct Stamp {
    ino_t ino = 0;
    mode_t mode = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    off_t size = 0;
    nlink_t nlink = 0;
    dev_t rdev = 0;
    timespec mtime{};
    timespec ctime{};
    static Stamp of(const struct stat& st);
    bool operator==(const Stamp& o) const;
  };

private:
  ShareInfo m_share;
  std::string m_temp_dir;
  int m_level;
  timespec m_started{}; // CLOCK_REALTIME_COARSE before the base began
  std::map<std::string, Stamp> m_stamps;
  ShareCapture m_base;
};

// Entry names under DIR ("." and "./a/b", as the share tars name them) with their lstat(),
// without crossing into other filesystems or following symlinks.
std::map<std::string, SharePrecopy::Stamp> scan_tree(const std::string& dir);

// Which entries of NOW to take again and which to remove, given the base STAMPS recorded
// from STARTED on (see the header comment).
struct TreeChanges {
  std::vector<std::string> changed;
  std::vector<std::string> removed;
};
TreeChanges compare_trees(const std::map<std::string, SharePrecopy::Stamp>& base, const timespec& started,
                          const std::map<std::string, SharePrecopy::Stamp>& now);

} // namespace ks
