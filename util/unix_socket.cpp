#include "util/unix_socket.hpp"

#include "util/deadline.hpp"
#include "util/error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace ks {

namespace {

sockaddr_un make_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw Error("socket path is too long (" + std::to_string(path.size()) + " bytes, at most " +
                std::to_string(sizeof addr.sun_path - 1) + "): " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

Fd new_socket() {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    throw_errno("failed to create a UNIX socket");
  }
  return Fd(s);
}

} // namespace

namespace {

// connect(2) without blocking: a listener whose backlog is full (a QEMU serving its one QMP
// client does not accept others) would block a blocking connect for as long as it stays
// full, past any deadline. Non-blocking, that is EAGAIN, retried until the deadline.
int connect_nonblocking(int fd, const sockaddr_un& addr) {
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::fcntl(fd, F_SETFL, flags);
  errno = err;
  return r;
}

} // namespace

Fd connect_unix(const std::string& path, const Deadline& deadline) {
  sockaddr_un addr = make_address(path);
  for (;;) {
    Fd s = new_socket();
    if (connect_nonblocking(s.get(), addr) == 0) {
      return s;
    }
    int err = errno;
    bool transient = err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == EINTR;
    if (!transient || deadline.expired()) {
      throw_errno("failed to connect to " + path, err);
    }
    std::this_thread::sleep_for(Millis(20));
  }
}

bool socket_in_use(const std::string& path) {
  sockaddr_un addr = make_address(path);
  Fd s = new_socket();
  return connect_nonblocking(s.get(), addr) == 0 || errno == EAGAIN; // EAGAIN: listening, busy
}

Fd listen_unix(const std::string& path) {

  sockaddr_un addr = make_address(path);
  ::unlink(path.c_str());
  Fd s = new_socket();
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno("failed to bind " + path);
  }
  if (::listen(s.get(), 16) != 0) {
    throw_errno("failed to listen on " + path);
  }
  return s;
}

void send_with_fd(int sock, const std::string& data, int fd) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(data.size())) {
      return;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      throw_errno("failed to send a file descriptor");
    }
    // The fd went with the first bytes; send the rest plainly.
    std::string rest = data.substr(static_cast<size_t>(n));
    if (::send(sock, rest.data(), rest.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(rest.size())) {
      throw_errno("failed to send a file descriptor");
    }
    return;
  }
}

pid_t peer_pid(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return -1;
  }
  return cred.pid > 0 ? cred.pid : -1;
}

std::string socket_exposure(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return {};
  }
  bool world = (st.st_mode & S_IWOTH) != 0;
  bool group = (st.st_mode & S_IWGRP) != 0 && st.st_gid != 0;
  // Every directory above must let them through.
  std::string dir = path;
  while (world || group) {
    size_t slash = dir.rfind('/');
    if (slash == std::string::npos) {
      break;
    }
    dir = slash == 0 ? "/" : dir.substr(0, slash);
    struct stat ds {};
    if (::stat(dir.c_str(), &ds) != 0) {
      return {};
    }
    world = world && (ds.st_mode & S_IXOTH) != 0;
    group = group && ((ds.st_mode & S_IXOTH) != 0 || ((ds.st_mode & S_IXGRP) != 0 && ds.st_gid == st.st_gid));
    if (dir == "/") {
      break;
    }
  }
  if (world) {
    return "every user";
  }
  if (group) {
    struct group* g = ::getgrgid(st.st_gid);
    return "the members of group " + (g ? std::string(g->gr_name) : std::to_string(st.st_gid));
  }
  return {};
}

} // namespace ks
