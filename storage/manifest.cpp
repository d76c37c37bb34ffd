#include "storage/manifest.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/json_fields.hpp"
#include "util/strings.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <set>
#include <string_view>
#include <sys/utsname.h>
#include <unistd.h>

namespace ks {

std::string vmstate_member_name(uint64_t n, unsigned series) {
  char buf[64];
  if (series == 0) {
    std::snprintf(buf, sizeof buf, "%s%06llu.zst", k_vmstate_prefix, static_cast<unsigned long long>(n));
  } else {
    std::snprintf(buf, sizeof buf, "%smultifd-%u/%06llu.zst", k_vmstate_prefix, series - 1,
                  static_cast<unsigned long long>(n));
  }
  return buf;
}

std::optional<unsigned> vmstate_series(const std::string& name) {
  std::string_view rest(name);
  if (!rest.starts_with(k_vmstate_prefix)) {
    return std::nullopt;
  }
  rest.remove_prefix(std::string_view(k_vmstate_prefix).size());
  unsigned series = 0;
  if (rest.starts_with("multifd-")) {
    rest.remove_prefix(8);
    size_t slash = rest.find('/');
    std::string_view channel = rest.substr(0, slash);
    if (slash == std::string_view::npos || channel.empty() || channel.size() > 3 ||
        channel.find_first_not_of("0123456789") != std::string_view::npos) {
      return std::nullopt;
    }
    series = static_cast<unsigned>(std::stoul(std::string(channel))) + 1;
    rest.remove_prefix(slash + 1);
  }
  if (rest.size() < 10 || !rest.ends_with(".zst") ||
      rest.substr(0, rest.size() - 4).find_first_not_of("0123456789") != std::string_view::npos) {

    return std::nullopt;
  }
  return series;
}

namespace {

// QEMU's id syntax (id_wellformed): a letter, then letters, digits, '-', '.' and '_'.
bool qemu_id(const Json& id) {
  if (!id.is_string()) {
    return false;
  }
  const std::string& s = id.get_ref<const std::string&>();
  if (s.empty() || s.size() > 128 || !std::isalpha(static_cast<unsigned char>(s[0]))) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

} // namespace

uint64_t shared_ram_bytes(const Json& vmstate) {
  auto bad = [](const std::string& why) {
    throw Error("archive manifest is not loadable: vmstate.memory " + why, ExitCode::archive_invalid);
  };
  constexpr uint64_t k_max = 1ull << 44; // 16 TiB: far beyond any VM, well within off_t
  const Json& memory = vmstate.value("memory", Json());
  const Json& chunk = vmstate.value("chunk_size", Json());
  if (!memory.is_array() || memory.empty() || memory.size() > 4096) {
    bad("(the shared memory blocks) is missing or empty");
  }
  if (!chunk.is_number_unsigned() || chunk.get<uint64_t>() == 0 || chunk.get<uint64_t>() > (1u << 30)) {
    bad("comes without a valid vmstate.chunk_size");
  }
  uint64_t chunk_size = chunk.get<uint64_t>();
  uint64_t total = 0;
  std::set<std::string> ids;
  for (const auto& b : memory) {
    if (!b.is_object() || !qemu_id(b.value("id", Json())) || !ids.insert(b["id"].get<std::string>()).second) {
      bad("has a block without a valid, unique id");
    }
    const Json& bytes = b.value("bytes", Json());
    if (!bytes.is_number_unsigned() || bytes.get<uint64_t>() == 0 ||
        bytes.get<uint64_t>() % chunk_size != 0 || bytes.get<uint64_t>() > k_max - total) {
      bad("block " + b["id"].get<std::string>() +
          " has a size that is not a positive multiple of the chunk size");
    }
    total += bytes.get<uint64_t>();
  }
  return total;
}

namespace {

[[noreturn]] void manifest_problem(const std::string& why) {
  throw Error("archive manifest is not loadable: " + why, ExitCode::archive_invalid);
}

void check_manifest(const Json& m) {
  auto bad = manifest_problem;
  if (!m.is_object() || m.value("format", "") != k_format_name) {
    bad("not a kata-snapshot manifest (format is not \"kata-snapshot\")");
  }
  if (!m.contains("format_version") || !m["format_version"].is_number_integer()) {
    bad("format_version is missing");
  }
  int version = m["format_version"];
  if (version > k_format_version) {
    throw Error("archive format version " + std::to_string(version) +
                  " is newer than this kata-snapshot supports (" + std::to_string(k_format_version) + ")",
                ExitCode::archive_invalid, "load it with a newer kata-snapshot");
  }
  std::string kind = manifest_kind(m);
  if (kind == k_kind_container) {
    if (!m.contains("container") || !m["container"].is_object() || !m["container"].contains("id") ||
        !m["container"]["id"].is_string()) {
      bad("container.id is missing");
    }
    return;
  }
  if (kind != k_kind_vm) {
    bad("unknown kind \"" + kind + "\"");
  }
  for (const char* key : {"qemu", "vmstate"}) {
    if (!m.contains(key) || !m[key].is_object()) {
      bad(std::string("\"") + key + "\" is missing");
    }
  }
  if (!m["qemu"].contains("argv") || !m["qemu"]["argv"].is_array() || m["qemu"]["argv"].empty()) {
    bad("qemu.argv is missing");
  }
  std::string layout = m["vmstate"].value("layout", "stream");
  if (layout != "stream" && layout != "mapped-ram" && layout != "multifd" && layout != "shared-ram") {
    bad("unknown vmstate layout \"" + layout + "\"");
  }
  if (layout == "shared-ram") {
    shared_ram_bytes(m["vmstate"]);
  }
  if (layout == "multifd") {
    const Json& channels = m["vmstate"].value("channels", Json());
    if (!channels.is_number_integer() || channels.get<int64_t>() < 1 || channels.get<int64_t>() > 255) {

      bad("vmstate.channels (the multifd channel count, 1 to 255) is missing");
    }
  }
}

} // namespace

void validate_manifest(const Json& m) {
  try {
    check_manifest(m);
  } catch (const Json::exception& e) {
    manifest_problem("a field has the wrong type (" + json_problem(e) + ")");
  }
}

std::string manifest_kind(const Json& manifest) {
  const Json& kind = manifest.is_object() && manifest.contains("kind") ? manifest["kind"] : Json();
  return kind.is_string() ? kind.get<std::string>() : k_kind_vm;
}

Json describe_host() {
  utsname u{};
  ::uname(&u);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string model;
  std::vector<std::string> flags;
  try {
    for (const auto& line : split(read_file("/proc/cpuinfo"), '\n')) {
      auto colon = line.find(':');
      if (colon == std::string::npos) {
        continue;
      }
      std::string key = trim(line.substr(0, colon));
      if (key == "model name" && model.empty()) {
        model = trim(line.substr(colon + 1));
      } else if (key == "flags" && flags.empty()) {
        for (const auto& f : split(trim(line.substr(colon + 1)), ' ')) {
          if (!f.empty()) {
            flags.push_back(f);
          }
        }
      }
    }
  } catch (const Error&) {
    // No /proc/cpuinfo: leave the CPU fields empty.
  }
  return {{"hostname", host},
          {"kernel", std::string(u.release)},
          {"arch", std::string(u.machine)},
          {"cpu_model", model},
          {"cpu_flags", flags}};
}

std::string utc_now(Precision precision) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  std::tm tm{};
  ::gmtime_r(&now.tv_sec, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (precision == Precision::milliseconds) {
    n += static_cast<size_t>(std::snprintf(buf + n, sizeof buf - n, ".%03ld", now.tv_nsec / 1000000));
  }
  std::snprintf(buf + n, sizeof buf - n, "Z");
  return buf;
}

} // namespace ks
