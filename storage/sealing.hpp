// Encrypted snapshots (save --encrypt-recipient / --encrypt-key-file, load --decrypt-key;
// docs/security.md and docs/archive-format.md). The scheme, in short:
// - A random 32-byte file key per snapshot, wrapped for each recipient in the manifest's
//   `encryption` object: an X25519 public key (an ephemeral key agreement, as age does, so a
//   cron host encrypts without being able to decrypt) or a symmetric key file.
// - Every member other than manifest.json and index.json is sealed with AES-256-GCM under
//   its own member key: nonce(12) || ciphertext || tag(16). The member key travels in the
//   member's header (`user.ksnap.key`), sealed under a key derived from the file key, with a
//   nonce made of the member's position and associated data binding the snapshot id, the
//   member's position, its name and its SHA-256: a member cannot be swapped in from another
//   snapshot, moved, replayed or cut without a check failing.
// - manifest.json and index.json stay readable (inspect and verify work without a key) and
//   carry an HMAC under a file-key-derived key in their headers (`user.ksnap.mac`).
// - Into a repository, a vmstate chunk's member key derives from a dedup key and the chunk's
//   uncompressed BLAKE3, and its lookup tag is a keyed hash of it, so unchanged chunks are
//   reused across snapshots encrypted to the same recipients (the leak this implies is in
//   docs/security.md).
#pragma once

#include "storage/manifest.hpp"
#include "storage/zstd_codec.hpp"
#include "util/crypto.hpp"

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ks {

inline constexpr size_t k_sealed_overhead = 12 + k_gcm_tag_size; // nonce + tag per member
// The format version of an encrypted snapshot: older readers refuse it instead of
// decompressing ciphertext.
inline constexpr int k_format_version_encrypted = 6;

// Who can open a snapshot: X25519 public keys (PEM) and symmetric key files.
struct EncryptionOptions {
  std::vector<std::string> recipients; // X25519 public (or private) keys, PEM
  std::vector<std::string> key_files;  // at least 32 bytes of secret each
  bool empty() const { return recipients.empty() && key_files.empty(); }
};

// A sealed member's key. A random one is used for that member only, so its AES-GCM tag
// alone authenticates the member's bytes (a reader need not hash them too); a DERIVED one
// (a repository's chunk: anyone who can compute it could seal other bytes under it) is
// backed by the member's SHA-256, which the reader must check.
struct MemberKey {
  Key32 key{};
  bool derived = false;
};

// The keys every member's seal derives from; shared by writer and reader.
struct SnapshotKeys {
  std::string id; // hex, the manifest's encryption.id
  Key32 wrap{};   // seals member keys
  Key32 mac{};    // authenticates manifest.json and index.json
  static SnapshotKeys derive(const Key32& file_key, const std::string& id);

  std::string mac_of(const char* what, std::string_view text) const; // hex
  // The sealed member key of member NAME at POSITION whose stored bytes have SHA256.
  std::string wrap_member_key(const MemberKey& key, uint64_t position, const std::string& name,
                              const std::string& sha256) const;
  // Its inverse; false when VALUE was not sealed for exactly this member of this snapshot.
  bool unwrap_member_key(const std::string& value, uint64_t position, const std::string& name,
                         const std::string& sha256, MemberKey& key) const;
};

// The writer's side.
class Sealer {
public:
  // Reads the keys (a usage Error naming a bad file); DEDUP: into a repository.
  static std::shared_ptr<const Sealer> create(const EncryptionOptions& o, bool dedup);

  const Json& header() const { return m_header; } // the manifest's "encryption"
  const SnapshotKeys& keys() const { return m_keys; }

  // Seals FRAME in place (it grows by k_sealed_overhead) and returns its member key. With
  // RAW_HASH (a repository's chunk: the uncompressed bytes' hash) the key and nonce are
  // derived, so the same chunk seals to the same bytes; otherwise both are random.
  MemberKey seal(Bytes& frame, const std::string& raw_hash) const;
  // A repository chunk: the key seal() uses for RAW_HASH, and the tag stored to find it
  // again ("keyed:" and hex), which says nothing about the bytes without the dedup key.
  MemberKey chunk_key(const std::string& raw_hash) const;
  std::string raw_tag(const std::string& raw_hash) const;
  // Seals the SIZE bytes of regular file FD in place; returns the key, sets SIZE and SHA256
  // to the sealed member's.
  MemberKey seal_file(int fd, uint64_t& size, std::string& sha256, const std::string& what) const;

private:
  Json m_header;
  SnapshotKeys m_keys;
  Key32 m_dedup{};
};

// The key a reader was given: an X25519 private key (PEM) or a symmetric key file.
class DecryptKey {
public:
  static DecryptKey load(const std::string& path);
  // The file key of the snapshot whose manifest has ENCRYPTION; throws: usage when this key
  // is not among its recipients, exit 3 when the header is malformed or altered.
  Key32 unwrap_file_key(const Json& encryption, const std::string& what) const;
  const std::string& key_id() const { return m_key_id; }

private:
  std::shared_ptr<void> m_x25519; // EVP_PKEY, or null for a key file
  Key32 m_public{};
  std::string m_secret;
  std::string m_key_id;
};

// The reader's side, once unlocked.
class Opener {
public:
  Opener(const Json& encryption, const DecryptKey& key, std::string what);

  const SnapshotKeys& keys() const { return m_keys; }
  // Throws (exit 3) unless VALUE is the HMAC of TEXT (manifest.json or index.json).
  void check_mac(const char* member, const std::string& value, std::string_view text) const;
  // The member key of a member's header; throws (exit 3) when it is missing or does not
  // belong here.
  MemberKey member_key(const std::string& value, uint64_t position, const std::string& name,
                       const std::string& sha256) const;
  // Opens sealed DATA in place (it shrinks to the plaintext); throws (exit 3) on damage.
  void open(Bytes& data, const MemberKey& key, const std::string& name) const;
  // Opens a member read in pieces from SOURCE: returns a source of its plaintext, and a
  // check to call after the last byte (throws when the tag does not match).
  using Source = std::function<size_t(std::span<std::byte>)>;
  struct Stream {
    Source source;
    std::function<void()> finish;
  };
  Stream open_stream(Source source, const MemberKey& key, const std::string& name) const;

private:
  [[noreturn]] void damaged(const std::string& why) const;
  SnapshotKeys m_keys;
  std::string m_what;
};

// Whether MANIFEST describes an encrypted snapshot.
bool is_encrypted(const Json& manifest);

} // namespace ks
