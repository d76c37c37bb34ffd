#include "snapshot/vhost_inflight.hpp"

#include "util/error.hpp"
#include "util/fault.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <linux/kcmp.h>
#include <map>
#include <sstream>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_virtio_fs = "virtio-user-fs"; // vhost-user-fs's virtio device name

// A ring's index (the used ring's or the avail ring's) in guest memory now: 2 bytes at the
// ring's guest-physical address + 2, read with HMP's xp. (x-query-virtio-queue-element would
// read it too, but it also parses the descriptor chain at the next free slot, and garbage
// there marks the device broken.)
uint16_t ring_index(qmp::Client& qmp, const std::string& device, uint64_t ring) {
  std::string line =
    qmp.execute("human-monitor-command", {{"command-line", "xp /1hx " + std::to_string(ring + 2)}})
      .get<std::string>();
  auto at = line.find(": 0x");
  if (at == std::string::npos) {
    throw Error("cannot read " + device + "'s ring index from guest memory: QEMU answered \"" + line + "\"");
  }
  return static_cast<uint16_t>(std::stoul(line.substr(at + 4), nullptr, 16));
}

uint16_t used_in_memory(qmp::Client& qmp, const VhostQueueInFlight& q) {
  return ring_index(qmp, q.path, q.used_ring);
}

// The virtio-fs devices QEMU knows, with their status; none on a QEMU without x-query-virtio.
std::vector<std::pair<std::string, qmp::Json>> virtio_fs_devices(qmp::Client& qmp) {
  std::vector<std::pair<std::string, qmp::Json>> found;
  qmp::Json devices;
  try {
    devices = qmp.execute("x-query-virtio");
  } catch (const qmp::CommandError& e) {
    if (e.error_class() == "CommandNotFound") {
      return found;
    }
    throw;
  }
  for (const auto& d : devices) {
    if (d.value("name", "") == k_virtio_fs) {
      std::string path = d.value("path", "");
      found.emplace_back(path, qmp.execute("x-query-virtio-status", {{"path", path}}));
    }
  }
  return found;
}

} // namespace

std::vector<VhostQueueInFlight> vhost_fs_queues_at_stop(qmp::Client& qmp) {
  std::vector<VhostQueueInFlight> found;
  for (const auto& [path, status] : virtio_fs_devices(qmp)) {
    if (status.value("vhost-started", false)) {
      // Its queue status would be asked of the back-end with GET_VRING_BASE, which stops
      // virtiofsd's rings for good (QEMU's x-query-virtio-queue-status): never while it runs.
      continue;
    }
    int queues = status.value("num-vqs", 0);
    for (int q = 0; q < queues; ++q) {
      qmp::Json s = qmp.execute("x-query-virtio-queue-status", {{"path", path}, {"queue", q}});
      VhostQueueInFlight f{path, q, s.value("vring-used", uint64_t{0}),
                           s.value("last-avail-idx", uint16_t{0}), s.value("used-idx", uint16_t{0})};
      uint64_t avail_ring = s.value("vring-avail", uint64_t{0});
      if (f.used_ring == 0 || avail_ring == 0) {
        continue; // a queue the guest has not set up
      }
      f.queued = ring_index(qmp, path, avail_ring);
      f.size = s.value("vring-num", uint16_t{0});
      // Tests stand in for a worker that answers after the stop ("vhost in flight"), or
      // never ("vhost hung"), with KSNAP_FAULT.
      if (q == queues - 1 && f.unanswered() == 0) {
        if (fault_pretends("vhost in flight")) {
          --f.answered_then;
        } else if (fault_pretends("vhost hung")) {
          ++f.taken;
        }
      }
      found.push_back(f);
    }
  }
  return found;
}

std::vector<VhostQueueInFlight> in_flight(const std::vector<VhostQueueInFlight>& queues) {
  std::vector<VhostQueueInFlight> held;
  for (const auto& q : queues) {
    if (q.unanswered() != 0) {
      held.push_back(q);
    }
  }
  return held;
}

unsigned untaken(const std::vector<VhostQueueInFlight>& queues) {
  unsigned n = 0;
  for (const auto& q : queues) {
    if (q.untaken() <= q.size) { // not a garbage index
      n += q.untaken();
    }
  }
  return n;
}

void wait_vhost_fs_answers(qmp::Client& qmp, const std::vector<VhostQueueInFlight>& queues, Millis timeout) {
  Deadline deadline(timeout);
  for (const auto& q : queues) {
    for (;;) {
      // Answered requests are counted from the stop's used index: the guest cannot have
      // taken any since (its vCPUs are stopped), so the distance only shrinks.
      auto left = static_cast<uint16_t>(q.taken - used_in_memory(qmp, q));
      if (left == 0 || left > q.unanswered()) {
        break;
      }
      if (deadline.expired()) {
        throw Error("virtiofsd did not answer " + std::to_string(left) + " FUSE request(s) it took before " +
                      q.path + " stopped, within " + std::to_string(timeout.count() / 1000) +
                      " s: a snapshot now would leave the guest waiting on them forever",
                    ExitCode::failed,
                    "see what blocks virtiofsd (a hung file system under the share?), then save again");
      }
      std::this_thread::sleep_for(Millis(2));
    }
  }
}

namespace {

// The kick eventfds virtiofsd (PID) listens on: fd -> queue, from the epoll set that holds its
// queues (data 0 .. QUEUES-1) and its exit event (data QUEUES), all eventfds.
std::map<int, int> kick_fds(pid_t pid, int queues) {
  std::string fds = "/proc/" + std::to_string(pid) + "/fd/";
  auto is_eventfd = [&](int fd) {
    std::error_code ec;
    return std::filesystem::read_symlink(fds + std::to_string(fd), ec).string() == "anon_inode:[eventfd]";
  };
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fds, ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(e.path(), link_ec).string() != "anon_inode:[eventpoll]") {
      continue;
    }
    std::map<int, int> kicks;
    bool exit_event = false;
    std::istringstream info(
      read_file("/proc/" + std::to_string(pid) + "/fdinfo/" + e.path().filename().string()));
    std::string key;
    while (info >> key) {
      if (key != "tfd:") {
        continue;
      }
      int tfd = -1;
      std::string events_key, events, data_key, data;
      info >> tfd >> events_key >> events >> data_key >> data;
      if (data_key != "data:" || !is_eventfd(tfd)) {
        continue;
      }
      unsigned long long id = std::strtoull(data.c_str(), nullptr, 16); // fdinfo prints it in hex
      if (id < static_cast<unsigned>(queues)) {
        kicks[tfd] = static_cast<int>(id);
      } else if (id == static_cast<unsigned>(queues)) {
        exit_event = true;
      }
    }
    if (exit_event) {
      return kicks;
    }
  }
  return {};
}

// The eventfds of PID.
std::vector<int> eventfds(pid_t pid) {
  std::vector<int> found;
  std::string fds = "/proc/" + std::to_string(pid) + "/fd/";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fds, ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(e.path(), link_ec).string() == "anon_inode:[eventfd]") {
      found.push_back(std::stoi(e.path().filename().string()));
    }
  }
  return found;
}

bool same_file(pid_t a, int a_fd, pid_t b, int b_fd) {
  return ::syscall(SYS_kcmp, a, b, KCMP_FILE, a_fd, b_fd) == 0;
}

// Those of VIRTIOFSD's eventfds that QEMU holds too (kick, call and error notifiers).
std::vector<int> shared_with_qemu(pid_t virtiofsd, pid_t qemu) {
  std::vector<int> theirs = eventfds(qemu), shared;
  for (int fd : eventfds(virtiofsd)) {
    if (std::any_of(theirs.begin(), theirs.end(), [&](int q) { return same_file(virtiofsd, fd, qemu, q); })) {
      shared.push_back(fd);
    }
  }
  return shared;
}

Fd pidfd_of(pid_t pid) {
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    throw_errno("pidfd_open of virtiofsd (pid " + std::to_string(pid) + ")");
  }
  return pidfd;
}

Fd copy_fd(const Fd& pidfd, int fd) {
  Fd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)));
  if (!copy) {
    throw_errno("cannot take a copy of virtiofsd's eventfd " + std::to_string(fd));
  }
  return copy;
}

void signal_fd(const Fd& pidfd, int fd, const std::string& what) {
  Fd copy = copy_fd(pidfd, fd);
  uint64_t one = 1;
  if (::write(copy.get(), &one, sizeof one) != sizeof one) {
    throw_errno("cannot " + what);
  }
}

// The call eventfds QEMU gave VIRTIOFSD at the start: shared with QEMU, neither a kick nor
// one of ERRORS.
std::vector<int> call_fds(const Virtiofsd& virtiofsd, pid_t qemu, const std::map<int, int>& kicks) {
  std::vector<int> calls;
  for (int fd : shared_with_qemu(virtiofsd.pid, qemu)) {
    bool error = std::any_of(virtiofsd.error_notifiers.begin(), virtiofsd.error_notifiers.end(),
                             [&](const Fd& e) { return same_file(::getpid(), e.get(), virtiofsd.pid, fd); });
    if (!kicks.contains(fd) && !error) {
      calls.push_back(fd);
    }
  }
  return calls;
}

Notified notify_one(const Virtiofsd& virtiofsd, pid_t qemu, int queues) {
  Notified n;
  std::map<int, int> kicks;
  std::vector<int> calls;
  Deadline deadline(Millis(2000));
  for (;;) { // QEMU does not wait for virtiofsd to take SET_VRING_KICK and SET_VRING_CALL
    kicks = kick_fds(virtiofsd.pid, queues);
    if (virtiofsd.seen_stopped) {
      calls = call_fds(virtiofsd, qemu, kicks);
    }
    bool all = kicks.size() >= static_cast<size_t>(queues) &&
               (!virtiofsd.seen_stopped || calls.size() >= static_cast<size_t>(queues));
    if (all || deadline.expired()) {
      break;
    }
    std::this_thread::sleep_for(Millis(5));
  }
  Fd pidfd = pidfd_of(virtiofsd.pid);
  for (const auto& [fd, queue] : kicks) {
    signal_fd(pidfd, fd,
              "notify virtiofsd (pid " + std::to_string(virtiofsd.pid) + ") on queue " +
                std::to_string(queue));
    ++n.kicks;
  }
  if (calls.size() <= static_cast<size_t>(queues)) { // more would not be call eventfds
    for (int fd : calls) {
      signal_fd(pidfd, fd, "interrupt the guest for virtiofsd (pid " + std::to_string(virtiofsd.pid) + ")");
      ++n.interrupts;
    }
  }
  return n;
}

bool any_virtio_fs_started(qmp::Client& qmp) {
  bool started = false;
  for (const auto& [path, status] : virtio_fs_devices(qmp)) {
    started = started || status.value("vhost-started", false);
  }
  return started;
}

} // namespace

void record_stopped(Virtiofsd& virtiofsd, pid_t qemu) noexcept {
  try {
    Fd pidfd = pidfd_of(virtiofsd.pid);
    std::vector<Fd> errors;
    for (int fd : shared_with_qemu(virtiofsd.pid, qemu)) {
      errors.push_back(copy_fd(pidfd, fd));
    }
    virtiofsd.error_notifiers = std::move(errors);
    virtiofsd.seen_stopped = true;
  } catch (const std::exception&) {
    virtiofsd.seen_stopped = false; // then only kicks: never a write to an error notifier
  }
}

Notified notify_virtiofsd(qmp::Client& qmp, pid_t qemu, const std::vector<Virtiofsd>& daemons) noexcept {
  Notified total;
  if (daemons.empty()) {
    return total; // a VM without virtio-fs: not even a question to QEMU
  }
  try {
    if (!any_virtio_fs_started(qmp)) {
      return total; // no driver uses a virtio-fs device: nothing can wait
    }
    for (const auto& d : daemons) {
      if (d.pid > 0) {
        Notified n = notify_one(d, qemu, k_virtiofsd_queues);
        total.kicks += n.kicks;
        total.interrupts += n.interrupts;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(
      stderr,
      "kata-snapshot: warning: %s: file requests of the guest around the stop may wait for its next one\n",
      e.what());
  }
  return total;
}

Notified notify_virtiofsd(qmp::Client& qmp, pid_t qemu, const std::vector<pid_t>& daemons) noexcept {
  std::vector<Virtiofsd> unseen;
  unseen.reserve(daemons.size());
  for (pid_t pid : daemons) {
    unseen.push_back({.pid = pid});
  }
  return notify_virtiofsd(qmp, qemu, unseen);
}

std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues) {
  unsigned n = 0;
  for (const auto& q : queues) {
    n += q.unanswered();
  }
  return std::to_string(n) + " FUSE request(s) in flight on " + queues.front().path;
}

} // namespace ks
