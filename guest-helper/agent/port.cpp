#include "guest-helper/agent/port.hpp"

#include <filesystem>
#include <fstream>

namespace ks::agent {

std::string find_port(const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/class/virtio-ports", ec)) {
    std::ifstream in(entry.path() / "name");
    std::string port_name;
    if (std::getline(in, port_name) && port_name == name) {
      return "/dev/" + entry.path().filename().string();
    }
  }
  return {};
}

} // namespace ks::agent
