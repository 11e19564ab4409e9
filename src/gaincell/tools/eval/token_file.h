// Pre-tokenised input for models without a shipped tokenizer (`--tokens FILE` of perplexity and
// eval): a JSON object {"ids": [...]}, or a flat little-endian array of uint16 (nanoGPT's .bin,
// what `gaincell prepare` writes) or uint32 token ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace gaincell::eval {

enum class TokenFileFormat { kAuto, kUint16, kUint32 };

// "auto" (JSON when the file starts with '{', else uint16), "uint16", "uint32"; throws otherwise.
TokenFileFormat parse_token_file_format(const std::string& name);

// Reads the ids; throws gaincell::Error naming the file for a malformed JSON, a size that is not a
// multiple of the id width, an empty file, a negative id or one >= vocab_size (when > 0).
std::vector<int32_t> read_token_file(const std::filesystem::path& file,
                                     TokenFileFormat format = TokenFileFormat::kAuto,
                                     int32_t vocab_size = 0);

}  // namespace gaincell::eval
