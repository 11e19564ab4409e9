// Pre-tokenised input for models without a shipped tokenizer (`--tokens FILE` of perplexity and
// eval): a JSON object {"ids": [...]}, a flat little-endian array of uint16 (nanoGPT's .bin, what
// `gaincell prepare` writes for vocabularies up to 65536) or uint32 token ids, or prepare's uint32
// file with its GCTOKENS header (model/data.h), recognised by its magic in every format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace gaincell::eval {

enum class TokenFileFormat { kAuto, kUint16, kUint32 };

// "auto" (JSON when the file starts with '{', the header's width when it starts with GCTOKENS,
// else uint16), "uint16", "uint32"; throws otherwise.
TokenFileFormat parse_token_file_format(const std::string& name);

// Reads the ids; throws gaincell::Error naming the file for a malformed JSON, a size that is not a
// multiple of the id width, an empty file, a negative id or one >= vocab_size (when > 0).
std::vector<int32_t> read_token_file(const std::filesystem::path& file,
                                     TokenFileFormat format = TokenFileFormat::kAuto,
                                     int32_t vocab_size = 0);

}  // namespace gaincell::eval
