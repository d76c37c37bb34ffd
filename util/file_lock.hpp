// One lock type for VMs and snapshot repositories: an flock(2) on a lock file, shared or
// exclusive, plus a record per holder (host, pid, start time, purpose) so that whoever
// waits can be told who holds it. The kernel drops a dead holder's flock; its record is
// left behind and removed by the next taker, which says so.
#pragma once

#include "util/fd.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace ks {

enum class LockMode { shared, exclusive };

class FileLock {
public:
  struct Options {
    LockMode mode = LockMode::exclusive;
    std::chrono::milliseconds wait{0}; // how long to wait for a holder to finish, then fail
    std::string purpose;               // what the holder does ("save", "prune"), for its record
    std::string what;                  // what is locked, for the error ("the repository /r")
    std::string hint;                  // the error's hint
  };
  // Takes PATH (created 0600; holder records go in PATH.holders/) or throws Error(exit 4)
  // naming the holders after OPTIONS.wait.
  FileLock(std::string path, Options options);
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  // Holders whose records were left by dead processes and removed on taking the lock.
  const std::vector<std::string>& taken_over() const { return m_taken_over; }

private:
  void write_record();
  void sweep_records();

  std::string m_path;
  Options m_o;
  Fd m_fd;
  std::string m_record;
  std::vector<std::string> m_taken_over;
};

// The holders named by PATH's records, "host pid N (purpose, since T)" each; for messages.
std::vector<std::string> lock_holders(const std::string& path);

// Creates PATH and its missing parents with mode 0700.
void make_dirs(const std::string& path);

} // namespace ks
