#include "util/child_process.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

// Reports which step failed, and errno, to the parent over the close-on-exec pipe.
[[noreturn]] void child_fail(int err_fd, int step) {
  int payload[2] = {step, errno};
  (void)!::write(err_fd, payload, sizeof payload);
  ::_exit(127);
}

// Runs in the forked child: only async-signal-safe calls until exec.
[[noreturn]] void child_exec(const SpawnOptions& o, char* const* argv, int err_fd) {
  auto fail = [err_fd](int step) { child_fail(err_fd, step); };
  if (o.detach == Detach::yes) {
    ::setsid();
  } else {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  }
  // Before the fds are shuffled: the namespace fd may be one of the dup2 targets below.
  if (o.netns_fd >= 0 && ::setns(o.netns_fd, CLONE_NEWNET) != 0) {
    fail(4);
  }
  // Move inherited fds out of the way first so that a later dup2 cannot clobber them.

  int moved[64];
  size_t n = o.inherit.size() < 64 ? o.inherit.size() : 64;
  for (size_t i = 0; i < n; ++i) {
    moved[i] = ::fcntl(o.inherit[i].first, F_DUPFD_CLOEXEC, 100);
    if (moved[i] < 0) {
      fail(1);
    }
  }
  const std::string* paths[3] = {&o.stdin_path, &o.stdout_path, &o.stderr_path};
  for (int target = 0; target < 3; ++target) {
    const char* path = paths[target]->empty() ? "/dev/null" : paths[target]->c_str();
    int flags = target == 0 ? O_RDONLY : (O_WRONLY | O_CREAT | O_APPEND);
    int fd = ::open(path, flags, 0600);
    if (fd < 0 || ::dup2(fd, target) < 0) {
      fail(2);
    }
    if (fd != target) {
      ::close(fd);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (::dup2(moved[i], o.inherit[i].second) < 0) {
      fail(1);
    }
  }
  sigset_t all;
  sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::execvp(argv[0], argv);
  child_fail(err_fd, 3);
}

} // namespace

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
  : m_pid(std::exchange(other.m_pid, -1)), m_status(other.m_status) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (m_pid > 0) {
      terminate();
    }
    m_pid = std::exchange(other.m_pid, -1);
    m_status = other.m_status;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (m_pid > 0) {
    terminate();
  }
}

ChildProcess ChildProcess::spawn(const SpawnOptions& options) {
  KS_ASSERT(!options.argv.empty());
  std::vector<char*> argv;
  for (const auto& a : options.argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  Pipe err = make_pipe();
  pid_t pid = ::fork();
  if (pid < 0) {
    throw_errno("failed to start " + options.argv[0]);
  }
  if (pid == 0) {
    err.read.reset();
    child_exec(options, argv.data(), err.write.get());
  }
  err.write.reset();
  int payload[2];
  size_t got = read_full(err.read.get(), std::as_writable_bytes(std::span(payload)), "exec status");
  ChildProcess child(pid);
  if (got == sizeof payload) {
    child.wait(Deadline(Millis(5000)));
    static const char* steps[] = {"", "pass file descriptors to", "redirect output of", "execute",
                                  "enter the network namespace of"};

    int step = payload[0] >= 0 && payload[0] <= 4 ? payload[0] : 0;
    throw Error(std::string("failed to ") + steps[step] + " " + options.argv[0] + ": " +

                std::strerror(payload[1]));
  }
  return child;
}

bool ChildProcess::reap(int options) {
  if (m_pid <= 0 || m_status) {
    return true;
  }
  int status = 0;
  pid_t r;
  rusage usage{};
  do {
    r = ::wait4(m_pid, &status, options, &usage);
  } while (r < 0 && errno == EINTR);
  if (r > 0) {
    m_max_rss_kib = usage.ru_maxrss;
    auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
    m_cpu_seconds = secs(usage.ru_utime) + secs(usage.ru_stime);
  }

  if (r == 0) {
    return false;
  }
  if (r < 0) {
    m_status = 255; // Already reaped elsewhere: treat as gone.
    return true;
  }
  m_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return true;
}

bool ChildProcess::running() {
  return m_pid > 0 && !reap(WNOHANG);
}

std::optional<int> ChildProcess::wait(const Deadline& deadline) {
  // A pidfd turns readable as the child exits, so the wait ends then, not up to a back-off
  // step later (durations measured around a child stay exact). Without one (kernels before
  // 5.3), poll with a short back-off: children are few and waits are short. Either way the
  // wait wakes every 50 ms at most, as callers' signal handling expects.
  Fd pidfd(m_pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, m_pid, 0)) : -1);
  Millis step(1);
  while (!reap(WNOHANG)) {
    if (deadline.expired()) {
      return std::nullopt;
    }
    if (pidfd) {
      wait_readable(pidfd.get(), Deadline(std::min(Millis(deadline.poll_timeout()), Millis(50))));
      continue;
    }
    std::this_thread::sleep_for(step);
    step = std::min(step * 2, Millis(50));
  }
  return m_status;
}

void ChildProcess::terminate(Millis grace) {
  if (m_pid <= 0) {
    return;
  }
  if (!m_status) {
    ::kill(m_pid, SIGTERM);
    if (!wait(Deadline(grace))) {
      ::kill(m_pid, SIGKILL);
      wait(Deadline::never());
    }
  }
  m_pid = -1;
}

pid_t ChildProcess::release() {
  return std::exchange(m_pid, -1);
}

CommandResult run_command(const std::vector<std::string>& argv, Millis timeout, int netns_fd) {
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  SpawnOptions o;
  o.argv = argv;
  o.netns_fd = netns_fd;

  o.inherit = {{out.write.get(), 1}, {err.write.get(), 2}}; // dup'ed over /dev/null
  ChildProcess child = ChildProcess::spawn(o);
  out.write.reset();
  err.write.reset();
  Deadline deadline(timeout);
  CommandResult result{0, {}, {}};
  pollfd fds[2] = {{out.read.get(), POLLIN, 0}, {err.read.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.output, &result.error_output};
  int open_fds = 2;
  while (open_fds > 0 && !deadline.expired()) {
    int r = ::poll(fds, 2, deadline.poll_timeout());
    if (r < 0 && errno != EINTR) {
      throw_errno("poll failed");
    }
    for (int i = 0; i < 2 && r > 0; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) {
        continue;
      }
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  auto status = child.wait(deadline);
  if (!status) {
    child.terminate();
    throw Error(argv[0] + " did not finish within " + std::to_string(timeout.count() / 1000) + " s");
  }
  result.status = *status;
  return result;
}

std::string process_start_ticks(pid_t pid) {
  try {
    return stat_start_ticks(read_file("/proc/" + std::to_string(pid) + "/stat"));
  } catch (const Error&) {
    return {};
  }
}

std::string stat_start_ticks(const std::string& stat) {
  auto paren = stat.rfind(')'); // the command name may hold spaces
  if (paren == std::string::npos) {
    return {};
  }
  if (paren + 2 > stat.size()) {
    return {};
  }
  std::vector<std::string> fields = split(stat.substr(paren + 2), ' ');
  return fields.size() > 19 ? fields[19] : std::string(); // field 3 is fields[0]
}

} // namespace ks
