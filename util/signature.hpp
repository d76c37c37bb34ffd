// Ed25519 signatures of a snapshot's index.json (save --sign-key, verify --key,
// load --require-signature). index.json lists the SHA-256 of the manifest and of every
// member, in order, and every reader checks each member against it: signing its exact bytes
// signs the whole snapshot. Keys are PEM files as `openssl genpkey -algorithm ed25519` and
// `openssl pkey -pubout` write them. The signature travels in index.json's tar header (or
// its layer's annotation in a repository) as "ed25519 KEY_ID BASE64", KEY_ID being the
// SHA-256 of the raw 32-byte public key.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace ks {

class SigningKey {
public:
  // Reads a PEM private key; throws a usage Error naming the file when it is not Ed25519.
  static SigningKey load(const std::string& path);
  // The value to store with TEXT.
  std::string sign(std::string_view text) const;
  const std::string& key_id() const { return m_key_id; }

private:
  std::shared_ptr<void> m_key; // EVP_PKEY
  std::string m_key_id;
};

class VerifyKey {
public:
  // Reads a PEM public key (or a private key, whose public half is used).
  static VerifyKey load(const std::string& path);
  // Throws an Error (exit 3) naming WHAT unless VALUE is this key's signature of TEXT.
  void check(const std::string& value, std::string_view text, const std::string& what) const;
  const std::string& key_id() const { return m_key_id; }

private:
  std::shared_ptr<void> m_key;
  std::string m_key_id;
};

// The key id a signature value names ("" when VALUE is not one).
std::string signature_key_id(const std::string& value);

} // namespace ks
