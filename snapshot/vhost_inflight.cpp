#include "snapshot/vhost_inflight.hpp"

#include "util/error.hpp"
#include "util/fault.hpp"

#include <thread>

namespace ks {

namespace {

constexpr const char* k_virtio_fs = "virtio-user-fs"; // vhost-user-fs's virtio device name

// The used index in guest memory now: 2 bytes at the used ring's guest-physical address + 2,
// read with HMP's xp. (x-query-virtio-queue-element would read it too, but it also parses the
// descriptor chain at the next free slot, and garbage there marks the device broken.)
uint16_t used_in_memory(qmp::Client& qmp, const VhostQueueInFlight& q) {
  std::string line =
    qmp.execute("human-monitor-command", {{"command-line", "xp /1hx " + std::to_string(q.used_ring + 2)}})
      .get<std::string>();
  auto at = line.find(": 0x");
  if (at == std::string::npos) {
    throw Error("cannot read " + q.path + "'s used ring index from guest memory: QEMU answered \"" + line +
                "\"");
  }
  return static_cast<uint16_t>(std::stoul(line.substr(at + 4), nullptr, 16));
}

} // namespace

std::vector<VhostQueueInFlight> vhost_fs_in_flight(qmp::Client& qmp) {
  std::vector<VhostQueueInFlight> found;
  qmp::Json devices;
  try {
    devices = qmp.execute("x-query-virtio");
  } catch (const qmp::CommandError& e) {
    if (e.error_class() == "CommandNotFound") {
      return found; // a QEMU without it: nothing to check
    }
    throw;
  }
  for (const auto& d : devices) {
    if (d.value("name", "") != k_virtio_fs) {
      continue;
    }
    std::string path = d.value("path", "");
    qmp::Json status = qmp.execute("x-query-virtio-status", {{"path", path}});
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
      if (f.used_ring == 0) {
        continue; // a queue the guest has not set up
      }
      // Tests stand in for a worker that answers after the stop ("vhost in flight"), or
      // never ("vhost hung"), with KSNAP_FAULT.
      if (q == queues - 1 && f.unanswered() == 0) {
        if (fault_pretends("vhost in flight")) {
          --f.answered_then;
        } else if (fault_pretends("vhost hung")) {
          ++f.taken;
        }
      }
      if (f.unanswered() != 0) {
        found.push_back(f);
      }
    }
  }
  return found;
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

std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues) {
  unsigned n = 0;
  for (const auto& q : queues) {
    n += q.unanswered();
  }
  return std::to_string(n) + " FUSE request(s) in flight on " + queues.front().path;
}

} // namespace ks
