// FUSE requests virtiofsd still held when QEMU stopped its device.
//
// virtiofsd answers requests on worker threads (--thread-pool-size=N, as Kata runs it). When
// QEMU stops the device (GET_VRING_BASE), virtiofsd 1.13 stops taking requests but does not
// wait for those its workers hold: it reports the ring position past them and answers them
// later. Those answers (the reply data and the used ring) reach guest memory after QEMU's last
// sync of the vhost dirty log (hw/virtio/vhost.c syncs started devices only). A snapshot
// that misses them holds requests virtiofsd counts as taken and the guest never sees
// answered: after a load the guest waits on them forever, or reads a reply whose data pages
// were not sent. Found by a rare stall of restored guests in the live-mode tests.
//
// With the VM stopped, QEMU reports per queue the back-end's position at the stop
// (x-query-virtio-queue-status: last-avail-idx) and the used index it read from guest memory
// then (used-idx), and where the used ring is, whose index in guest memory says what has been
// answered since.
#pragma once

#include "qmp/qmp_client.hpp"
#include "util/deadline.hpp"
#include "util/error.hpp"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

// How long a save waits for virtiofsd to answer the requests it held at the stop.
inline constexpr Millis k_vhost_answer_timeout{10000};

// A live save's switchover found requests in flight: that attempt is given up (the migration
// cancelled, the VM running again) and the save may be taken again.
class InFlightAtSwitchover : public Error {
public:
  using Error::Error;
};

struct VhostQueueInFlight {
  std::string path; // the virtio device's QOM path
  int queue = 0;
  uint64_t used_ring = 0;     // the used ring's guest-physical address
  uint16_t taken = 0;         // last-avail-idx: requests the back-end took, at the stop
  uint16_t answered_then = 0; // used-idx: those answered in guest memory, at the stop
  uint16_t queued = 0;        // the avail index in guest memory: requests the guest queued
  uint16_t size = 0;          // the ring's size
  uint16_t unanswered() const { return static_cast<uint16_t>(taken - answered_then); }
  uint16_t untaken() const { return static_cast<uint16_t>(queued - taken); }
};

// With the VM stopped: every set-up queue of the virtio-fs devices that are stopped. Empty
// when this QEMU cannot tell (no x-query-virtio).
std::vector<VhostQueueInFlight> vhost_fs_queues_at_stop(qmp::Client& qmp);
// Those of QUEUES whose back-end held unanswered requests when the device stopped.
std::vector<VhostQueueInFlight> in_flight(const std::vector<VhostQueueInFlight>& queues);
// Requests the guest had queued on QUEUES that virtiofsd had not taken: they wait for
// notify_virtiofsd() once the VM runs again.
unsigned untaken(const std::vector<VhostQueueInFlight>& queues);

// Waits until every request of QUEUES is answered in guest memory; throws (exit 1) after
// TIMEOUT, naming the device and how many are left.
void wait_vhost_fs_answers(qmp::Client& qmp, const std::vector<VhostQueueInFlight>& queues, Millis timeout);

// The guest's last notification before a stop is lost when virtiofsd had not read it yet:
// stopping the device (GET_VRING_BASE) makes virtiofsd stop listening on the queue's kick
// eventfd, then QEMU drains that eventfd and runs vhost-user-fs's handler for it, which does
// nothing (hw/virtio/vhost-user-fs.c, "virtio's cleanup path can call this"), and closes it.
// At the start QEMU hands virtiofsd a new, empty eventfd. Nothing tells virtiofsd about the
// requests queued since its last look, and with VIRTIO_RING_F_EVENT_IDX the guest does not
// notify again until the device has seen them: its file system waits forever. (QEMU's own
// dataplane devices notify themselves after such a start; vhost devices do not.) Seen with a
// starved virtiofsd, and on demand with its queue thread held (tests/e2e).
//
// So once the VM runs again, each started virtio-fs device's virtiofsd (VIRTIOFSD) is
// notified on every queue: one write to each kick eventfd it listens on (found in its epoll
// set, where each is registered with its queue's index), through a copy taken with
// pidfd_getfd(2). A look at an empty ring costs virtiofsd nothing. Waits up to 2 s for
// virtiofsd to listen on the new eventfds. Returns the queues notified; never throws (a
// failure is a warning).
int notify_virtiofsd(qmp::Client& qmp, const std::vector<pid_t>& virtiofsd) noexcept;
// virtiofsd's queues: the high-priority one and one request queue. Its epoll set also holds
// its exit event, registered with data 2 (the number of queues), which is never written.
inline constexpr int k_virtiofsd_queues = 2;

// "N FUSE request(s) in flight on DEVICE" for messages.
std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues);

} // namespace ks
