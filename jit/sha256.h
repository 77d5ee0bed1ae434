// SHA-256 (FIPS 180-4), used to name entries of the on-disk compile cache.
//
// The cache is content-addressed: two sources that hash alike would share a
// cubin, so the key must be a cryptographic hash, not absl::Hash (which is
// seeded per process) or a 64-bit checksum.
//
// Example:
//   Sha256 h;
//   h.Update("source bytes");
//   std::string key = h.HexDigest();  // 64 lowercase hex characters
#ifndef GROSR_JIT_SHA256_H_
#define GROSR_JIT_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace grosr {

class Sha256 {
 public:
  Sha256();

  // Appends bytes to the message.
  void Update(absl::string_view bytes);
  // Appends a length-prefixed field, so that ("ab","c") and ("a","bc") differ.
  void UpdateField(absl::string_view bytes);

  // Finishes the hash. The object must not be updated afterwards.
  std::array<uint8_t, 32> Digest();
  std::string HexDigest();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// One-shot helper: hex SHA-256 of `bytes`.
std::string Sha256Hex(absl::string_view bytes);

}  // namespace grosr

#endif  // GROSR_JIT_SHA256_H_
