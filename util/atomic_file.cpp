#include "util/atomic_file.hpp"

#include "util/error.hpp"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

std::string dir_name(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) {
    return ".";
  }
  return slash == 0 ? "/" : path.substr(0, slash);
}

AtomicFile::AtomicFile(std::string path, Overwrite overwrite)
  : m_path(std::move(path)), m_overwrite(overwrite) {
  struct stat st {};
  if (m_overwrite == Overwrite::no && ::lstat(m_path.c_str(), &st) == 0) {
    throw Error(m_path + " already exists", ExitCode::failed, "pass --force to overwrite it");
  }
  auto slash = m_path.rfind('/');
  std::string base = slash == std::string::npos ? m_path : m_path.substr(slash + 1);
  m_temp = dir_name(m_path) + "/." + base + ".tmp-XXXXXX";
  int fd = ::mkostemp(m_temp.data(), O_CLOEXEC);
  if (fd < 0) {
    throw_errno("cannot create a file in " + dir_name(m_path));
  }
  m_fd.reset(fd);
  ::fchmod(fd, 0600);
}

AtomicFile::~AtomicFile() {
  discard();
}

void AtomicFile::commit() {
  KS_ASSERT(!m_done);
  if (::fsync(m_fd.get()) != 0) {
    throw_errno("failed to flush " + m_temp);
  }
  m_fd.reset();
  if (m_overwrite == Overwrite::no) {
    // Do not replace a file that appeared meanwhile.
    if (::link(m_temp.c_str(), m_path.c_str()) != 0) {
      throw_errno("failed to create " + m_path);
    }
    ::unlink(m_temp.c_str());
  } else if (::rename(m_temp.c_str(), m_path.c_str()) != 0) {
    throw_errno("failed to rename " + m_temp + " to " + m_path);
  }
  m_done = true;
  Fd dir = open_file(dir_name(m_path), O_RDONLY | O_DIRECTORY);
  ::fsync(dir.get());
}

void AtomicFile::discard() {
  if (!m_done) {
    m_fd.reset();
    ::unlink(m_temp.c_str());
    m_done = true;
  }
}

} // namespace ks
