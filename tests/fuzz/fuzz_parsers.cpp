// Fuzz target: the text parsers fed by QEMU and /proc: `info network`, QEMU option values
// and the whole command line as read from /proc/PID/cmdline, and /proc/PID/stat's start time;
// and those fed by registries and users: WWW-Authenticate challenges, Location headers,
// snapshot references; and what a repository holds: its chunk cache files.
#include "snapshot/network.hpp"
#include "snapshot/qemu_argv.hpp"
#include "storage/store/chunk_cache.hpp"
#include "storage/store/reference.hpp"
#include "storage/store/registry.hpp"
#include "tests/fuzz/fuzz_util.hpp"
#include "util/child_process.hpp"
#include "util/http.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ks::fuzz::setup();
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ks::parse_info_network(text);
  } catch (const ks::Error&) {
  }
  try {
    ks::OptionValue::parse(text);
  } catch (const ks::Error&) {
  }
  try { // a /proc/PID/cmdline
    ks::QemuArgv argv(ks::split(text, '\0'));
    for (const char* name : {"chardev", "netdev", "device", "fsdev", "object"}) {
      argv.all(name);
    }
    argv.chardev_socket_path("char0");
    argv.to_argv();
  } catch (const ks::Error&) {
  }
  ks::stat_start_ticks(text);
  ks::challenge_params(text);                                         // a registry's WWW-Authenticate header
  ks::resolve_url("http://127.0.0.1:5000/v2/r/blobs/uploads/", text); // its Location header
  ks::url_origin(ks::resolve_url("http://127.0.0.1:5000/v2/r/", text)); // whose server that is
  try {
    ks::parse_reference(text);
  } catch (const ks::Error&) {
  }
  // A repository's chunk cache file, as found, and with a header and trailer that check out
  // around the input, so that its lines are parsed.
  ks::parse_chunk_cache(text, 1234);
  std::string cache = "kata-snapshot chunks 1 1234\n" + text + (text.ends_with('\n') ? "" : "\n");
  cache += "end 1 " + ks::sha256_hex(std::as_bytes(std::span(cache.data(), cache.size()))) + "\n";
  ks::parse_chunk_cache(cache, 1234);
  return 0;
}
