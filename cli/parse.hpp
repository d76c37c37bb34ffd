// Parsing helpers for option values shared by subcommands.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ks::cli {

// ["a=b", "c=d"] -> {a: b, c: d}; throws a usage Error naming OPTION on a malformed item.
std::map<std::string, std::string> parse_pairs(const std::vector<std::string>& items,
                                               const std::string& option);

} // namespace ks::cli
