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
#include "util/fd.hpp"

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

// Two things a stop and start of a vhost-user-fs device lose, which kata-snapshot gives back
// once the VM runs again (notify_virtiofsd()):
//
// - The guest's last notification (kick). Stopping the device (GET_VRING_BASE) makes virtiofsd
//   stop listening on the queue's kick eventfd; then QEMU drains that eventfd into
//   vhost-user-fs's handler, which does nothing (hw/virtio/vhost-user-fs.c, "virtio's cleanup
//   path can call this"), and closes it. The start hands virtiofsd a new, empty one. Requests
//   the guest queued since virtiofsd's last look are never looked at, and with
//   VIRTIO_RING_F_EVENT_IDX the guest does not notify again until the device has seen them.
// - The interrupt (call) for answers virtiofsd gives after the stop (those above): virtiofsd
//   drops its call eventfd at GET_VRING_BASE, so they land in the used ring with no
//   interrupt, and with EVENT_IDX the guest is not interrupted again on that queue until it
//   has seen them.
// Either way the guest's file system waits forever: the source after the save, or the
// restored guest, whose snapshot holds the same rings. (QEMU's own dataplane devices notify
// themselves after such a start; vhost devices do not.) Each is made on demand by holding one
// of virtiofsd's threads with ptrace (tests/e2e/test_vhost_inflight.cpp).
//
// So once the VM runs again, for every virtiofsd of a started virtio-fs device:
// - one write to each kick eventfd it listens on (those in the epoll set that also holds its
//   exit event, each registered with its queue's index): it looks at its rings;
// - one write to each call eventfd QEMU gave it at the start: the guest is interrupted and
//   looks at its used rings. These are the eventfds it shares with QEMU (kcmp(2)) that are
//   neither kicks nor its vring error notifiers, which QEMU set once, at the connection; those
//   are known from a look while the device was stopped (record_stopped()), when virtiofsd
//   holds no call eventfd. Without such a look, no interrupt is given.
// Writes go through copies taken with pidfd_getfd(2). An extra look or interrupt costs
// nothing (an empty ring; a spurious virtio interrupt is ignored). Waits up to 2 s for
// virtiofsd to take the new eventfds (QEMU does not wait for it).
struct Virtiofsd {
  pid_t pid = -1;
  bool seen_stopped = false;
  std::vector<Fd> error_notifiers; // copies, while seen_stopped
};
// With its device stopped: records VIRTIOFSD's error notifiers (those it shares with QEMU).
void record_stopped(Virtiofsd& virtiofsd, pid_t qemu) noexcept;

struct Notified {
  int kicks = 0;
  int interrupts = 0;
};
// Never throws (a failure is a warning).
Notified notify_virtiofsd(qmp::Client& qmp, pid_t qemu, const std::vector<Virtiofsd>& daemons) noexcept;
// The same for daemons never seen stopped: kicks only.
Notified notify_virtiofsd(qmp::Client& qmp, pid_t qemu, const std::vector<pid_t>& daemons) noexcept;
// virtiofsd's queues: the high-priority one and one request queue. Its epoll set also holds
// its exit event, registered with data 2 (the number of queues), which is never written.
inline constexpr int k_virtiofsd_queues = 2;

// "N FUSE request(s) in flight on DEVICE" for messages.
std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues);

} // namespace ks
