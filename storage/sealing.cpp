#include "storage/sealing.hpp"

#include "util/error.hpp"
#include "util/fd.hpp"
#include "util/json_fields.hpp"
#include "util/sha256.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ks {

namespace {

constexpr const char* k_cipher = "aes-256-gcm";
constexpr std::string_view k_data_ad = "kata-snapshot data v1";
constexpr size_t k_nonce_size = 12;
constexpr size_t k_min_secret = 32;

std::span<const unsigned char> text_bytes(std::string_view s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

std::string_view text_of(std::span<const unsigned char> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Seals the N bytes of PLAIN under WRAP with NONCE and AD: base64 of ciphertext and tag.
template <size_t N>
std::string seal_bytes(const Key32& wrap, const Nonce12& nonce, std::string_view ad,
                       const std::array<unsigned char, N>& plain) {
  std::array<unsigned char, N + k_gcm_tag_size> out{};
  std::copy(plain.begin(), plain.end(), out.begin());
  gcm_seal(wrap, nonce, ad, std::as_writable_bytes(std::span(out).first(N)),
           std::span<unsigned char, k_gcm_tag_size>(out.data() + N, k_gcm_tag_size));
  return base64(out);
}

template <size_t N>
bool open_bytes(const Key32& wrap, const Nonce12& nonce, std::string_view ad, const std::string& value,
                std::array<unsigned char, N>& plain) {
  std::array<unsigned char, N + k_gcm_tag_size> in{};
  if (!base64_decode(value, in)) {
    return false;
  }
  if (!gcm_open(wrap, nonce, ad, std::as_writable_bytes(std::span(in).first(N)),
                std::span<const unsigned char, k_gcm_tag_size>(in.data() + N, k_gcm_tag_size))) {
    return false;
  }
  std::copy_n(in.begin(), N, plain.begin());
  return true;
}

// A symmetric key file's secret: its bytes without trailing white space (so that
// `openssl rand -hex 32 > FILE` works), at least 32 of them.
std::string read_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error("cannot read the key file " + path, ExitCode::usage);
  }
  if (st.st_size > (1 << 20)) {
    throw Error(path + " is too large for a key file", ExitCode::usage);
  }
  std::string secret;
  try {
    secret = read_file(path);
  } catch (const Error&) {
    throw Error("cannot read the key file " + path, ExitCode::usage);
  }
  while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back()))) {
    secret.pop_back();
  }
  if (secret.size() < k_min_secret) {
    throw Error(path + " holds " + std::to_string(secret.size()) + " bytes of secret, fewer than 32",
                ExitCode::usage, "make a key file with: openssl rand -hex 32 > KEY && chmod 600 KEY");
  }
  if ((st.st_mode & 077) != 0) {
    std::fprintf(stderr,
                 "kata-snapshot: warning: the key file %s can be read by other users (hint: chmod 600 %s)\n",
                 path.c_str(), path.c_str());
  }
  return secret;
}

std::string key_file_id(const std::string& secret) {
  return hex(Key32(hkdf(text_bytes(secret), "", "kata-snapshot key-file id v1"))).substr(0, 32);
}

Key32 x25519_wrap_key(const Key32& shared, const Key32& ephemeral, const Key32& recipient) {
  return hkdf(shared, std::string(text_of(ephemeral)) + std::string(text_of(recipient)),
              "kata-snapshot x25519 v1");
}

Key32 key_file_wrap_key(const std::string& secret, std::span<const unsigned char> salt) {
  return hkdf(text_bytes(secret), text_of(salt), "kata-snapshot key-file v1");
}

const Nonce12 k_zero_nonce{}; // for keys used once: a file key's wrap keys

Nonce12 position_nonce(uint64_t position) {
  Nonce12 n{};
  for (int i = 0; i < 8; ++i) {
    n[4 + i] = static_cast<unsigned char>(position >> (56 - 8 * i));
  }
  return n;
}

std::string member_ad(const std::string& id, uint64_t position, const std::string& name,
                      const std::string& sha) {
  return "kata-snapshot member v1\n" + id + "\n" + std::to_string(position) + "\n" + name + "\n" + sha;
}

void pread_exact(int fd, std::span<std::byte> buf, uint64_t offset, const std::string& what) {
  while (!buf.empty()) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error("failed to read the capture of " + what + " to encrypt it" +
                  (n < 0 ? std::string(": ") + std::strerror(errno) : std::string(": it shrank")));
    }
    buf = buf.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
}

void pwrite_exact(int fd, std::span<const std::byte> buf, uint64_t offset, const std::string& what) {
  while (!buf.empty()) {
    ssize_t n = ::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw Error("failed to write the encrypted capture of " + what + ": " +
                  (n < 0 ? std::strerror(errno) : "no space"));
    }
    buf = buf.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
}

} // namespace

bool is_encrypted(const Json& manifest) {
  return manifest.is_object() && manifest.contains("encryption") && !manifest["encryption"].is_null();
}

SnapshotKeys SnapshotKeys::derive(const Key32& file_key, const std::string& id) {
  SnapshotKeys k;
  k.id = id;
  k.wrap = hkdf(file_key, id, "kata-snapshot member keys v1");
  k.mac = hkdf(file_key, id, "kata-snapshot mac v1");
  return k;
}

std::string SnapshotKeys::mac_of(const char* what, std::string_view text) const {
  std::string data = std::string("kata-snapshot ") + what + "\n" + id + "\n";
  data.append(text);
  return hex(hmac(mac, data));
}

// A member key as sealed: the key, then 1 for a derived one, 0 for a random one.
std::string SnapshotKeys::wrap_member_key(const MemberKey& key, uint64_t position, const std::string& name,
                                          const std::string& sha256) const {
  std::array<unsigned char, 33> plain{};
  std::copy(key.key.begin(), key.key.end(), plain.begin());
  plain[32] = key.derived ? 1 : 0;
  return seal_bytes(wrap, position_nonce(position), member_ad(id, position, name, sha256), plain);
}

bool SnapshotKeys::unwrap_member_key(const std::string& value, uint64_t position, const std::string& name,
                                     const std::string& sha256, MemberKey& key) const {
  std::array<unsigned char, 33> plain{};
  if (!open_bytes(wrap, position_nonce(position), member_ad(id, position, name, sha256), value, plain) ||
      plain[32] > 1) {
    return false;
  }
  std::copy_n(plain.begin(), 32, key.key.begin());
  key.derived = plain[32] == 1;
  return true;
}

std::shared_ptr<const Sealer> Sealer::create(const EncryptionOptions& o, bool dedup) {
  auto s = std::make_shared<Sealer>();
  Key32 file_key = random_array<32>();
  std::string id = hex(random_array<16>());
  Json recipients = Json::array();
  std::vector<std::string> material; // what the dedup key derives from: the recipients
  for (const auto& path : o.recipients) {
    PemKey key = read_pem_key(path, KeyType::x25519, true);
    if (!key.pkey) {
      throw Error(path + " is not an X25519 public key in PEM", ExitCode::usage,
                  "make a key pair with: openssl genpkey -algorithm x25519 -out key.pem; "
                  "its public half: openssl pkey -in key.pem -pubout -out key.pub");
    }
    Key32 pub = raw_public_key(key);
    X25519Pair eph = x25519_generate();
    Key32 wrap = x25519_wrap_key(x25519_shared(eph.pkey, pub), eph.public_key, pub);
    recipients.push_back({{"type", "x25519"},
                          {"key_id", sha256_hex(std::string(text_of(pub)))},
                          {"ephemeral", base64(eph.public_key)},
                          {"wrapped", seal_bytes(wrap, k_zero_nonce, id, file_key)}});
    material.push_back("x25519 " + hex(pub));
  }
  for (const auto& path : o.key_files) {
    std::string secret = read_key_file(path);
    auto salt = random_array<16>();
    recipients.push_back(
      {{"type", "key-file"},
       {"key_id", key_file_id(secret)},
       {"salt", base64(salt)},
       {"wrapped", seal_bytes(key_file_wrap_key(secret, salt), k_zero_nonce, id, file_key)}});
    material.push_back("key-file " + hex(hkdf(text_bytes(secret), "", "kata-snapshot key-file dedup v1")));
  }
  KS_ASSERT(!recipients.empty());
  std::sort(material.begin(), material.end());
  std::string joined;
  for (const auto& m : material) {
    joined += m + "\n";
  }
  s->m_dedup = dedup ? hkdf(text_bytes(joined), "", "kata-snapshot dedup v1") : random_array<32>();
  s->m_header = {{"cipher", k_cipher}, {"id", id}, {"dedup", dedup}, {"recipients", recipients}};
  s->m_keys = SnapshotKeys::derive(file_key, id);
  return s;
}

MemberKey Sealer::chunk_key(const std::string& raw_hash) const {
  return {hkdf(m_dedup, "", "kata-snapshot chunk key v2\n" + raw_hash), true};
}

std::string Sealer::raw_tag(const std::string& raw_hash) const {
  return "keyed:" + hex(hmac(m_dedup, "kata-snapshot chunk tag v2\n" + raw_hash));
}

MemberKey Sealer::seal(Bytes& frame, const std::string& raw_hash) const {
  MemberKey key{};
  Nonce12 nonce{};
  size_t n = frame.size();
  if (raw_hash.empty()) {
    key.key = random_array<32>();
    nonce = random_array<12>();
  } else { // the same chunk, compressed the same, seals to the same bytes: a repository keeps one
    key = chunk_key(raw_hash);
    Key32 mac = hmac(m_dedup, std::string_view(reinterpret_cast<const char*>(frame.data()), n));
    std::copy_n(mac.begin(), nonce.size(), nonce.begin());
  }
  frame.resize(n + k_sealed_overhead);
  std::memmove(frame.data() + k_nonce_size, frame.data(), n);
  std::memcpy(frame.data(), nonce.data(), k_nonce_size);
  gcm_seal(key.key, nonce, k_data_ad, std::span(frame).subspan(k_nonce_size, n),
           std::span<unsigned char, k_gcm_tag_size>(
             reinterpret_cast<unsigned char*>(frame.data() + k_nonce_size + n), k_gcm_tag_size));
  return key;
}

MemberKey Sealer::seal_file(int fd, uint64_t& size, std::string& sha256, const std::string& what) const {
  // Everything moves k_nonce_size bytes up: each block is read before the one ahead of it is
  // written over its first bytes.
  MemberKey key{random_array<32>(), false};
  Nonce12 nonce = random_array<12>();
  constexpr size_t k_block = 1u << 20;
  Bytes cur(k_block);
  Bytes next(k_block);
  Sha256 hash;
  GcmStream gcm(key.key, nonce, k_data_ad, GcmStream::Mode::seal);
  size_t cur_n = static_cast<size_t>(std::min<uint64_t>(size, k_block));
  pread_exact(fd, std::span(cur).first(cur_n), 0, what);
  auto nonce_bytes = std::as_bytes(std::span(nonce));
  pwrite_exact(fd, nonce_bytes, 0, what);
  hash.update(nonce_bytes);
  for (uint64_t off = 0; off < size;) {
    size_t next_n = static_cast<size_t>(std::min<uint64_t>(size - off - cur_n, k_block));
    pread_exact(fd, std::span(next).first(next_n), off + cur_n, what);
    auto block = std::span(cur).first(cur_n);
    gcm.update(block);
    hash.update(block);
    pwrite_exact(fd, block, off + k_nonce_size, what);
    off += cur_n;
    std::swap(cur, next);
    cur_n = next_n;
  }
  auto tag = gcm.tag();
  pwrite_exact(fd, std::as_bytes(std::span(tag)), size + k_nonce_size, what);
  hash.update(std::as_bytes(std::span(tag)));
  size += k_sealed_overhead;
  sha256 = hash.hex_digest();
  return key;
}

DecryptKey DecryptKey::load(const std::string& path) {
  DecryptKey k;
  PemKey pem = read_pem_key(path, KeyType::x25519, false);
  if (pem.pkey) {
    k.m_x25519 = pem.pkey;
    k.m_public = raw_public_key(pem);
    k.m_key_id = sha256_hex(std::string(text_of(k.m_public)));
    return k;
  }
  std::string head;
  try {
    head = read_file(path).substr(0, 64);
  } catch (const Error&) {
    throw Error("cannot read the key file " + path, ExitCode::usage);
  }
  if (head.find("-----BEGIN") != std::string::npos) {
    throw Error(
      path + " is a PEM file but not an X25519 private key", ExitCode::usage,
      "decrypt with the private key whose public half the snapshot was encrypted to, or a key file");
  }
  k.m_secret = read_key_file(path);
  k.m_key_id = key_file_id(k.m_secret);
  return k;
}

Key32 DecryptKey::unwrap_file_key(const Json& enc, const std::string& what) const {
  auto bad = [&](const std::string& why) -> Error {
    return Error(what + " is damaged: its encryption header " + why, ExitCode::archive_invalid);
  };
  if (!enc.is_object() || json_string(enc, "cipher") != k_cipher) {
    throw bad("names no cipher this kata-snapshot knows (it knows " + std::string(k_cipher) + ")");
  }
  const Json& id = enc["id"];
  const Json& recipients = enc.value("recipients", Json());
  if (!id.is_string() || id.get<std::string>().size() != 32 || !recipients.is_array()) {
    throw bad("is malformed");
  }
  std::string ids;
  for (const auto& r : recipients) {
    if (!r.is_object()) {
      throw bad("is malformed");
    }
    std::string key_id = json_string(r, "key_id");
    ids += (ids.empty() ? "" : ", ") + key_id.substr(0, 16);
    if (key_id != m_key_id) {
      continue;
    }
    Key32 wrap{};
    std::string type = json_string(r, "type");
    if (type == "x25519" && m_x25519) {
      Key32 eph{};
      if (!base64_decode(json_string(r, "ephemeral"), eph)) {
        throw bad("is malformed");
      }
      wrap = x25519_wrap_key(x25519_shared(m_x25519, eph), eph, m_public);
    } else if (type == "key-file" && !m_secret.empty()) {
      std::array<unsigned char, 16> salt{};
      if (!base64_decode(json_string(r, "salt"), salt)) {
        throw bad("is malformed");
      }
      wrap = key_file_wrap_key(m_secret, salt);
    } else {
      continue;
    }
    Key32 file_key{};
    if (!open_bytes(wrap, k_zero_nonce, id.get<std::string>(), json_string(r, "wrapped"), file_key)) {
      throw bad("was altered: the file key sealed for key " + m_key_id.substr(0, 16) + " does not open");
    }
    return file_key;
  }
  throw Error(what + " is encrypted to key" + (recipients.size() == 1 ? " " : "s ") + ids + ", not to key " +
                m_key_id.substr(0, 16),
              ExitCode::usage, "pass --decrypt-key the private key or key file of one of its recipients");
}

Opener::Opener(const Json& encryption, const DecryptKey& key, std::string what) : m_what(std::move(what)) {
  Key32 file_key = key.unwrap_file_key(encryption, m_what);
  m_keys = SnapshotKeys::derive(file_key, encryption["id"].get<std::string>());
}

void Opener::damaged(const std::string& why) const {
  throw Error(m_what + " is damaged: " + why, ExitCode::archive_invalid);
}

void Opener::check_mac(const char* member, const std::string& value, std::string_view text) const {
  std::string want = m_keys.mac_of(member, text);
  if (value.empty()) {
    damaged(std::string(member) + " carries no MAC in an encrypted snapshot");
  }
  if (value.size() != want.size() || CRYPTO_memcmp(value.data(), want.data(), want.size()) != 0) {
    damaged(std::string(member) + " was altered: its MAC does not match");
  }
}

MemberKey Opener::member_key(const std::string& value, uint64_t position, const std::string& name,
                             const std::string& sha256) const {
  if (value.empty()) {
    damaged("member " + name + " is not sealed, in an encrypted snapshot");
  }
  MemberKey key{};
  if (!m_keys.unwrap_member_key(value, position, name, sha256, key)) {
    damaged("member " + name + " does not belong at position " + std::to_string(position) +
            " of this snapshot (swapped from another, moved or altered)");
  }
  return key;
}

void Opener::open(Bytes& data, const MemberKey& key, const std::string& name) const {
  if (data.size() < k_sealed_overhead) {
    damaged("member " + name + " is truncated (shorter than its seal)");
  }
  size_t n = data.size() - k_sealed_overhead;
  Nonce12 nonce{};
  std::memcpy(nonce.data(), data.data(), k_nonce_size);
  auto tag = std::span<const unsigned char, k_gcm_tag_size>(
    reinterpret_cast<const unsigned char*>(data.data() + k_nonce_size + n), k_gcm_tag_size);
  if (!gcm_open(key.key, nonce, k_data_ad, std::span(data).subspan(k_nonce_size, n), tag)) {
    damaged("member " + name + " does not decrypt (altered or truncated)");
  }
  std::memmove(data.data(), data.data() + k_nonce_size, n);
  data.resize(n);
}

Opener::Stream Opener::open_stream(Source source, const MemberKey& key, const std::string& name) const {
  struct State {
    Source source;
    Key32 key;
    std::optional<GcmStream> gcm;
    std::array<unsigned char, k_gcm_tag_size> tail{};
    size_t tail_n = 0;
    bool end = false;
  };
  auto st = std::make_shared<State>();
  st->source = std::move(source);
  st->key = key.key;
  auto read_exact = [st](std::span<std::byte> buf) {
    size_t got = 0;
    while (got < buf.size()) {
      size_t n = st->source(buf.subspan(got));
      if (n == 0) {
        break;
      }
      got += n;
    }
    return got;
  };
  Stream s;
  s.source = [st, read_exact](std::span<std::byte> buf) -> size_t {
    KS_ASSERT(buf.size() > k_gcm_tag_size);
    if (!st->gcm) {
      Nonce12 nonce{};
      if (read_exact(std::as_writable_bytes(std::span(nonce))) < nonce.size()) {
        st->end = true;
        return 0;
      }
      st->gcm.emplace(st->key, nonce, k_data_ad, GcmStream::Mode::open);
    }
    while (!st->end) {
      // What was held back may be data after all; the last 16 bytes seen are held back again.
      std::memcpy(buf.data(), st->tail.data(), st->tail_n);
      size_t n = st->source(buf.subspan(st->tail_n));
      if (n == 0) {
        st->end = true;
        return 0;
      }
      size_t total = st->tail_n + n;
      size_t keep = std::min(total, k_gcm_tag_size);
      std::memcpy(st->tail.data(), buf.data() + total - keep, keep);
      st->tail_n = keep;
      if (total > keep) {
        st->gcm->update(buf.first(total - keep));
        return total - keep;
      }
    }
    return 0;
  };
  s.finish = [this, st, name] {
    if (!st->end || !st->gcm || st->tail_n != k_gcm_tag_size ||
        !st->gcm->check(std::span<const unsigned char, k_gcm_tag_size>(st->tail))) {
      damaged("member " + name + " does not decrypt (altered or truncated)");
    }
  };
  return s;
}

} // namespace ks
