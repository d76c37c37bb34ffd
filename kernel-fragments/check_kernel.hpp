// `check-kernel`: which options of a fragment a guest kernel's .config lacks.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ks {

enum class KernelMode { vm, criu };

struct FragmentOption {
  std::string name; // CONFIG_...
  std::string want; // y, m, n or a value
  bool required = true;
};

struct KernelCheck {
  std::vector<FragmentOption> missing;  // required and absent
  std::vector<FragmentOption> advisory; // recommended and absent
  std::vector<std::string> modules;     // wanted built in, present as a module (load it at boot)
  size_t checked = 0;
  bool ok() const { return missing.empty(); }
  nlohmann::json to_json() const;
};

// The fragment text for MODE (embedded at build time from kernel-fragments/*.conf).
const std::string& kernel_fragment(KernelMode mode);

std::vector<FragmentOption> parse_fragment(const std::string& text);

// Checks the .config text against the fragment.
KernelCheck check_kernel_config(const std::string& config, const std::vector<FragmentOption>& fragment);

} // namespace ks
