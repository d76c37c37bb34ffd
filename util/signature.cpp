#include "util/signature.hpp"

#include "util/error.hpp"
#include "util/sha256.hpp"
#include "util/strings.hpp"

#include <cstdio>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <vector>

namespace ks {

namespace {

constexpr const char* k_scheme = "ed25519";

std::shared_ptr<void> own(EVP_PKEY* key) {
  return {key, [](void* k) { EVP_PKEY_free(static_cast<EVP_PKEY*>(k)); }};
}

EVP_PKEY* raw(const std::shared_ptr<void>& key) {
  return static_cast<EVP_PKEY*>(key.get());
}

// Reads a PEM key from PATH with READ (a PEM_read_* function); throws naming the file.
template <typename Read>
EVP_PKEY* read_pem(const std::string& path, Read read, const std::string& kind) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    throw Error("cannot read the " + kind + " " + path, ExitCode::usage);
  }
  EVP_PKEY* key = read(f);
  std::fclose(f);
  if (key == nullptr || EVP_PKEY_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    throw Error(path + " is not an Ed25519 " + kind + " in PEM", ExitCode::usage,
                "make one with: openssl genpkey -algorithm ed25519 -out key.pem; "
                "its public half: openssl pkey -in key.pem -pubout -out key.pub");
  }
  return key;
}

std::string key_id_of(EVP_PKEY* key) {
  unsigned char pub[32];
  size_t len = sizeof pub;
  if (EVP_PKEY_get_raw_public_key(key, pub, &len) != 1) {
    throw Error("cannot read an Ed25519 public key");
  }
  return sha256_hex(std::string(reinterpret_cast<const char*>(pub), len));
}

std::string base64(const unsigned char* data, size_t len) {
  std::string out(4 * ((len + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
  return out;
}

} // namespace

SigningKey SigningKey::load(const std::string& path) {
  SigningKey k;
  k.m_key = own(read_pem(
    path, [](std::FILE* f) { return PEM_read_PrivateKey(f, nullptr, nullptr, nullptr); }, "private key"));
  k.m_key_id = key_id_of(raw(k.m_key));
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
  return std::string(k_scheme) + " " + m_key_id + " " + base64(sig, len);
}

VerifyKey VerifyKey::load(const std::string& path) {
  VerifyKey k;
  EVP_PKEY* key = nullptr;
  try {
    key = read_pem(
      path, [](std::FILE* f) { return PEM_read_PUBKEY(f, nullptr, nullptr, nullptr); }, "public key");
  } catch (const Error&) {
    key = read_pem(
      path, [](std::FILE* f) { return PEM_read_PrivateKey(f, nullptr, nullptr, nullptr); }, "public key");
  }
  k.m_key = own(key);
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
