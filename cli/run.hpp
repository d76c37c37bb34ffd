// The kata-snapshot command line: parses, dispatches, prints. Core code never sees argv.
#pragma once

namespace ks::cli {

int run(int argc, char** argv);

} // namespace ks::cli
