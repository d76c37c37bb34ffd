// Reading fields of JSON that comes from outside (archives, repositories, registries): a field
// of the wrong type is a refusal with our own message and exit code, never nlohmann's
// type_error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace ks {

// Field KEY of J, read as JSON from outside must be: a string (else ""), an unsigned number
// (else FALLBACK), an object (else {}). A field of another type, or a J that is no object,
// is as good as a missing one, for the check that follows to name; nlohmann's value() would
// throw its own type error instead.
std::string json_string(const nlohmann::json& j, const std::string& key);
uint64_t json_unsigned(const nlohmann::json& j, const std::string& key, uint64_t fallback);
nlohmann::json json_object(const nlohmann::json& j, const std::string& key);

// What nlohmann says of hostile JSON it could not read as asked ("type must be string, but
// is object"), without its "[json.exception.type_error.302] " prefix: for messages.
std::string json_problem(const nlohmann::json::exception& e);

} // namespace ks
