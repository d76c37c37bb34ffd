// Devices added after boot (hot-plugged over QMP, as the Kata runtime does): found by comparing
// QEMU's device tree with its command line, and recorded as the QMP commands that re-create
// them with the same ids, buses and addresses before the stream is loaded.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/network.hpp"
#include "snapshot/qemu_argv.hpp"

namespace ks {

// Returns [{"execute", "arguments"}...] in replay order (backends before devices). Throws, before
// anything is paused, for a hot-plugged device kata-snapshot cannot re-create. A NIC's getfd
// commands carry a "tap" member: the tap (from NET) that load re-creates and passes with it.
qmp::Json discover_added_devices(qmp::Client& qmp, const QemuArgv& argv, const NetworkInfo& net);

} // namespace ks
