// The few system calls the helper makes besides freezing: clock and entropy.
#pragma once

#include <cstdint>
#include <string>

namespace ks::agent {

// Sets CLOCK_REALTIME to NS since the epoch; returns the correction applied (new - old).
int64_t set_clock(int64_t ns);

// Credits BYTES to the kernel's entropy pool (RNDADDENTROPY).
void add_entropy(const std::string& bytes);

// Asks the kernel to reseed its CRNG now (RNDRESEEDCRNG); false where unsupported.
bool reseed_crng();

std::string decode_base64(const std::string& text);

} // namespace ks::agent
