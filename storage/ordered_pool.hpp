// A bounded, in-order parallel map: jobs run on N worker threads, results come back in
// submission order, and at most `capacity` jobs are in flight (so memory stays bounded).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace ks {

template <typename Result>
class OrderedPool {
public:
  OrderedPool(unsigned threads, size_t capacity) : m_capacity(capacity < 1 ? 1 : capacity) {
    for (unsigned i = 0; i < (threads < 1 ? 1 : threads); ++i) {
      m_workers.emplace_back([this] { work(); });
    }
  }

  ~OrderedPool() {
    {
      std::lock_guard lock(m_mutex);
      m_stop = true;
    }
    m_cv.notify_all();
    for (auto& t : m_workers) {
      t.join();
    }
  }

  OrderedPool(const OrderedPool&) = delete;
  OrderedPool& operator=(const OrderedPool&) = delete;

  // True when submit() would exceed the in-flight bound: take_next() first.
  bool full() const { return m_pending.size() >= m_capacity; }
  bool empty() const { return m_pending.empty(); }

  void submit(std::function<Result()> job) {
    std::packaged_task<Result()> task(std::move(job));
    m_pending.push_back(task.get_future());
    {
      std::lock_guard lock(m_mutex);
      m_queue.push_back(std::move(task));
    }
    m_cv.notify_one();
  }

  // The oldest job's result (waits for it); rethrows the job's exception.
  Result take_next() {
    auto f = std::move(m_pending.front());
    m_pending.pop_front();
    return f.get();
  }

private:
  void work() {
    for (;;) {
      std::packaged_task<Result()> task;
      {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [this] { return m_stop || !m_queue.empty(); });
        if (m_queue.empty()) {
          return;
        }
        task = std::move(m_queue.front());
        m_queue.pop_front();
      }
      task();
    }
  }

  size_t m_capacity;
  std::deque<std::future<Result>> m_pending; // owned by the submitting thread
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<std::packaged_task<Result()>> m_queue;
  bool m_stop = false;
  std::vector<std::thread> m_workers;
};

} // namespace ks
