#include "guest-helper/agent/freeze.hpp"

#include "util/fd.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <linux/fs.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/ioctl.h>
#include <unistd.h>

namespace ks::agent {

namespace {

struct Mount {
  std::string dir;
  std::string type;
};

// Mounts in /proc/self/mounts order, minus pseudo filesystems that hold no data.
std::vector<Mount> data_mounts() {
  static const std::set<std::string> pseudo = {
    "proc",   "sysfs", "devtmpfs", "devpts",    "cgroup",   "cgroup2", "securityfs", "debugfs",    "tracefs",
    "pstore", "bpf",   "mqueue",   "hugetlbfs", "configfs", "fusectl", "autofs",     "binfmt_misc"};
  std::vector<Mount> out;
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest)) {
    if (!pseudo.count(type)) {
      out.push_back({dir, type});
    }
  }
  return out;
}

Fd open_dir(const std::string& dir) {
  return Fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

} // namespace

FreezeState::FreezeState(std::string state_file) : m_state_file(std::move(state_file)) {
  load_state();
  m_watchdog = std::thread([this] { watchdog(); });
}

FreezeState::~FreezeState() {
  {
    std::lock_guard lock(m_mutex);
    m_stop = true;
  }
  m_cv.notify_all();
  m_watchdog.join();
}

int FreezeState::freeze(std::chrono::seconds auto_thaw) {
  std::lock_guard lock(m_mutex);
  if (!m_frozen.empty()) {
    throw std::runtime_error("the guest's filesystems are already frozen");
  }
  m_deadline = std::chrono::steady_clock::now() + auto_thaw;
  ::sync();
  auto mounts = data_mounts();
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    Fd fd = open_dir(it->dir);
    if (!fd) {
      continue; // gone or hidden under another mount
    }
    if (::ioctl(fd.get(), FIFREEZE, 0) == 0) {
      m_frozen.push_back(it->dir);
      save_state();
      continue;
    }
    int err = errno;
    if (err == EOPNOTSUPP || err == ENOTTY || err == EINVAL || err == ENOSYS) {
      ::syncfs(fd.get()); // virtio-fs, tmpfs and others that cannot freeze
      continue;
    }
    if (err == EBUSY) {
      continue; // frozen by someone else already (or the same fs mounted twice)
    }
    thaw_locked();
    throw std::runtime_error("failed to freeze " + it->dir + " (" + it->type + "): " + std::strerror(err) +
                             "; everything frozen so far was thawed");
  }
  save_state();
  m_cv.notify_all();
  return static_cast<int>(m_frozen.size());
}

int FreezeState::thaw() {
  std::lock_guard lock(m_mutex);
  return thaw_locked();
}

bool FreezeState::frozen() {
  std::lock_guard lock(m_mutex);
  return !m_frozen.empty();
}

int FreezeState::thaw_locked() {
  int thawed = 0;
  for (auto it = m_frozen.rbegin(); it != m_frozen.rend(); ++it) {
    Fd fd = open_dir(*it);
    if (fd && ::ioctl(fd.get(), FITHAW, 0) == 0) {
      ++thawed;
    }
  }
  m_frozen.clear();
  ::unlink(m_state_file.c_str());
  return thawed;
}

void FreezeState::watchdog() {
  std::unique_lock lock(m_mutex);
  while (!m_stop) {
    if (m_frozen.empty()) {
      m_cv.wait(lock);
      continue;
    }
    if (m_cv.wait_until(lock, m_deadline) == std::cv_status::timeout && !m_frozen.empty() &&
        std::chrono::steady_clock::now() >= m_deadline) {
      std::fprintf(stderr, "kata-snapshot-helper: no thaw arrived: thawing %zu filesystem(s) by timeout\n",
                   m_frozen.size());
      thaw_locked();
    }
  }
}

// State file: line 1 = seconds left until auto-thaw, then one frozen mount per line.
void FreezeState::save_state() {
  auto left = std::chrono::duration_cast<std::chrono::seconds>(m_deadline - std::chrono::steady_clock::now());
  std::ofstream out(m_state_file + ".tmp", std::ios::trunc);
  out << std::max<long long>(left.count(), 60) << "\n";
  for (const auto& dir : m_frozen) {
    out << dir << "\n";
  }
  out.close();
  std::rename((m_state_file + ".tmp").c_str(), m_state_file.c_str());
}

void FreezeState::load_state() {
  std::ifstream in(m_state_file);
  long long left = 0;
  if (!(in >> left)) {
    return;
  }
  std::string dir;
  std::getline(in, dir);
  while (std::getline(in, dir)) {
    if (!dir.empty()) {
      m_frozen.push_back(dir);
    }
  }
  m_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(left);
  std::fprintf(stderr, "kata-snapshot-helper: resuming a freeze of %zu filesystem(s), auto-thaw in %lld s\n",
               m_frozen.size(), left);
}

} // namespace ks::agent
