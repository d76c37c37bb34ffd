#include "snapshot/container.hpp"

#include "snapshot/vm_lock.hpp"
#include "snapshot/watchdog.hpp"
#include "storage/archive_reader.hpp"
#include "storage/archive_writer.hpp"
#include "storage/manifest.hpp"
#include "storage/store/store.hpp"
#include "util/cancel.hpp"
#include "util/error.hpp"
#include "util/fault.hpp"
#include "util/fd.hpp"
#include "util/sha256.hpp"
#include "util/signature.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <optional>
#include <set>
#include <unistd.h>

namespace ks {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// CRIU runs to its end in the guest (it is never killed halfway); its own --timeout bounds
// the seizing, the rest is bounded by the container's size.
constexpr Millis k_criu_timeout{std::chrono::minutes(10)};
constexpr Millis k_transfer_idle{std::chrono::seconds(30)};
// While CRIU runs, the helper sends a heartbeat every 2 s: silence this long means it died.
constexpr Millis k_criu_silence{std::chrono::seconds(15)};
constexpr std::chrono::seconds k_hold{120};
constexpr size_t k_max_images = 100000;
constexpr uint64_t k_max_image_bytes = uint64_t{1} << 40;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The helper's refusal "WHAT; FIX" as one Error line with its hint.
[[noreturn]] void rethrow_refusal(const guest::GuestRefused& e, const std::string& doing) {
  std::string msg = e.what();
  auto colon = msg.find(": ", msg.find("refused "));
  std::string desc = colon == std::string::npos ? msg : msg.substr(colon + 2);
  auto semi = desc.find("; ");
  std::string hint = semi == std::string::npos ? std::string() : desc.substr(semi + 2);
  throw Error(doing + ": " + desc.substr(0, semi), ExitCode::failed, hint);
}

Json run_guest(GuestSession& s, const std::string& doing, const std::string& command, const Json& args,
               Millis timeout = guest::Channel::k_default_timeout, Millis idle = Millis(0)) {
  try {
    return s.channel().execute(command, args, timeout, idle);
  } catch (const guest::GuestRefused& e) {
    rethrow_refusal(e, doing);
  }
}

// A container id as the helper accepts it (it checks again).
void check_container_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 200 && id[0] != '.' && id[0] != '-' &&
            std::all_of(id.begin(), id.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
            });
  if (!ok) {
    throw Error("invalid container id \"" + id + "\"", ExitCode::usage,
                "ids are letters, digits, '.', '_' and '-'");
  }
}

bool valid_image_name(const std::string& name) {
  return !name.empty() && name.size() <= 200 && name[0] != '.' && name[0] != '-' &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
         });
}

struct Image {
  std::string name;
  uint64_t size = 0;
  uint64_t offset = 0; // where its bytes are in the one temp file of all images
  std::string sha256;
};

// The dump's answer comes from the guest: checked before anything is taken from it.
std::vector<Image> images_of(const Json& dump) {
  const Json& files = dump.contains("files") ? dump["files"] : Json();
  if (!files.is_array() || files.empty() || files.size() > k_max_images) {
    throw Error("the guest helper's checkpoint lists no image files (or too many)");
  }
  std::vector<Image> out;
  std::set<std::string> seen;
  for (const auto& f : files) {
    if (!f.is_object() || !f.value("name", Json()).is_string() ||
        !f.value("size", Json()).is_number_unsigned()) {
      throw Error("the guest helper's checkpoint lists an image without a name or a size");
    }
    Image img{f["name"], f["size"], {}, {}};
    if (!valid_image_name(img.name) || !seen.insert(img.name).second || img.size > k_max_image_bytes) {
      throw Error("the guest helper's checkpoint lists an invalid image \"" + img.name + "\"");
    }
    out.push_back(std::move(img));
  }
  if (!seen.count("inventory.img")) {
    throw Error("the guest helper's checkpoint has no inventory.img: it is not a CRIU image directory");
  }
  return out;
}

Fd temp_file(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) {
    throw_errno("cannot create a temporary file in " + dir);
  }
  return fd;
}

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw_errno("writing " + what + " failed");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// What happens to the container in the guest when a save ends, however it ends: its images
// are removed from the guest's memory, and a held container is stopped (the checkpoint is
// stored) or let go as it was (it is not).
class GuestCheckpoint {
public:
  GuestCheckpoint(GuestSession& s, std::string id) : m_s(s), m_id(std::move(id)) {}
  ~GuestCheckpoint() {
    try {
      if (m_held) {
        m_s.channel().execute("kata-snapshot-container-finish", {{"id", m_id}, {"action", "resume"}});
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kata-snapshot: warning: container %s: %s (the helper thaws it within %lld s)\n",
                   m_id.c_str(), e.what(), static_cast<long long>(k_hold.count()));
    }
    discard();
  }
  GuestCheckpoint(const GuestCheckpoint&) = delete;
  GuestCheckpoint& operator=(const GuestCheckpoint&) = delete;

  void held() { m_held = true; }
  void stop() {
    m_held = false;
    run_guest(m_s, "stopping container " + m_id + " after its checkpoint", "kata-snapshot-container-finish",
              {{"id", m_id}, {"action", "kill"}}, Millis(10000));
  }
  void discard() noexcept {
    try {
      m_s.channel().execute("kata-snapshot-container-discard", {{"id", m_id}});
    } catch (const std::exception&) {
      // The images stay on the guest's tmpfs until the next checkpoint of this container.
    }
  }

private:
  GuestSession& m_s;
  std::string m_id;
  bool m_held = false;
};

Json config_dump(const std::string& id, const Json& spec, const std::string& when) {
  Json ann = spec.value("annotations", Json::object());
  auto annotation = [&](const char* key, const std::string& fallback) {
    return ann.is_object() && ann.value(key, Json()).is_string() ? ann[key].get<std::string>() : fallback;
  };
  return {{"id", id},
          {"name", annotation("io.kubernetes.cri.container-name", id)},
          {"rootfsImageName", annotation("io.kubernetes.cri.image-name", "")},
          {"runtime", "kata-snapshot"},
          {"createdTime", when},
          {"checkpointedTime", when}};
}

} // namespace

Json ContainerSaveResult::to_json() const {
  Json j = {{"output", output},
            {"archive_bytes", archive_bytes},
            {"image_bytes", image_bytes},
            {"images", images},
            {"seconds", seconds},
            {"dump_seconds", dump_seconds},
            {"transfer_seconds", transfer_seconds},
            {"container_state", state}};
  j.update(destination);
  return j;
}

Json ContainerLoadResult::to_json() const {
  return {{"container", container},
          {"pid", pid},
          {"state", state},
          {"image_bytes", image_bytes},
          {"seconds", seconds},
          {"transfer_seconds", transfer_seconds},
          {"restore_seconds", restore_seconds}};
}

Json list_containers(const GuestTarget& target) {
  GuestSession s(target);
  return run_guest(s, "listing the guest's containers", "kata-snapshot-containers", Json::object());
}

ContainerSaveResult save_container(const ContainerSaveOptions& o) {
  auto start = Clock::now();
  check_container_id(o.container);
  std::optional<SigningKey> sign_key;
  if (!o.sign_key.empty()) {
    sign_key = SigningKey::load(o.sign_key);
  }
  GuestSession s(o.target);
  VmLock lock(s.vm().pid);
  // Killed, the save leaves no temp file behind: its watchdog, started before the output's
  // temp file exists, removes it (the VM runs throughout, so that is all it does). Declared
  // before the guard below: it stands down only once the output is committed or discarded.
  Watchdog watchdog(WatchdogPlan{.output = o.output});
  std::unique_ptr<SnapshotOutput> output =
    SnapshotOutput::open(o.output, {.overwrite = o.overwrite == Overwrite::yes,
                                    .lock_wait = o.lock_wait,
                                    .purpose = "save",
                                    .registry = o.registry});
  for (const auto& path : output->temp_paths()) {
    watchdog.also_remove(path);
  }
  struct Discard {
    SnapshotOutput* out;
    bool done = false;
    ~Discard() {
      if (!done) {
        out->discard();
      }
    }
  } unfinished{output.get()};
  throw_if_cancelled();

  // 1. CRIU dumps the container into the guest's tmpfs; it goes on running (or stays frozen
  // until it can be stopped, for --after quit).
  std::string doing = "cannot checkpoint container " + o.container;
  std::string after = o.after == AfterSave::quit ? "hold" : o.after == AfterSave::pause ? "pause" : "resume";
  GuestCheckpoint checkpoint(s, o.container);
  Json dump = run_guest(s, doing, "kata-snapshot-container-dump",
                        {{"id", o.container}, {"after", after}, {"hold_seconds", k_hold.count()}},
                        k_criu_timeout, k_criu_silence);
  if (after == "hold") {
    checkpoint.held();
  }
  fault_point("container dump");
  std::string checkpointed = utc_now();
  ContainerSaveResult r;
  r.dump_seconds = dump.value("dump_seconds", 0.0);
  std::vector<Image> images = images_of(dump);
  Json spec = dump.value("spec", Json());
  if (!spec.is_object()) {
    throw Error("the guest helper's checkpoint of " + o.container + " carries no spec");
  }

  // 2. The images to the host, each hashed on the way, one after the other into one unnamed
  // temp file (a container of many processes has thousands of images: not one fd each).
  auto transfer = Clock::now();
  FaultOnce mid_transfer("container transfer"); // once the first image bytes are in
  Fd spool = temp_file(output->temp_dir());
  uint64_t spooled = 0;
  for (auto& img : images) {
    img.offset = spooled;
    Sha256 hash;
    uint64_t got = 0;
    s.channel().download(
      "kata-snapshot-container-send", {{"id", o.container}, {"name", img.name}}, img.size,
      [&](std::string_view piece) {
        throw_if_cancelled();
        hash.update(std::span(reinterpret_cast<const std::byte*>(piece.data()), piece.size()));
        write_all(spool.get(), piece, "image " + img.name);
        got += piece.size();
        mid_transfer.reached();
      },
      k_transfer_idle);
    if (got != img.size) {
      throw Error("image " + img.name + " of " + o.container + " changed size while it was sent (" +
                  std::to_string(got) + " bytes, " + std::to_string(img.size) + " listed)");
    }
    img.sha256 = hash.hex_digest();
    r.image_bytes += img.size;
    spooled += img.size;
  }
  r.transfer_seconds = since(transfer);
  checkpoint.discard(); // the guest's memory back

  // 3. The archive: manifest, config.dump, spec.dump, checkpoint/*, stats-dump, index.
  Json manifest = {{"format", k_format_name},
                   {"format_version", k_format_version_container},
                   {"kind", k_kind_container},
                   {"created", checkpointed},
                   {"tool_version", KSNAP_VERSION},
                   {"host", describe_host()},
                   {"container",
                    {{"id", o.container},
                     {"state", dump.value("was_paused", false) ? "paused" : "running"},
                     {"images", images.size()},
                     {"image_bytes", r.image_bytes},
                     {"dump_seconds", r.dump_seconds},
                     {"engine", "criu"}}},
                   {"kata", o.kata},
                   {"labels", o.labels}};
  ArchiveWriter& w = output->start(manifest);
  auto add_text = [&](const std::string& name, const std::string& text) {
    w.add_member(name, std::span(reinterpret_cast<const std::byte*>(text.data()), text.size()),
                 sha256_hex(text));
  };
  add_text(k_config_dump_member, config_dump(o.container, spec, checkpointed).dump(2) + "\n");
  add_text(k_spec_dump_member, spec.dump(2) + "\n");
  std::vector<std::byte> buf(size_t{1} << 20);
  auto add_image = [&](const std::string& member, const Image& img) {
    throw_if_cancelled();
    w.begin_member(member, img.size, img.sha256, StreamCheck::sink);
    for (uint64_t done = 0; done < img.size;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), img.size - done));
      ssize_t n = ::pread(spool.get(), buf.data(), want, static_cast<off_t>(img.offset + done));
      if (n <= 0) {
        throw_errno("reading back image " + img.name + " failed", n < 0 ? errno : EIO);
      }
      w.write_member(std::span(buf).first(static_cast<size_t>(n)));
      done += static_cast<uint64_t>(n);
    }
  };
  const Image* stats = nullptr;
  for (const auto& img : images) {
    if (img.name == k_stats_dump_member) {
      stats = &img;
      continue;
    }
    add_image(k_checkpoint_prefix + img.name, img);
  }
  if (stats) {
    add_image(k_stats_dump_member, *stats);
  }
  ArchiveWriter::IndexSigner sign;
  if (sign_key) {
    sign = [&](const std::string& text) { return sign_key->sign(text); };
  }
  throw_if_cancelled();
  w.finish({{"container_images", images.size()}}, sign);
  output->commit();
  unfinished.done = true;
  fault_point("container commit");

  // 4. Only now, with the checkpoint stored, does --after quit stop the container.
  r.state = after == "hold" ? "stopped" : dump.value("state", "running");
  if (after == "hold") {
    checkpoint.stop();
  }
  r.images = images.size();
  r.archive_bytes = w.bytes_written();
  r.output = o.output;
  r.destination = output->describe();
  r.seconds = since(start);
  return r;
}

ContainerLoadResult load_container(const ContainerLoadOptions& o) {
  auto start = Clock::now();
  std::optional<VerifyKey> verify_key;
  if (!o.require_signature.empty()) {
    verify_key = VerifyKey::load(o.require_signature);
  }
  std::unique_ptr<ArchiveReader> reader = open_snapshot(o.input, o.registry);
  const Json& m = reader->manifest();
  if (manifest_kind(m) != k_kind_container) {
    throw Error(reader->what() + " is a whole-VM snapshot, not a container checkpoint", ExitCode::usage,
                "load it without --into: it starts a new VM");
  }
  if (reader->encrypted()) {
    throw Error(reader->what() + " is encrypted, which container checkpoints are not",
                ExitCode::archive_invalid);
  }
  std::string id = m["container"]["id"];
  check_container_id(id);
  ContainerLoadResult r;
  r.container = id;

  GuestSession s(o.target);
  VmLock lock(s.vm().pid);
  std::string doing = "cannot restore container " + id;
  // Refused before any image moves: no CRIU, no bundle for it, or it is running.
  Json list = run_guest(s, doing, "kata-snapshot-containers", Json::object());
  if (!list.is_object() || !list.value("criu", Json()).is_object()) {
    throw Error("the guest helper's container list is not understood (is it older than container mode?)");
  }
  if (const Json problems = list["criu"].value("problems", Json::array());
      problems.is_array() && !problems.empty() && problems[0].is_object()) {
    throw Error(doing + ": " + problems[0].value("problem", ""), ExitCode::failed,
                problems[0].value("fix", ""));
  }
  std::optional<Json> found;
  if (list.contains("containers") && list["containers"].is_array()) {
    for (const auto& c : list["containers"]) {
      if (c.is_object() && c.value("id", "") == id) {
        found = c;
      }
    }
  }
  if (!found) {
    throw Error(doing + ": the target VM has no container " + id, ExitCode::failed,
                "its bundle (/run/kata-containers/" + id +
                  "/config.json and rootfs) must exist there, as the runtime creates it for the container");
  }
  if (found->value("state", "") != "stopped") {
    throw Error(doing + ": it is " + found->value("state", "") + " in the target VM", ExitCode::failed,
                "stop it there first, or restore into another sandbox");
  }

  GuestCheckpoint staging(s, id);
  staging.discard(); // a clean slate
  auto transfer = Clock::now();
  FaultOnce mid_upload("container upload"); // once the first image bytes went to the guest
  bool have_inventory = false;
  for (;;) {
    throw_if_cancelled();
    if (auto name = reader->next_if(k_checkpoint_prefix)) {
      std::string image = name->substr(std::string_view(k_checkpoint_prefix).size());
      if (!valid_image_name(image)) {
        throw Error(reader->what() + ": invalid checkpoint member " + *name, ExitCode::archive_invalid);
      }
      have_inventory |= image == "inventory.img";
      uint64_t size = reader->open_entry().size;
      reader->stream_member([&](const ArchiveReader::Source& source) {
        try {
          s.channel().upload(
            "kata-snapshot-container-receive", {{"id", id}, {"name", image}, {"bytes", size}}, size,
            [&](std::span<char> buf) {
              size_t n = source(std::span(reinterpret_cast<std::byte*>(buf.data()), buf.size()));
              mid_upload.reached();
              return n;
            },
            k_transfer_idle);
        } catch (const guest::GuestRefused& e) {
          rethrow_refusal(e, doing);
        }
      });
      r.image_bytes += size;
      continue;
    }
    auto member = reader->next();
    if (!member) {
      break; // index.json read and checked against every member
    }
    reader->check_member(*member);
    if (member->name == "rootfs-diff.tar" || member->name == "deleted.files") {
      throw Error(reader->what() + " carries changes to the container's root file system (" + member->name +
                    "), which kata-snapshot does not restore",
                  ExitCode::archive_invalid);
    }
  }
  if (!have_inventory) {
    throw Error(reader->what() + " has no checkpoint/inventory.img: it holds no CRIU checkpoint",
                ExitCode::archive_invalid);
  }
  if (verify_key) {
    verify_key->check(reader->index_signature(), reader->index_text(), reader->what());
  }
  r.transfer_seconds = since(transfer);
  fault_point("container upload done");
  Json restored =
    run_guest(s, doing, "kata-snapshot-container-restore", {{"id", id}}, k_criu_timeout, k_criu_silence);
  r.pid = restored.value("pid", 0L);
  r.state = restored.value("state", "");
  r.restore_seconds = restored.value("restore_seconds", 0.0);
  r.seconds = since(start);
  return r;
}

} // namespace ks
