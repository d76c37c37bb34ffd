#include "util/signature.hpp"

#include "util/crypto.hpp"
#include "util/error.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

#include <openssl/evp.h>
#include <vector>

namespace ks {

namespace {

constexpr const char* k_scheme = "ed25519";

EVP_PKEY* raw(const std::shared_ptr<void>& key) {
  return static_cast<EVP_PKEY*>(key.get());
}

// Reads an Ed25519 PEM key (PUBLIC_OK: a public one too); throws naming the file.
PemKey read_ed25519(const std::string& path, bool public_ok, const std::string& kind) {
  PemKey key = read_pem_key(path, KeyType::ed25519, public_ok);
  if (!key.pkey) {
    throw Error(path + " is not an Ed25519 " + kind + " in PEM", ExitCode::usage,
                "make one with: openssl genpkey -algorithm ed25519 -out key.pem; "
                "its public half: openssl pkey -in key.pem -pubout -out key.pub");
  }
  return key;
}

std::string key_id_of(const PemKey& key) {
  Key32 pub = raw_public_key(key);
  return sha256_hex(std::string(reinterpret_cast<const char*>(pub.data()), pub.size()));
}

} // namespace

SigningKey SigningKey::load(const std::string& path) {
  PemKey key = read_ed25519(path, false, "private key");
  SigningKey k;
  k.m_key = key.pkey;
  k.m_key_id = key_id_of(key);
  return k;
}

std::string SigningKey::sign(std::string_view text) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char sig[64];
  size_t len = sizeof sig;
  bool ok =
    ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, raw(m_key)) == 1 &&
    EVP_DigestSign(ctx, sig, &len, reinterpret_cast<const unsigned char*>(text.data()), text.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    throw Error("failed to sign the snapshot's index");
  }
  return std::string(k_scheme) + " " + m_key_id + " " + base64(std::span<const unsigned char>(sig, len));
}

VerifyKey VerifyKey::load(const std::string& path) {
  PemKey key = read_ed25519(path, true, "public key");
  VerifyKey k;
  k.m_key = key.pkey;
  k.m_key_id = key_id_of(key);
  return k;
}

std::string signature_key_id(const std::string& value) {
  std::vector<std::string> parts = split(value, ' ');
  return parts.size() == 3 && parts[0] == k_scheme ? parts[1] : std::string();
}

void VerifyKey::check(const std::string& value, std::string_view text, const std::string& what) const {
  if (value.empty()) {
    throw Error(what + " is not signed, and a signature by key " + m_key_id.substr(0, 16) + " is required",
                ExitCode::archive_invalid, "sign snapshots with save --sign-key");
  }
  std::vector<std::string> parts = split(value, ' ');
  if (parts.size() != 3 || parts[0] != k_scheme || parts[2].size() != 88) {
    throw Error(what + " has a malformed signature", ExitCode::archive_invalid);
  }
  if (parts[1] != m_key_id) {
    throw Error(what + " is signed by key " + parts[1].substr(0, 16) + ", not by " + m_key_id.substr(0, 16),
                ExitCode::archive_invalid);
  }
  unsigned char sig[66];
  if (EVP_DecodeBlock(sig, reinterpret_cast<const unsigned char*>(parts[2].data()), 88) != 66) {
    throw Error(what + " has a malformed signature", ExitCode::archive_invalid);
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok =
    ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, raw(m_key)) == 1 &&
    EVP_DigestVerify(ctx, sig, 64, reinterpret_cast<const unsigned char*>(text.data()), text.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    throw Error(what + ": its signature does not match its contents (altered after signing)",
                ExitCode::archive_invalid);
  }
}

} // namespace ks
