#include "snapshot/argv_rewrite.hpp"

#include "snapshot/network.hpp"

#include "util/error.hpp"
#include "util/strings.hpp"

#include <set>
#include <unistd.h>

namespace ks {

namespace {

// Options the restore replaces with its own (monitor, pid file, start-up state).
bool dropped(const std::string& name) {
  static const std::set<std::string> names = {"qmp", "qmp-pretty", "pidfile", "daemonize",
                                              "S",   "incoming",   "loadvm"};
  return names.count(name) > 0;
}

[[noreturn]] void refuse(const std::string& option, const std::string& value, const std::string& why) {
  throw Error("cannot restore -" + option + " " + value + ": " + why, ExitCode::archive_invalid,
              "the source QEMU received this as an inherited file descriptor, which does not exist "
              "on this host; start the source VM with a path instead");
}

void check_no_inherited_fds(const QemuOption& o, const OptionValue& v) {
  for (const char* key : {"fd", "fds", "vhostfd", "vhostfds"}) {
    if (v.get(key)) {
      refuse(o.name, o.value, std::string(key) + "= passes a file descriptor");
    }
  }
  if (o.name == "add-fd") {
    refuse(o.name, o.value, "fd sets are inherited file descriptors");
  }
}

} // namespace

RewriteResult rewrite_for_restore(const QemuArgv& recorded, const RewriteOptions& ro) {
  RewriteResult result{recorded, {}};
  std::vector<QemuOption> out;
  for (const QemuOption& o : recorded.options()) {
    if (dropped(o.name)) {
      continue;
    }
    OptionValue v = OptionValue::parse(o.value);
    if (o.name == "chardev" && v.get("") == "socket") {
      std::string id = v.get("id").value_or("");
      auto forced = ro.chardev_paths.find(id);
      bool server = v.get("server") == "on" || v.get("server") == "true";
      if (forced != ro.chardev_paths.end()) {
        v.set("path", forced->second);
        v.erase("fd");
        result.sockets[id] = forced->second;
      } else if (server && v.get("path")) {
        std::string path = ro.run_dir + "/" + id + ".sock";
        v.set("path", path);
        result.sockets[id] = path;
      }
      out.push_back({o.name, v.str()});
      check_no_inherited_fds(out.back(), v);
      continue;
    }
    if (o.name == "mon") {
      out.push_back(o); // refers to a chardev by id, which is rewritten above
      continue;
    }
    if (o.name == "device" && v.driver() == "vhost-vsock-pci" && v.erase("vhostfd")) {
      // Kata passes /dev/vhost-vsock as an inherited fd; the restored QEMU opens it itself.
      if (::access("/dev/vhost-vsock", R_OK | W_OK) != 0) {
        throw Error("the snapshot has a vhost-vsock device but this host has no usable /dev/vhost-vsock",
                    ExitCode::archive_invalid, "load the vhost_vsock kernel module (modprobe vhost_vsock)");
      }
      out.push_back({o.name, v.str()});
      continue;
    }

    if (o.name == "netdev" && (v.get("") == "tap" || v.get("type") == "tap") && v.get("id") &&
        ro.tap_fds.count(*v.get("id"))) {
      // Kata's tap, passed as fds=/vhostfds=: re-created by load and inherited as new fds;
      // vhost-net, if used, is opened by QEMU itself.
      bool vhost =
        v.get("vhost") == "on" || v.get("vhost") == "true" || v.get("vhostfds") || v.get("vhostfd");
      for (const char* key : {"fd", "fds", "vhostfd", "vhostfds", "vhost"}) {
        v.erase(key);
      }
      std::vector<std::string> numbers;
      for (int fd : ro.tap_fds.at(*v.get("id"))) {
        numbers.push_back(std::to_string(fd));
      }
      v.set("fds", join(numbers, ":"));
      if (vhost && !ro.vhost_net) {
        result.warnings.push_back(vhost_net_dropped(*v.get("id")));
      }
      v.set("vhost", vhost && ro.vhost_net ? "on" : "off");
      out.push_back({o.name, v.str()});
      continue;
    }

    if ((o.name == "machine" || o.name == "M") && !ro.machine.empty()) {
      if (v.items().empty() || v.items()[0].first.empty()) {
        v.erase(""); // the recorded type, replaced
      }
      OptionValue pinned = OptionValue::parse(ro.machine);
      for (const auto& [k, val] : v.items()) {
        if (k != "type") {
          pinned.set(k, val);
        }
      }
      out.push_back({"machine", pinned.str()});
      continue;
    }
    if (o.name == "name" && !ro.name.empty()) {
      v.erase("");
      v.erase("guest");
      out.push_back({o.name, OptionValue::parse(ro.name).str() + (v.items().empty() ? "" : "," + v.str())});
      continue;
    }

    check_no_inherited_fds(o, v);
    out.push_back(o);
  }

  out.push_back({"qmp", "unix:" + ro.qmp_socket + ",server=on,wait=off"});
  out.push_back({"pidfile", ro.run_dir + "/qemu.pid"});
  out.push_back({"S", ""});
  out.push_back({"incoming", "defer"});
  result.argv.options() = std::move(out);
  return result;
}

} // namespace ks
