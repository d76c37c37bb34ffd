#include "cli/parse.hpp"

#include "util/error.hpp"

namespace ks::cli {

std::map<std::string, std::string> parse_pairs(const std::vector<std::string>& items,
                                               const std::string& option) {
  std::map<std::string, std::string> out;
  for (const auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw Error(option + " expects KEY=VALUE, got \"" + item + "\"", ExitCode::usage);
    }
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

} // namespace ks::cli
