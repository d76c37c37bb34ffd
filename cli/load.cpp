// kata-snapshot load ARCHIVE|- [options]   (alias: restore)
#include "snapshot/load.hpp"
#include "cli/common.hpp"
#include "cli/parse.hpp"
#include "snapshot/container.hpp"
#include "snapshot/kata.hpp"
#include "util/strings.hpp"

namespace ks::cli {

namespace {

struct LoadArgs {
  LoadOptions o;
  std::vector<std::string> share_dirs;
  bool into = false;
  std::string kata_root = "/";
  CLI::App* cmd = nullptr;
};

// load --into: a container checkpoint restored into a running VM (snapshot/container.hpp).
int run_load_into(LoadArgs& a, const GlobalOptions& g) {
  for (const char* vm_only : {"--run-dir", "--share-dir", "--paused", "--decrypt-key", "--netns", "--qemu",
                              "--virtiofsd", "--threads", "--force"}) {
    if (a.cmd->count(vm_only) > 0) {
      throw Error(std::string(vm_only) + " applies to whole-VM loads, not to --into", ExitCode::usage);
    }
  }
  ContainerLoadOptions o;
  o.input = a.o.archive;
  o.registry = a.o.registry;
  o.require_signature = a.o.require_signature;
  o.target = {resolve_qmp(a.o.qmp_socket, a.o.name, a.kata_root)};
  ContainerLoadResult r = load_container(o);
  std::string human = "restored container " + r.container + " (" + human_size(r.image_bytes) +
                      " of CRIU images): " + r.state + ", init pid " + std::to_string(r.pid) +
                      " in the guest, in " + std::to_string(r.seconds).substr(0, 4) + " s";
  print_result(g, r.to_json(), g.quiet ? "" : human);
  return 0;
}

int run_load(LoadArgs& a, const GlobalOptions& g) {
  if (a.into) {
    return run_load_into(a, g);
  }
  if (a.cmd->count("--kata-root") > 0) {
    throw Error("--kata-root only names the target sandbox of --into", ExitCode::usage);
  }
  a.o.share_dirs = parse_pairs(a.share_dirs, "--share-dir");
  a.o.progress = !g.quiet && !g.json;
  a.o.verbose = g.verbose;
  LoadResult r = load(a.o);
  std::string human =
    "restored VM: QEMU pid " + std::to_string(r.qemu_pid) + ", " + r.status + ", QMP " + r.qmp;
  if (g.verbose) {
    human += "\nguest refresh: " + r.guest.dump();
  }
  print_result(g, r.to_json(), g.quiet ? "" : human);
  return 0;
}

} // namespace

void add_load(CLI::App& app, Registry& reg) {
  auto a = std::make_shared<LoadArgs>();
  auto* cmd =
    app.add_subcommand("load", "Start a VM from a .ksnap archive (it keeps running after this exits)");
  cmd->alias("restore");
  a->cmd = cmd;
  cmd->add_flag("--into", a->into,
                "Restore a container checkpoint (save --container) into the running VM named by --sandbox "
                "ID or --qmp SOCKET, instead of starting a VM");
  cmd->add_option("--kata-root", a->kata_root, "With --into: prefix of Kata's /run paths (default /)");
  cmd->add_option("archive", a->o.archive, k_snapshot_help)->required();
  add_registry_options(*cmd, a->o.registry);
  cmd->add_option("--run-dir", a->o.run_dir, "Directory for the new QMP socket, pid file, sockets and logs");
  cmd->add_option(
    "--qmp", a->o.qmp_socket,
    "QMP socket path of the restored VM (default RUN_DIR/qmp.sock); with --into, of the target VM");
  cmd->add_option("--share-dir", a->share_dirs, "TAG=DIR: restore a virtio-fs share into DIR");
  cmd->add_flag("--paused", a->o.paused, "Leave the VM paused (resume with QMP cont)");
  cmd->add_option(
    "--sandbox", a->o.name,
    "Name the restored VM as Kata sandbox ID (-name sandbox-ID); with --into, the target sandbox");
  cmd->add_option("--require-signature", a->o.require_signature,
                  "Refuse, before QEMU starts, a snapshot not signed by this Ed25519 public key (PEM)");
  cmd->add_option("--decrypt-key", a->o.decrypt_key,
                  "Open an encrypted snapshot with this X25519 private key (PEM) or key file; its seals are "
                  "checked before QEMU starts (as they arrive, from stdin)");
  cmd->add_option("--netns", a->o.netns,
                  "Network namespace (name or path) to re-create taps in and run QEMU in");
  cmd->add_option("--qemu", a->o.qemu, "QEMU binary (default: the recorded one, or qemu-system-x86_64)");
  cmd->add_option("--virtiofsd", a->o.virtiofsd, "virtiofsd binary (default: the recorded one)");
  cmd->add_option(
    "--threads", a->o.threads,
    "Decompression workers (default: every core but one; every core for mapped-ram and shared-ram; "
    "multifd archives use one per channel)");

  cmd->add_flag("--force", a->o.force, "Restore shares into non-empty directories");
  add_output_flags(*cmd, reg.global);
  cmd->callback([&reg, a] { reg.action = [&reg, a] { return run_load(*a, reg.global); }; });
}

} // namespace ks::cli
