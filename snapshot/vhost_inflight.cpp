#include "snapshot/vhost_inflight.hpp"

#include "util/error.hpp"
#include "util/fault.hpp"
#include "util/fd.hpp"
#include "util/strings.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_virtio_fs = "virtio-user-fs"; // vhost-user-fs's virtio device name

// The used index in guest memory now: 2 bytes at the used ring's guest-physical address + 2,
// read with HMP's xp. (x-query-virtio-queue-element would read it too, but it also parses the
// descriptor chain at the next free slot, and garbage there marks the device broken.)
// A ring's index (the used ring's or the avail ring's) in guest memory now: 2 bytes at the
// ring's guest-physical address + 2, read with HMP's xp.
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

int kick_virtiofsd(pid_t virtiofsd, int queues) {
  std::map<int, int> kicks;
  Deadline deadline(Millis(2000));
  while ((kicks = kick_fds(virtiofsd, queues)).size() < static_cast<size_t>(queues) && !deadline.expired()) {
    std::this_thread::sleep_for(Millis(5)); // QEMU does not wait for virtiofsd to take SET_VRING_KICK
  }
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, virtiofsd, 0)));
  if (!pidfd) {
    throw_errno("pidfd_open of virtiofsd (pid " + std::to_string(virtiofsd) + ")");
  }
  int kicked = 0;
  for (const auto& [tfd, queue] : kicks) {
    Fd kick(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), tfd, 0)));
    uint64_t one = 1;
    if (!kick || ::write(kick.get(), &one, sizeof one) != sizeof one) {
      throw_errno("cannot notify virtiofsd (pid " + std::to_string(virtiofsd) + ") on queue " +
                  std::to_string(queue));
    }
    ++kicked;
  }
  return kicked;
}

} // namespace

int notify_virtiofsd(qmp::Client& qmp, const std::vector<pid_t>& virtiofsd) noexcept {
  int kicked = 0;
  try {
    bool started = false;
    for (const auto& [path, status] : virtio_fs_devices(qmp)) {
      started = started || status.value("vhost-started", false);
    }
    if (!started) {
      return 0; // no driver uses a virtio-fs device: nothing can wait
    }
    for (pid_t pid : virtiofsd) {
      if (pid > 0) {
        kicked += kick_virtiofsd(pid, k_virtiofsd_queues);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "kata-snapshot: warning: %s: file requests the guest queued just before the stop may wait "
                 "for its next one\n",
                 e.what());
  }
  return kicked;
}

std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues) {
  unsigned n = 0;
  for (const auto& q : queues) {
    n += q.unanswered();
  }
  return std::to_string(n) + " FUSE request(s) in flight on " + queues.front().path;
}

} // namespace ks
