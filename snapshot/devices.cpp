#include "snapshot/devices.hpp"

#include "util/error.hpp"
#include "util/strings.hpp"

#include <cstdio>
#include <set>

namespace ks {

namespace {

using Json = qmp::Json;

std::set<std::string> argv_ids(const QemuArgv& argv, const std::string& option) {
  std::set<std::string> ids;
  for (const auto& v : argv.all(option)) {
    if (auto id = v.get("id")) {
      ids.insert(*id);
    }
  }
  return ids;
}

Json qom(qmp::Client& qmp, const std::string& path, const std::string& property) {
  return qmp.execute("qom-get", {{"path", path}, {"property", property}});
}

// bus and addr of a PCI device, as device_add takes them.
void add_pci_location(qmp::Client& qmp, const std::string& path, Json& args) {
  std::string bus = qom(qmp, path, "parent_bus").get<std::string>();
  args["bus"] = bus.substr(bus.rfind('/') + 1);
  int devfn = qom(qmp, path, "addr").get<int>();
  char addr[16];
  std::snprintf(addr, sizeof addr, "%02x.%x", devfn >> 3, devfn & 7);
  args["addr"] = addr;
}

Json block_commands(qmp::Client& qmp, const std::string& id, const std::string& type,
                    const std::string& path) {
  std::string node = qom(qmp, path, "drive").get<std::string>();
  Json nodes = qmp.execute("query-named-block-nodes", {{"flat", true}});
  for (const auto& n : nodes) {
    if (n.value("node-name", "") != node) {
      continue;
    }
    Json blockdev = {{"driver", n["drv"]}, {"node-name", node}, {"read-only", n.value("ro", false)}};
    if (n["drv"] == "file") {
      blockdev["filename"] = n["file"];
    } else {
      blockdev["file"] = {{"driver", "file"}, {"filename", n["file"]}};
    }
    Json dev = {{"driver", type}, {"id", id}, {"drive", node}};
    if (type != "scsi-hd") {
      add_pci_location(qmp, path, dev);
    }
    return Json::array({{{"execute", "blockdev-add"}, {"arguments", blockdev}},
                        {{"execute", "device_add"}, {"arguments", dev}}});
  }
  throw Error("hot-plugged disk " + id + ": its block node " + node + " is not in query-named-block-nodes");
}

Json dimm_commands(qmp::Client& qmp, const std::string& id) {
  for (const auto& m : qmp.execute("query-memory-devices")) {
    const Json& d = m["data"];
    if (d.value("id", "") != id) {
      continue;
    }
    std::string memdev = d["memdev"];
    std::string backend = memdev.substr(memdev.rfind('/') + 1);
    std::string qom_type = qom(qmp, memdev, "type");
    Json object = {{"qom-type", qom_type}, {"id", backend}, {"size", qom(qmp, memdev, "size")}};
    if (qom_type == "memory-backend-file") {
      object["mem-path"] = qom(qmp, memdev, "mem-path");
      object["share"] = qom(qmp, memdev, "share");
    }
    return Json::array({{{"execute", "object-add"}, {"arguments", object}},
                        {{"execute", "device_add"},
                         {"arguments",
                          {{"driver", m.value("type", "dimm") == "dimm" ? "pc-dimm" : m["type"]},
                           {"id", id},
                           {"memdev", backend},
                           {"addr", d["addr"]},
                           {"slot", d["slot"]}}}}});
  }
  throw Error("hot-plugged memory " + id + " is not in query-memory-devices");
}

Json cpu_commands(qmp::Client& qmp, const std::string& id) {
  for (const auto& c : qmp.execute("query-hotpluggable-cpus")) {
    if (c.value("qom-path", "") != "/machine/peripheral/" + id) {
      continue;
    }
    Json args = c["props"];
    args.erase("node-id");
    args["driver"] = c["type"];
    args["id"] = id;
    return Json::array({{{"execute", "device_add"}, {"arguments", args}}});
  }
  throw Error("hot-plugged vCPU " + id + " is not in query-hotpluggable-cpus");
}

// Kata's hot-plugged NIC: getfd per tap queue (each marked with the tap to re-create),
// netdev_add of the tap, device_add virtio-net-pci with the same MAC, bus and address.
Json nic_commands(qmp::Client& qmp, const std::string& id, const std::string& type, const std::string& path,
                  const NetworkInfo& net, const std::set<std::string>& boot_netdevs) {
  std::string netdev = qom(qmp, path, "netdev");
  const TapNetdev* tap = net.find(netdev);
  Json commands = Json::array();
  if (boot_netdevs.count(netdev) == 0) { // a backend of its own, added with the device
    if (tap == nullptr) {
      throw Error("hot-plugged network device " + id + " uses netdev " + netdev +
                    ", which is not a tap passed as file descriptors",
                  ExitCode::failed, "kata-snapshot re-creates hot-plugged NICs on taps, as Kata adds them");
    }
    std::vector<std::string> names;
    for (size_t q = 0; q < tap->ifnames.size(); ++q) {
      names.push_back("ksnap-" + netdev + "-" + std::to_string(q));
      commands.push_back({{"execute", "getfd"},
                          {"arguments", {{"fdname", names.back()}}},
                          {"tap", {{"netdev", netdev}, {"ifname", tap->ifnames[q]}, {"queue", q}}}});
    }
    commands.push_back(
      {{"execute", "netdev_add"},
       {"arguments", {{"type", "tap"}, {"id", netdev}, {"fds", join(names, ":")}, {"vhost", net.vhost}}}});
  }
  Json dev = {{"driver", type}, {"id", id}, {"netdev", netdev}, {"mac", qom(qmp, path, "mac")}};
  // Properties that change the device's PCI layout, so the migration stream must see them as-is.
  for (const char* prop : {"romfile", "disable-modern", "disable-legacy", "mq", "vectors"}) {
    try {
      dev[prop] = qom(qmp, path, prop);
    } catch (const qmp::CommandError&) {
    }
  }
  add_pci_location(qmp, path, dev);
  commands.push_back({{"execute", "device_add"}, {"arguments", dev}});
  return commands;
}

} // namespace

Json discover_added_devices(qmp::Client& qmp, const QemuArgv& argv, const NetworkInfo& net) {
  std::set<std::string> boot_ids = argv_ids(argv, "device");
  std::set<std::string> boot_netdevs = argv_ids(argv, "netdev"); // recreated from the argv itself
  Json commands = Json::array();
  for (const auto& child : qmp.execute("qom-list", {{"path", "/machine/peripheral"}})) {
    std::string id = child.value("name", "");
    std::string type = child.value("type", "");
    if (type.rfind("child<", 0) != 0 || boot_ids.count(id)) {
      continue;
    }
    type = type.substr(6, type.size() - 7);
    std::string path = "/machine/peripheral/" + id;
    Json more;
    if (type == "virtio-blk-pci" || type == "scsi-hd") {
      more = block_commands(qmp, id, type, path);
    } else if (type == "pc-dimm") {
      more = dimm_commands(qmp, id);
    } else if (type.ends_with("-cpu")) {
      more = cpu_commands(qmp, id);
    } else if (type == "virtio-net-pci") {
      more = nic_commands(qmp, id, type, path, net, boot_netdevs);
    } else {
      throw Error("the VM has a device added after boot that kata-snapshot cannot re-create yet: " + id +
                    " (" + type + ")",
                  ExitCode::failed,
                  "supported: virtio-blk-pci, scsi-hd, pc-dimm, vCPUs, virtio-net-pci on a tap");
    }

    commands.insert(commands.end(), more.begin(), more.end());
  }
  return commands;
}

} // namespace ks
