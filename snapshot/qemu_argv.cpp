#include "snapshot/qemu_argv.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"

#include <set>

namespace ks {

bool qemu_option_is_flag(const std::string& name) {
  static const std::set<std::string> flags = {"S",
                                              "daemonize",
                                              "nodefaults",
                                              "no-user-config",
                                              "nographic",
                                              "no-reboot",
                                              "no-shutdown",
                                              "no-hpet",
                                              "no-acpi",
                                              "enable-kvm",
                                              "snapshot",
                                              "full-screen",
                                              "no-fd-bootchk",
                                              "no-frame",
                                              "only-migratable",
                                              "preconfig",
                                              "semihosting",
                                              "win2k-hack",
                                              "s"};
  return flags.count(name) > 0;
}

OptionValue OptionValue::parse(const std::string& text) {
  OptionValue v;
  std::string item;
  auto flush = [&] {
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      // A bare word: the backend/driver when first, otherwise a boolean "key" (= on).
      if (v.m_items.empty()) {
        v.m_items.emplace_back("", item);
      } else {
        v.m_items.emplace_back(item, "on");
      }
    } else {
      v.m_items.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    item.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        item += ',';
        ++i;
        continue;
      }
      flush();
    } else {
      item += text[i];
    }
  }
  flush();
  return v;
}

std::string OptionValue::str() const {
  auto escape = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      out += c;
      if (c == ',') {
        out += ',';
      }
    }
    return out;
  };
  std::string out;
  for (const auto& [k, val] : m_items) {
    if (!out.empty()) {
      out += ',';
    }
    out += k.empty() ? escape(val) : k + "=" + escape(val);
  }
  return out;
}

std::optional<std::string> OptionValue::get(const std::string& key) const {
  for (const auto& [k, v] : m_items) {
    if (k == key) {
      return v;
    }
  }
  return std::nullopt;
}

std::string OptionValue::driver() const {
  if (auto d = get("driver")) {
    return *d;
  }
  return get("").value_or("");
}

void OptionValue::set(const std::string& key, const std::string& value) {
  for (auto& [k, v] : m_items) {
    if (k == key) {
      v = value;
      return;
    }
  }
  m_items.emplace_back(key, value);
}

bool OptionValue::erase(const std::string& key) {
  for (auto it = m_items.begin(); it != m_items.end(); ++it) {
    if (it->first == key) {
      m_items.erase(it);
      return true;
    }
  }
  return false;
}

QemuArgv::QemuArgv(std::vector<std::string> argv) {
  if (argv.empty()) {
    throw Error("empty QEMU command line");
  }
  m_binary = argv[0];
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() < 2 || a[0] != '-') {
      // A bare argument is the disk image (old syntax): keep it as an option without name.
      m_options.push_back({"", a});
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    auto eq = name.find('=');
    if (eq != std::string::npos) {
      m_options.push_back({name.substr(0, eq), name.substr(eq + 1)});
    } else if (qemu_option_is_flag(name) || i + 1 >= argv.size()) {
      m_options.push_back({name, ""});
    } else {
      m_options.push_back({name, argv[++i]});
    }
  }
}

std::vector<std::string> QemuArgv::to_argv() const {
  std::vector<std::string> out{m_binary};
  for (const auto& o : m_options) {
    if (o.name.empty()) {
      out.push_back(o.value);
      continue;
    }
    out.push_back("-" + o.name);
    if (!qemu_option_is_flag(o.name)) {
      out.push_back(o.value);
    }
  }
  return out;
}

std::vector<OptionValue> QemuArgv::all(const std::string& name) const {
  std::vector<OptionValue> out;
  for (const auto& o : m_options) {
    if (o.name == name) {
      out.push_back(OptionValue::parse(o.value));
    }
  }
  return out;
}

std::optional<std::string> QemuArgv::first(const std::string& name) const {
  for (const auto& o : m_options) {
    if (o.name == name) {
      return o.value;
    }
  }
  return std::nullopt;
}

std::optional<std::string> QemuArgv::chardev_socket_path(const std::string& id) const {
  for (const auto& c : all("chardev")) {
    if (c.get("id") == id && c.get("") == "socket") {
      return c.get("path");
    }
  }
  return std::nullopt;
}

std::vector<std::string> read_proc_cmdline(pid_t pid) {
  std::string raw;
  try {
    raw = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  } catch (const Error& e) {
    throw Error("cannot read the command line of QEMU (pid " + std::to_string(pid) + "): " + e.what());
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) {
      end = raw.size();
    }
    out.push_back(raw.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

} // namespace ks
