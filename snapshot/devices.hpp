// Devices added after boot (hot-plugged over QMP, as the Kata runtime does): found by comparing
// QEMU's device tree with its command line, and recorded as the QMP commands that re-create
// them with the same ids, buses and addresses before the stream is loaded.
#pragma once

#include "qmp/qmp_client.hpp"
#include "snapshot/qemu_argv.hpp"

namespace ks {

// Returns [{"execute", "arguments"}...] in replay order (backends before devices). Throws, before
// anything is paused, for a hot-plugged device kata-snapshot cannot re-create.
qmp::Json discover_added_devices(qmp::Client& qmp, const QemuArgv& argv);

} // namespace ks
