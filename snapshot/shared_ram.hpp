// The shared-ram vmstate layout: guest RAM read and written in place, in the files that back
// it. A VM whose memory is a memory-backend-file with share=on (every Kata sandbox: virtio-fs
// needs it) keeps its RAM in a file that QEMU made in the mem-path directory and unlinked.
// With the x-ignore-shared capability QEMU leaves exactly those blocks out of its migration
// stream; kata-snapshot reads them itself, while the VM is stopped, through /proc/PID/fd,
// each at fixed offsets, so that unchanged memory gives unchanged chunks without QEMU
// copying a byte of it. A load writes them into the new QEMU's files before QEMU reads the
// rest of the state. docs/archive-format.md has the member layout.
#pragma once

#include "qmp/qmp_client.hpp"
#include "util/fd.hpp"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ks {

inline constexpr const char* k_layout_shared_ram = "shared-ram";  // manifest vmstate.layout
inline constexpr const char* k_ignore_shared = "x-ignore-shared"; // QEMU's capability

// One shared memory-backend-file of a VM: its object id, size and QEMU's file.
struct SharedRamBlock {
  std::string id;
  uint64_t bytes = 0;
  Fd fd; // QEMU's unlinked file, reopened through /proc/PID/fd with the caller's access mode
};

// Every memory-backend-file with share=on of the VM run by QEMU pid QEMU (the blocks that
// x-ignore-shared leaves out of the stream), opened with ACCESS (O_RDONLY, O_RDWR). Throws
// Error naming why the layout cannot be used: QEMU without x-ignore-shared, no such block,
// a block whose file is not one QEMU made and unlinked (a named mem-path file may be shared
// with another VM), on hugetlbfs (not writable with write(2)), or whose size is not a
// multiple of CHUNK_SIZE.
std::vector<SharedRamBlock> open_shared_ram(qmp::Client& qmp, pid_t qemu, int access, uint64_t chunk_size);

// The manifest's vmstate.memory: [{"id", "bytes"}], in chunk order.
nlohmann::json describe_shared_ram(const std::vector<SharedRamBlock>& blocks);

// Load: the new QEMU's blocks, opened for writing, in the order of the manifest's MEMORY
// (checked by validate_manifest; same ids and sizes, and no other shared block), each emptied (its holes
// punched), so that what a snapshot leaves out reads as zeros.
std::vector<SharedRamBlock> open_shared_ram_for_load(qmp::Client& qmp, pid_t qemu,
                                                     const nlohmann::json& memory, uint64_t chunk_size);

} // namespace ks
