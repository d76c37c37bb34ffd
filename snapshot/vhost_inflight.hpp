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
  uint16_t unanswered() const { return static_cast<uint16_t>(taken - answered_then); }
};

// With the VM stopped: the virtio-fs queues whose back-end held unanswered requests when the
// device stopped. Empty when there are none, or when this QEMU cannot tell (no x-query-virtio).
std::vector<VhostQueueInFlight> vhost_fs_in_flight(qmp::Client& qmp);

// Waits until every request of QUEUES is answered in guest memory; throws (exit 1) after
// TIMEOUT, naming the device and how many are left.
void wait_vhost_fs_answers(qmp::Client& qmp, const std::vector<VhostQueueInFlight>& queues, Millis timeout);

// "N FUSE request(s) in flight on DEVICE" for messages.
std::string describe_in_flight(const std::vector<VhostQueueInFlight>& queues);

} // namespace ks
