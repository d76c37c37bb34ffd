// A QEMU command line as data: options in order, and QEMU's "key=value,key=value" syntax.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace ks {

// One "-name value" pair (value empty for flags such as -S).
struct QemuOption {
  std::string name; // without the leading dash, e.g. "chardev"
  std::string value;
};

// "socket,id=c,path=/x" -> ordered key/value pairs; a leading bare word gets key "" (the
// backend or driver). ",," is an escaped comma.
class OptionValue {
public:
  static OptionValue parse(const std::string& text);
  std::string str() const;

  std::optional<std::string> get(const std::string& key) const;
  // The leading bare word (backend or driver), or driver=... as Kata writes -device.
  std::string driver() const;

  void set(const std::string& key, const std::string& value);
  bool erase(const std::string& key);
  const std::vector<std::pair<std::string, std::string>>& items() const { return m_items; }

private:
  std::vector<std::pair<std::string, std::string>> m_items;
};

class QemuArgv {
public:
  explicit QemuArgv(std::vector<std::string> argv);

  const std::string& binary() const { return m_binary; }
  const std::vector<QemuOption>& options() const { return m_options; }
  std::vector<QemuOption>& options() { return m_options; }
  std::vector<std::string> to_argv() const;

  // Every value of -NAME, parsed.
  std::vector<OptionValue> all(const std::string& name) const;
  // The first plain value of -NAME.
  std::optional<std::string> first(const std::string& name) const;

  // The path of the UNIX socket behind chardev ID, if it is a socket chardev.
  std::optional<std::string> chardev_socket_path(const std::string& id) const;

private:
  std::string m_binary;
  std::vector<QemuOption> m_options;
};

// QEMU options that take no value (everything else takes exactly one).
bool qemu_option_is_flag(const std::string& name);

// /proc/PID/cmdline as a vector; throws naming the pid.
std::vector<std::string> read_proc_cmdline(pid_t pid);

} // namespace ks
