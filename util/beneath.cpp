#include "util/beneath.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <memory>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ks {

namespace {

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// Removes the entry NAME of the directory DIR_FD, a directory with everything in it.
void remove_at(int dir_fd, const std::string& name, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) {
      return;
    }
    throw_errno("failed to remove " + shown);
  }
  if (S_ISDIR(st.st_mode)) {
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      throw_errno("failed to open " + shown);
    }
    std::unique_ptr<DIR, DirCloser> dir(::fdopendir(fd)); // owns FD from here
    if (!dir) {
      Fd owned(fd);
      throw_errno("failed to read " + shown);
    }
    while (dirent* e = ::readdir(dir.get())) {
      std::string child = e->d_name;
      if (child != "." && child != "..") {
        remove_at(::dirfd(dir.get()), child, shown + "/" + child);
      }
    }
  }
  if (::unlinkat(dir_fd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT) {
    throw_errno("failed to remove " + shown);
  }
}

} // namespace

void remove_beneath(const std::string& root, const std::string& name) {
  std::string rel = name.rfind("./", 0) == 0 ? name.substr(2) : name;
  while (!rel.empty() && rel.back() == '/') {
    rel.pop_back();
  }
  bool dotdot = rel == ".." || rel.rfind("../", 0) == 0 || rel.find("/../") != std::string::npos ||
                (rel.size() >= 3 && rel.compare(rel.size() - 3, 3, "/..") == 0);
  if (rel.empty() || rel == "." || rel[0] == '/' || dotdot) {
    throw Error("refusing to remove \"" + name + "\": not an entry inside " + root,
                ExitCode::archive_invalid);
  }
  size_t slash = rel.rfind('/');
  std::string parent = slash == std::string::npos ? "." : rel.substr(0, slash);
  std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
  Fd parent_fd = open_beneath(open_root(root).get(), parent, O_PATH | O_DIRECTORY);
  if (!parent_fd) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return; // gone already (its parent was removed, or replaced by a file)
    }
    throw_errno("failed to open " + root + "/" + parent + " to remove " + leaf);
  }
  remove_at(parent_fd.get(), leaf, root + "/" + rel);
}

Fd open_beneath(int root_fd, const std::string& name, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags) | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return Fd(static_cast<int>(::syscall(SYS_openat2, root_fd, name.c_str(), &how, sizeof how)));
}

Fd open_root(const std::string& root) {
  Fd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) {
    throw_errno("failed to open " + root);
  }
  return root_fd;
}

} // namespace ks
