// Freezing the guest's filesystems around a save, through the helper, and always thawing.
#pragma once

#include "guest-helper/channel.hpp"
#include "snapshot/qemu_argv.hpp"

#include <chrono>
#include <optional>

namespace ks {

enum class QuiescePolicy { automatic, required, off };

class Quiescer {
public:
  Quiescer(QuiescePolicy policy, std::chrono::seconds auto_thaw) : m_policy(policy), m_auto_thaw(auto_thaw) {}
  ~Quiescer() { thaw(); }
  Quiescer(const Quiescer&) = delete;
  Quiescer& operator=(const Quiescer&) = delete;

  // Syncs and freezes through the helper on ARGV's helper port. With `automatic`, a VM whose
  // helper is absent or silent is saved unquiesced (recorded); with `required` that is an error.
  void freeze(const QemuArgv& argv);
  // Thaws if frozen; never throws (a failure is reported on stderr: the guest auto-thaws).
  void thaw() noexcept;

  bool frozen() const { return m_frozen; }
  // No freeze, for WHY (recorded in the manifest).
  void not_needed(std::string why) { m_skipped_because = std::move(why); }
  // The VM is gone (--after quit): there is nothing left to thaw.
  void forget() { m_frozen = false; }

  // What happened, for the manifest.

  nlohmann::json describe() const;

private:
  void skip(const std::string& why);

  QuiescePolicy m_policy;
  std::chrono::seconds m_auto_thaw;
  std::optional<guest::Channel> m_channel;
  bool m_frozen = false;
  int m_filesystems = 0;
  std::string m_skipped_because;
};

} // namespace ks
