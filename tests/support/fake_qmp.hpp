// A deliberately simple scripted QMP server for fault cases that a real QEMU cannot be made
// to produce on demand (garbled lines, silence, oversized messages, dropped connections).
#pragma once

#include "util/fd.hpp"

#include <functional>
#include <string>
#include <thread>

namespace ks::test {

class FakeQmpServer {
public:
  // SCRIPT runs on its own thread with the accepted connection.
  using Script = std::function<void(FakeQmpServer& self, int client)>;

  FakeQmpServer(const std::string& path, Script script);
  ~FakeQmpServer();

  // Helpers for scripts.
  static void send_line(int client, const std::string& line);
  // Reads one line (without '\n'); empty string when the peer closed.
  std::string read_line(int client);
  static const char* greeting();
  // A script that greets, accepts qmp_capabilities as QEMU does, then runs REST.
  static Script after_handshake(Script rest);

private:
  Fd m_listen;
  std::string m_buf;
  std::thread m_thread;
};

// A fresh temporary directory, removed with its contents at destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return m_path; }
  std::string operator/(const std::string& name) const { return m_path + "/" + name; }

private:
  std::string m_path;
};

} // namespace ks::test
