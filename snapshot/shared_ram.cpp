#include "snapshot/shared_ram.hpp"

#include "snapshot/mapped_ram.hpp"
#include "util/error.hpp"
#include "util/strings.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <sys/statfs.h>

namespace ks {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr long k_hugetlbfs_magic = 0x958458f6;

Json qom(qmp::Client& qmp, const std::string& path, const std::string& property) {
  return qmp.execute("qom-get", {{"path", path}, {"property", property}});
}

// The fd numbers of QEMU's open files whose link is TARGET_PREFIX + 6 characters (mkstemp's)
// + " (deleted)": the file QEMU made for a backend in its mem-path directory and unlinked.
std::vector<std::string> temp_file_fds(pid_t qemu, const std::string& target_prefix) {
  std::vector<std::string> found;
  const std::string suffix = " (deleted)";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(qemu) + "/fd", ec)) {
    std::string target = fs::read_symlink(entry.path(), ec).string();
    if (ec || target.size() != target_prefix.size() + 6 + suffix.size() ||
        !target.starts_with(target_prefix) || !target.ends_with(suffix)) {
      continue;
    }
    found.push_back(entry.path().filename().string());
  }
  return found;
}

// The backend ID's file in QEMU (pid QEMU), opened with ACCESS; SIZE and the file system
// checked.
Fd open_block_file(qmp::Client& qmp, pid_t qemu, const std::string& id, uint64_t size, int access) {
  std::string dir = qom(qmp, "/objects/" + id, "mem-path").get<std::string>();
  while (dir.size() > 1 && dir.back() == '/') {
    dir.pop_back();
  }
  std::vector<std::string> fds = temp_file_fds(qemu, dir + "/qemu_back_mem." + id + ".");
  if (fds.empty()) {
    throw Error("memory backend " + id + " (mem-path " + dir +
                ") is not a file QEMU made in a directory and unlinked; a named file may be shared "
                "with another process");
  }
  Fd fd;
  struct stat first {};
  for (const auto& n : fds) { // QEMU may hold its file more than once: all must be the same
    Fd f = open_file("/proc/" + std::to_string(qemu) + "/fd/" + n, access | O_CLOEXEC);
    struct stat st {};
    if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      throw Error("memory backend " + id + ": QEMU's fd " + n + " is not a regular file");
    }
    if (fd && (st.st_dev != first.st_dev || st.st_ino != first.st_ino)) {
      throw Error("memory backend " + id + ": QEMU holds two different files for it");
    }
    if (!fd) {
      first = st;
      fd = std::move(f);
    }
  }
  if (static_cast<uint64_t>(first.st_size) != size) {
    throw Error("memory backend " + id + ": its file holds " + std::to_string(first.st_size) +
                " bytes, not " + std::to_string(size));
  }
  struct statfs sfs {};
  if (::fstatfs(fd.get(), &sfs) == 0 && static_cast<long>(sfs.f_type) == k_hugetlbfs_magic) {
    throw Error("memory backend " + id + " is on hugetlbfs, which write(2) cannot fill on load");
  }
  return fd;
}

} // namespace

std::vector<SharedRamBlock> open_shared_ram(qmp::Client& qmp, pid_t qemu, int access, uint64_t chunk_size) {
  if (!qemu_has_capability(qmp, k_ignore_shared)) {
    throw Error("this QEMU has no x-ignore-shared migration capability");
  }
  std::vector<SharedRamBlock> blocks;
  for (const auto& obj : qmp.execute("qom-list", {{"path", "/objects"}})) {
    if (obj.value("type", "") != "child<memory-backend-file>") {
      continue; // memfd and anonymous backends are not left out by x-ignore-shared
    }
    std::string id = obj.value("name", "");
    std::string path = "/objects/" + id;
    if (!qom(qmp, path, "share").get<bool>()) {
      continue; // a private mapping: QEMU migrates it
    }
    uint64_t size = qom(qmp, path, "size").get<uint64_t>();
    if (size == 0 || size % chunk_size != 0) {
      throw Error("memory backend " + id + " holds " + human_size(size) + ", not a multiple of the " +
                  human_size(chunk_size) + " chunk size");
    }
    blocks.push_back({id, size, open_block_file(qmp, qemu, id, size, access)});
  }
  if (blocks.empty()) {
    throw Error("the VM has no memory-backend-file with share=on (its RAM is private to QEMU)");
  }
  return blocks;
}

Json describe_shared_ram(const std::vector<SharedRamBlock>& blocks) {
  Json memory = Json::array();
  for (const auto& b : blocks) {
    memory.push_back({{"id", b.id}, {"bytes", b.bytes}});
  }
  return memory;
}

std::vector<SharedRamBlock> open_shared_ram_for_load(qmp::Client& qmp, pid_t qemu, const Json& memory,
                                                     uint64_t chunk_size) {
  std::vector<SharedRamBlock> found;
  try {
    found = open_shared_ram(qmp, qemu, O_RDWR, chunk_size);
  } catch (const Error& e) {
    throw Error(std::string("the snapshot's memory is in shared memory files, but the new QEMU's is not: ") +
                  e.what(),
                ExitCode::archive_invalid);
  }
  std::vector<SharedRamBlock> blocks;
  for (const auto& m : memory) {
    std::string id = m["id"];
    auto it = std::find_if(found.begin(), found.end(), [&](const SharedRamBlock& b) { return b.id == id; });
    if (it == found.end() || it->bytes != m["bytes"].get<uint64_t>()) {
      throw Error("the snapshot's memory block " + id + " (" + human_size(m["bytes"].get<uint64_t>()) +
                    ") is not in the new QEMU" +
                    (it == found.end() ? std::string() : " with that size (" + human_size(it->bytes) + ")"),
                  ExitCode::archive_invalid);
    }
    blocks.push_back(std::move(*it));
    found.erase(it);
  }
  if (!found.empty()) {
    throw Error("the new QEMU has shared memory block " + found.front().id +
                  ", which the snapshot does not hold",
                ExitCode::archive_invalid);
  }
  for (auto& b : blocks) {
    // QEMU's start may have written to its RAM (firmware, ROMs): what the snapshot leaves
    // out (its zero chunks and holes) must read as zeros.
    if (::fallocate(b.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(b.bytes)) !=
        0) {
      throw Error("failed to empty memory block " + b.id +
                  "'s file before the load: " + std::strerror(errno));
    }
  }
  return blocks;
}

} // namespace ks
