// kata-snapshot save (--qmp SOCKET) -o OUT|- [options]
#include "snapshot/save.hpp"
#include "cli/common.hpp"
#include "cli/parse.hpp"
#include "snapshot/container.hpp"
#include "snapshot/kata.hpp"
#include "util/strings.hpp"

#include <cmath>

namespace ks::cli {

namespace {

std::string milliseconds(double seconds) {
  return std::to_string(std::lround(seconds * 1000)) + " ms";
}

struct SaveArgs {
  SaveOptions o;
  std::string mode = "auto";
  std::string vmstate = "auto";
  std::string after = "resume";
  std::string quiesce = "auto";
  std::vector<std::string> shares;
  std::vector<std::string> labels;
  bool force = false;
  size_t chunk_mib = 0;
  uint64_t max_transfer_mib = 0;
  std::string sandbox;
  std::string kata_root = "/";
  std::string container;
  CLI::App* cmd = nullptr;
};

// save --container: one container's CRIU checkpoint (snapshot/container.hpp).
int run_container_save(SaveArgs& a, const GlobalOptions& g) {
  for (const char* vm_only :
       {"--mode", "--max-downtime", "--max-transfer", "--vmstate", "--quiesce", "--share", "--compress-level",
        "--threads", "--chunk-size", "--encrypt-recipient", "--encrypt-key-file"}) {
    if (a.cmd->count(vm_only) > 0) {
      throw Error(std::string(vm_only) + " applies to whole-VM snapshots, not to --container",
                  ExitCode::usage);
    }
  }
  ContainerSaveOptions o;
  o.target = {a.o.qmp_socket};
  o.container = a.container;
  o.output = a.o.output;
  o.registry = a.o.registry;
  o.after = a.o.after;
  o.labels = a.o.labels;
  o.kata = a.o.kata;
  o.sign_key = a.o.sign_key;
  o.overwrite = a.o.overwrite;
  o.lock_wait = a.o.lock_wait;
  ContainerSaveResult r = save_container(o);
  std::string where = r.output == "-" ? std::string("to stdout") : r.destination.value("output", r.output);
  std::string human = "checkpointed container " + a.container + " " + where + ": " +
                      human_size(r.archive_bytes) + " (" + std::to_string(r.images) + " CRIU images) in " +
                      std::to_string(r.seconds).substr(0, 4) + " s; container " + r.state;
  if (r.output == "-") {
    if (!g.quiet) {
      note(g, human);
    }
    return 0;
  }
  print_result(g, r.to_json(), g.quiet ? "" : human);
  return 0;
}

int run_save(SaveArgs& a, const GlobalOptions& g) {
  if (a.o.qmp_socket.empty() && !a.sandbox.empty()) {
    Sandbox s = find_sandbox(a.sandbox, a.kata_root);
    a.o.qmp_socket = s.qmp;
    a.o.kata = sandbox_record(s, a.kata_root);
  } else {
    a.o.qmp_socket = resolve_qmp(a.o.qmp_socket, a.sandbox, a.kata_root); // the usage error
  }

  a.o.after = a.after == "pause" ? AfterSave::pause : a.after == "quit" ? AfterSave::quit : AfterSave::resume;
  a.o.labels = parse_pairs(a.labels, "--label");
  a.o.overwrite = a.force ? Overwrite::yes : Overwrite::no;
  if (!a.container.empty()) {
    return run_container_save(a, g);
  }
  a.o.mode = a.mode == "live" ? SaveMode::live : a.mode == "stop" ? SaveMode::stop : SaveMode::automatic;
  a.o.layout = a.vmstate == "mapped-ram"   ? VmstateLayout::mapped_ram
               : a.vmstate == "shared-ram" ? VmstateLayout::shared_ram
               : a.vmstate == "multifd"    ? VmstateLayout::multifd
               : a.vmstate == "stream"     ? VmstateLayout::stream
                                           : VmstateLayout::automatic;
  a.o.quiesce = a.quiesce == "required" ? QuiescePolicy::required
                : a.quiesce == "off"    ? QuiescePolicy::off
                                        : QuiescePolicy::automatic;
  a.o.share_policy = parse_pairs(a.shares, "--share");
  for (const auto& [tag, policy] : a.o.share_policy) {
    if (policy != "full" && policy != "none") {
      throw Error("--share " + tag + "=" + policy + ": the policy must be full or none", ExitCode::usage);
    }
  }
  a.o.chunk_size = a.chunk_mib << 20;
  a.o.live_limits.max_bytes = a.max_transfer_mib << 20;
  a.o.progress = !g.quiet && !g.json;
  a.o.quiet = g.quiet;
  a.o.verbose = g.verbose;
  SaveResult r = save(a.o);
  nlohmann::json j = {
    {"output", r.output},
    {"archive_bytes", r.archive_bytes},
    {"stored_bytes", r.stored_bytes},
    {"vmstate_bytes", r.vmstate_bytes},
    {"chunks", r.chunks},
    {"seconds", r.seconds},
    {"quiesce", r.quiesce},
    {"vm_state", r.vm_state},
    {"vm_paused_seconds", r.vm_paused_seconds ? nlohmann::json(*r.vm_paused_seconds) : nullptr},
    {"mode", r.mode},
    {"live", r.live}};
  j.update(r.destination);
  std::string where = r.output == "-" ? std::string("to stdout") : r.destination.value("output", r.output);
  if (r.destination.contains("digest")) {
    where += " (" + r.destination.value("digest", "") + ")";
  }
  std::string stored = r.destination.contains("digest")
                         ? ", " + human_size(r.stored_bytes) + " of it already stored"
                         : std::string();
  std::string human =
    "saved " + where + ": " + human_size(r.archive_bytes) + stored + " (" + human_size(r.vmstate_bytes) +
    " of VM state) in " + std::to_string(r.seconds).substr(0, 4) + " s; VM " + r.vm_state +
    (r.vm_paused_seconds ? " (paused for " + milliseconds(*r.vm_paused_seconds) + ")" : std::string()) +
    (r.mode == "live" ? "; live save, instant " + r.live.value("instant", std::string()) : std::string());

  if (r.output == "-") {
    if (!g.quiet) {
      note(g, human); // stdout carries the archive
    }
    return 0;
  }
  print_result(g, j, g.quiet ? "" : human);
  return 0;
}

} // namespace

void add_save(CLI::App& app, Registry& reg) {
  auto a = std::make_shared<SaveArgs>();
  auto* cmd = app.add_subcommand("save", "Snapshot a running VM into a .ksnap archive");
  cmd->add_option("--qmp", a->o.qmp_socket, "QMP socket of the VM");
  cmd->add_option("--sandbox", a->sandbox, "Kata sandbox id (instead of --qmp)");
  cmd->add_option("--kata-root", a->kata_root, "Prefix of Kata's /run paths (default /)");
  a->cmd = cmd;
  cmd->add_option(
    "--container", a->container,
    "Checkpoint only this container, with CRIU inside the guest (container mode: "
    "kata-snapshot containers lists them); --after quit stops it once the checkpoint is stored");
  cmd
    ->add_option(
      "-o,--output", a->o.output,
      "Where the snapshot goes: a .ksnap FILE, - for stdout, oci:DIR[:TAG] (a repository) or "
      "docker://HOST/REPO[:TAG] (a registry); without a tag, the UTC time such as 20261127T020000Z")
    ->required();
  cmd
    ->add_option("--mode", a->mode,
                 "live (the guest runs while QEMU pre-copies its memory; it stops only for the final "
                 "switchover, the snapshot instant), stop (paused for the whole save), or auto (default: "
                 "live where possible, else stop with a notice)")
    ->check(CLI::IsMember({"auto", "stop", "live"}));
  cmd
    ->add_option("--max-downtime", a->o.live_limits.max_downtime_ms,
                 "Live mode: the longest final stop QEMU may plan for, in ms (default 20)")
    ->check(CLI::Range(1, 60000));
  cmd
    ->add_option("--max-transfer", a->max_transfer_mib,
                 "Live mode: give up once QEMU has sent this many MiB, passes included (default: 3 x RAM "
                 "+ 1 GiB)")
    ->check(CLI::Range(1, 1 << 30));
  cmd
    ->add_option("--vmstate", a->vmstate,
                 "VM state layout: auto (default: multifd where QEMU has it, else stream; into a "
                 "repository, shared-ram in stop mode where the VM allows it, else mapped-ram), multifd "
                 "(several connections, loaded in parallel), stream (one pipe; archive format 1, which "
                 "every kata-snapshot reads), mapped-ram (shorter pause, staged in memory) or shared-ram "
                 "(stop mode; RAM in shared memory-backend-file objects read in place, as in Kata)")
    ->check(CLI::IsMember({"auto", "multifd", "stream", "mapped-ram", "shared-ram"}));

  cmd
    ->add_option("--after", a->after, "What the VM does after the save: resume|pause|quit")

    ->check(CLI::IsMember({"resume", "pause", "quit"}));
  cmd->add_option("--quiesce", a->quiesce, "Freeze guest filesystems via the helper: auto|required|off")
    ->check(CLI::IsMember({"auto", "required", "off"}));
  cmd->add_option("--share", a->shares, "TAG=full|none: capture of a virtio-fs share (default full)");
  cmd->add_option("--compress-level", a->o.compress_level, "zstd level (default 1)")
    ->check(CLI::Range(-7, 19));
  cmd->add_option(
    "--threads", a->o.threads,
    "Compression workers (default: every core but one; every core for mapped-ram and shared-ram); "
    "with multifd also the channel count (default: every core, 2 to 8)");

  cmd
    ->add_option("--chunk-size", a->chunk_mib,
                 "vmstate chunk size in MiB (default 8; into an oci: repository 1, more above 4 GiB of RAM)")
    ->check(CLI::Range(1, 256));
  cmd->add_option("--label", a->labels, "KEY=VALUE recorded in the manifest");
  cmd->add_option(
    "--sign-key", a->o.sign_key,
    "Sign the snapshot with this Ed25519 private key (PEM; openssl genpkey -algorithm ed25519)");
  cmd->add_option("--encrypt-recipient", a->o.encryption.recipients,
                  "Encrypt the snapshot to this X25519 public key (PEM; openssl genpkey -algorithm x25519, "
                  "then openssl pkey -pubout): this host need not be able to decrypt it. Repeatable");
  cmd->add_option("--encrypt-key-file", a->o.encryption.key_files,
                  "Encrypt the snapshot with this symmetric key file (32 bytes or more of secret; "
                  "openssl rand -hex 32). Repeatable");
  cmd->add_flag("--force", a->force, "Overwrite an existing archive, or replace a repository's tag");
  add_lock_wait_option(*cmd, a->o.lock_wait);
  add_registry_options(*cmd, a->o.registry);
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] { reg.action = [&reg, a] { return run_save(*a, reg.global); }; });
}

} // namespace ks::cli
