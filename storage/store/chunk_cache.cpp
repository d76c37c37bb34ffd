#include "storage/store/chunk_cache.hpp"

#include "util/fd.hpp"
#include "util/sha256.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

constexpr std::string_view k_header = "kata-snapshot chunks 1 "; // then the manifest's size
constexpr uint64_t k_max_cache_size = 64u << 20;                 // far above a 4 MiB manifest's entries

bool is_hex64(std::string_view s) {
  return s.size() == 64 &&
         std::ranges::all_of(s, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A lookup key: BLAKE3 hex, or an encrypted snapshot's tag ("keyed:" + hex). Never empty,
// never a separator.
bool is_key(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::ranges::all_of(s, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == ':' || c == '-';
  });
}

std::string cache_path(const OciLayout& layout, const std::string& manifest_hex) {
  return chunk_cache_dir(layout) + "/" + manifest_hex;
}

// "<raw> <blob hex> <size>" into OUT; false when it is not such a line.
bool parse_line(std::string_view line, CachedChunk& out) {
  size_t a = line.find(' ');
  size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
  if (b == std::string_view::npos) {
    return false;
  }
  std::string_view raw = line.substr(0, a), hex = line.substr(a + 1, b - a - 1), size = line.substr(b + 1);
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(size.data(), size.data() + size.size(), n);
  if (!is_key(raw) || !is_hex64(hex) || ec != std::errc() || end != size.data() + size.size() ||
      size.empty()) {
    return false;
  }
  out = {std::string(raw), {std::string(hex), n}};
  return true;
}

} // namespace

std::string chunk_cache_dir(const OciLayout& layout) {
  return layout.dir() + "/.kata-snapshot/chunks";
}

std::optional<std::vector<CachedChunk>> read_chunk_cache(const OciLayout& layout,
                                                         const Descriptor& manifest) {
  const std::string manifest_hex = manifest.hex();
  if (!is_hex64(manifest_hex)) {
    return std::nullopt;
  }
  std::string text;
  try {
    Fd f = open_file(cache_path(layout, manifest_hex), O_RDONLY | O_NOFOLLOW);
    struct stat st {};
    if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<uint64_t>(st.st_size) > k_max_cache_size) {
      return std::nullopt;
    }
    text.resize(static_cast<size_t>(st.st_size));
    if (read_full(f.get(), std::as_writable_bytes(std::span(text.data(), text.size())), "the chunk cache") !=
        text.size()) {
      return std::nullopt;
    }
  } catch (const std::exception&) {
    return std::nullopt; // none yet, or unreadable: the manifest is read instead
  }
  return parse_chunk_cache(text, manifest.size);
}

std::optional<std::vector<CachedChunk>> parse_chunk_cache(std::string_view text, uint64_t manifest_size) {
  // The header: k_header and the size of the manifest it was made from, which must be the
  // size index.json gives (a descriptor that lies about it is refused, as when parsed).
  size_t first = text.find('\n');
  uint64_t size = 0;
  if (!text.starts_with(k_header) || first == std::string_view::npos) {
    return std::nullopt;
  }
  auto [size_end, size_ec] = std::from_chars(text.data() + k_header.size(), text.data() + first, size);
  if (size_ec != std::errc() || size_end != text.data() + first || size != manifest_size) {
    return std::nullopt;
  }
  // The trailer: "end <count> <sha256 of everything before this line>\n".
  if (!text.ends_with('\n') || first + 1 == text.size()) {
    return std::nullopt;
  }
  size_t last = text.rfind('\n', text.size() - 2);
  if (last == std::string::npos || last < first) {
    return std::nullopt;
  }
  std::string_view body = text.substr(0, last + 1);
  std::string_view trailer = text.substr(last + 1, text.size() - last - 2);
  if (!trailer.starts_with("end ")) {
    return std::nullopt;
  }
  size_t sp = trailer.find(' ', 4);
  if (sp == std::string_view::npos || trailer.substr(sp + 1) != sha256_hex(std::as_bytes(std::span(body)))) {
    return std::nullopt;
  }
  uint64_t count = 0;
  auto [end, ec] = std::from_chars(trailer.data() + 4, trailer.data() + sp, count);
  if (ec != std::errc() || end != trailer.data() + sp) {
    return std::nullopt;
  }
  std::vector<CachedChunk> out;
  for (size_t at = first + 1; at < body.size();) {
    size_t nl = body.find('\n', at);
    CachedChunk c;
    if (!parse_line(body.substr(at, nl - at), c)) {
      return std::nullopt;
    }
    out.push_back(std::move(c));
    at = nl + 1;
  }
  if (out.size() != count) {
    return std::nullopt;
  }
  return out;
}

void write_chunk_cache(const OciLayout& layout, const Descriptor& manifest,
                       const std::vector<CachedChunk>& chunks) noexcept {
  try {
    const std::string manifest_hex = manifest.hex();
    if (!is_hex64(manifest_hex)) {
      return;
    }
    std::string body = std::string(k_header) + std::to_string(manifest.size) + "\n";
    for (const auto& c : chunks) {
      if (!is_key(c.raw) || !is_hex64(c.stored.sha256)) {
        return; // not something read_chunk_cache would take back: leave it uncached
      }
      body += c.raw + " " + c.stored.sha256 + " " + std::to_string(c.stored.size) + "\n";
    }
    body += "end " + std::to_string(chunks.size()) + " " + sha256_hex(std::as_bytes(std::span(body))) + "\n";
    std::string dir = chunk_cache_dir(layout);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return;
    }
    std::string temp = dir + "/.tmp-XXXXXX";
    int fd = ::mkostemp(temp.data(), O_CLOEXEC);
    if (fd < 0) {
      return;
    }
    Fd f(fd);
    try {
      write_all(f.get(), body, temp);
    } catch (const std::exception&) {
      ::unlink(temp.c_str());
      return;
    }
    if (::rename(temp.c_str(), cache_path(layout, manifest_hex).c_str()) != 0) {
      ::unlink(temp.c_str());
    }
  } catch (...) { // NOLINT(bugprone-empty-catch): a cache that cannot be written is not needed
  }
}

size_t remove_stale_chunk_caches(const OciLayout& layout, const std::set<std::string>& keep) {
  size_t removed = 0;
  std::string dir = chunk_cache_dir(layout);
  for (const auto& name : list_dir(dir)) {
    if (is_hex64(name) && keep.contains("sha256:" + name)) {
      continue;
    }
    if (::unlink((dir + "/" + name).c_str()) == 0) {
      ++removed;
    }
  }
  return removed;
}

} // namespace ks
