// Members handed to a vmstate writer by another thread while it runs. A live save posts the
// shares' delta at the switchover: it must reach the archive before any byte QEMU sends
// after it (the device state, which virtiofsd's restore resolves against the share), and it
// may come after anything QEMU sent before. So the writer delivers posted members before it
// queues its next chunk, after every chunk it queued before.
#pragma once

#include "storage/archive_writer.hpp"

#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

namespace ks {

class MemberInbox {
public:
  using Write = std::function<void(ArchiveWriter&)>;

  // From any thread: WRITE adds one or more members when the writer delivers it.
  void post(Write write) {
    std::lock_guard lock(m_mutex);
    m_posted.push_back(std::move(write));
    m_pending = true;
  }

  // On the writer's thread: DRAIN writes every chunk queued so far, then the posted
  // members are written. Does nothing (cheaply) when nothing was posted.
  template <typename Drain>
  void deliver(ArchiveWriter& writer, Drain&& drain) {
    if (!m_pending.load(std::memory_order_acquire)) {
      return;
    }
    std::vector<Write> posted;
    {
      std::lock_guard lock(m_mutex);
      posted.swap(m_posted);
      m_pending = false;
    }
    drain();
    for (auto& write : posted) {
      write(writer);
    }
  }

private:
  std::mutex m_mutex;
  std::vector<Write> m_posted;
  std::atomic<bool> m_pending{false};
};

} // namespace ks
