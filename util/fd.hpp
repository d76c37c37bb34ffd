// Owned file descriptors: the only place in the project that calls close(2).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ks {

class Deadline;

class Fd {
public:
  Fd() = default;
  explicit Fd(int fd) : m_fd(fd) {}
  Fd(Fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return m_fd; }
  bool valid() const { return m_fd >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(m_fd, -1); }
  void reset(int fd = -1);

private:
  int m_fd = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

// A close-on-exec pipe.
Pipe make_pipe();

// Grows a pipe's buffer (F_SETPIPE_SZ) for bulk transfers; best effort.
void grow_pipe(int fd, size_t bytes);

// Opens PATH or throws "failed to open PATH: why".
Fd open_file(const std::string& path, int flags, int mode = 0600);

// Writes all of DATA, retrying on EINTR and short writes. Throws on error, naming WHAT.
void write_all(int fd, std::span<const std::byte> data, const std::string& what);
void write_all(int fd, const std::string& data, const std::string& what);

// Reads until BUF is full or end of file; returns the bytes read. Throws on error.
size_t read_full(int fd, std::span<std::byte> buf, const std::string& what);

// Waits until FD is readable or DEADLINE passes; returns false on timeout.
bool wait_readable(int fd, const Deadline& deadline);

// Whole file as a string; throws naming PATH.
std::string read_file(const std::string& path);

// The names in directory DIR, "." and ".." left out; empty when DIR cannot be read.
std::vector<std::string> list_dir(const std::string& dir);

// The last LINES lines of a text file joined with " | " (a log's last words), or "".
std::string log_tail(const std::string& path, size_t lines);

} // namespace ks
