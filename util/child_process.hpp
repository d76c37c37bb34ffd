// The one class that starts and supervises other programs (QEMU, virtiofsd, zstd, ...).
#pragma once

#include "util/deadline.hpp"
#include "util/fd.hpp"

#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

enum class Detach { no, yes };

struct SpawnOptions {
  std::vector<std::string> argv;
  // Child's stdin/stdout/stderr: a path to open (stdout/stderr append), or empty for /dev/null.
  std::string stdin_path;
  std::string stdout_path;
  std::string stderr_path;
  // Fds passed through: the child gets `from` as fd `to`.
  std::vector<std::pair<int, int>> inherit;
  // Detach::yes: the child gets a new session and outlives us; otherwise it is killed
  // (SIGKILL) when the spawning thread's process dies.
  Detach detach = Detach::no;
  // A network namespace (an open nsfs fd) the child runs in, or -1 for ours.
  int netns_fd = -1;
};

class ChildProcess {
public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Terminates a child that is still owned (TERM, then KILL after 3 s).
  ~ChildProcess();

  // Starts the program. A failure to exec is reported here as an Error, not as exit 127.
  static ChildProcess spawn(const SpawnOptions& options);

  pid_t pid() const { return m_pid; }
  bool running();

  // Waits for the exit; returns the exit status (128+N for signal N), or nullopt on timeout.
  std::optional<int> wait(const Deadline& deadline);

  // SIGTERM, wait up to GRACE, then SIGKILL; reaps the child.
  void terminate(Millis grace = Millis(3000));

  // Gives up ownership: the child is neither waited for nor killed by us.
  pid_t release();

  // The child's peak resident memory in KiB, once it has been reaped (0 before).
  long max_rss_kib() const { return m_max_rss_kib; }
  // The CPU time (user + system) it and its reaped children used, once it has been reaped.
  double cpu_seconds() const { return m_cpu_seconds; }

private:
  explicit ChildProcess(pid_t pid) : m_pid(pid) {}
  bool reap(int options);

  pid_t m_pid = -1;
  std::optional<int> m_status;
  long m_max_rss_kib = 0;
  double m_cpu_seconds = 0;
};

// Field 22 of /proc/PID/stat: the start time in clock ticks since boot, which tells a
// process from a later one that reuses its pid. Empty when the process does not exist.
std::string process_start_ticks(pid_t pid);
// The same from the text of a /proc/PID/stat; empty if it has no such field.
std::string stat_start_ticks(const std::string& stat);

// Exit status of a program run to completion, with its stdout and stderr captured.
struct CommandResult {
  int status;
  std::string output;
  std::string error_output;
};
// NETNS_FD: run it in that network namespace (an open nsfs fd), or -1 for ours.
CommandResult run_command(const std::vector<std::string>& argv, Millis timeout = Millis(30000),
                          int netns_fd = -1);

} // namespace ks
