#include "util/json_fields.hpp"

namespace ks {

using Json = nlohmann::json;

std::string json_string(const Json& j, const std::string& key) {
  auto it = j.is_object() ? j.find(key) : j.end();
  return j.is_object() && it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t json_unsigned(const Json& j, const std::string& key, uint64_t fallback) {
  auto it = j.is_object() ? j.find(key) : j.end();
  return j.is_object() && it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : fallback;
}

Json json_object(const Json& j, const std::string& key) {
  auto it = j.is_object() ? j.find(key) : j.end();
  return j.is_object() && it != j.end() && it->is_object() ? *it : Json::object();
}

std::string json_problem(const Json::exception& e) {
  std::string text = e.what();
  auto close = text.find("] ");
  return text.starts_with("[json.exception.") && close != std::string::npos ? text.substr(close + 2) : text;
}

} // namespace ks
