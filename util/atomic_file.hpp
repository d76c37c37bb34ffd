// Output files that appear under their final name only when complete.
#pragma once

#include "util/fd.hpp"

#include <string>

namespace ks {

// A temp file in the target's directory, mode 0600. commit() = fsync + rename + fsync(dir).
// The destructor removes an uncommitted temp file.
class AtomicFile {
public:
  enum class Overwrite { no, yes };

  AtomicFile(std::string path, Overwrite overwrite);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  int fd() const { return m_fd.get(); }
  const std::string& path() const { return m_path; }
  const std::string& temp_path() const { return m_temp; }

  void commit();
  // Removes the temp file now (also safe to call from cleanup paths).
  void discard();

private:
  std::string m_path;
  std::string m_temp;
  Overwrite m_overwrite;
  Fd m_fd;
  bool m_done = false;
};

// The directory part of PATH ("." when there is none).
std::string dir_name(const std::string& path);

} // namespace ks
