// Tokenizer throughput: encode (cold word cache and warm), decode, and the loop-reference BPE,
// on tinyshakespeare (../shared/data) or, when absent, the fortune files. Prints one JSON object.
// The machine's limits in the same run: OpenBLAS sgemm GFLOP/s and a triad-loop bandwidth (the
// tokenizer is a single-threaded, hash-lookup-bound workload, so its byte rate is reported as a
// fraction of the triad bandwidth only for scale).

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/data.h"
#include "gaincell/model/hf_tokenizer.h"
#include "gaincell/model/tokenizer.h"

namespace {

using gaincell::bench::Clock;

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double best_of(int repeats, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) best = std::min(best, seconds_of(fn));
  return best;
}

std::string load_corpus(std::string* name) {
  const auto shared = gaincell::shared_data_dir();
  if (!shared.empty() && std::filesystem::exists(shared / "corpus/tinyshakespeare.txt")) {
    *name = "tinyshakespeare";
    return gaincell::read_text_file(shared / "corpus/tinyshakespeare.txt");
  }
  *name = "fortunes";
  std::string text;
  for (const auto& f : gaincell::default_corpus_files()) text += gaincell::read_text_file(f);
  return text;
}

// The Hugging Face tokenizer.json files that setup.sh installs (data/tokenizers/NAME): load time
// and encode/decode rates on the same corpus, cold (fresh word cache) and warm.
nlohmann::json bench_hf_tokenizers(const std::string& text) {
  nlohmann::json out = nlohmann::json::object();
  const double mb = text.size() / 1e6;
  for (const char* name : {"llama3", "llama2", "qwen3"}) {
    const auto file = gaincell::default_data_dir() / "tokenizers" / name / "tokenizer.json";
    if (!std::filesystem::exists(file)) continue;
    gaincell::Tokenizer tok = gaincell::Tokenizer::bytes();
    const double load_s = seconds_of([&] { tok = gaincell::Tokenizer::load_hf(file); });
    std::vector<int32_t> ids;
    const double cold_s = seconds_of([&] { ids = tok.encode(text); });
    const double warm_s = best_of(2, [&] { ids = tok.encode(text); });
    std::string decoded;
    const double decode_s = best_of(2, [&] { decoded = tok.decode(ids); });
    out[name] = {{"load_s", load_s},
                 {"tokens", ids.size()},
                 {"encode_cold_mb_per_s", mb / cold_s},
                 {"encode_warm_mb_per_s", mb / warm_s},
                 {"decode_mb_per_s", mb / decode_s},
                 {"round_trip", decoded == text}};
  }
  return out;
}

}  // namespace

int main() {
  try {
    std::string corpus_name;
    const std::string text = load_corpus(&corpus_name);
    gaincell::Tokenizer tok = gaincell::Tokenizer::load_default();
    const double load_s = best_of(1, [&] { tok = gaincell::Tokenizer::load_default(); });

    std::vector<int32_t> ids;
    const double cold_s = seconds_of([&] { ids = tok.encode(text); });  // fresh word cache
    const double warm_s = best_of(3, [&] { ids = tok.encode(text); });
    std::string decoded;
    const double decode_s = best_of(3, [&] { decoded = tok.decode(ids); });
    if (decoded != text) throw gaincell::Error("round trip failed");
    size_t pieces = 0;
    const double pretokenize_s = best_of(3, [&] { pieces = gaincell::pretokenize(text).size(); });
    // The same pattern through PCRE2 (JIT), as a tokenizer.json Split pre-tokenizer runs it.
    const std::string valid_text = gaincell::sanitize_utf8(text);
    size_t pcre2_pieces = 0;
    const double pretokenize_pcre2_s = best_of(3, [&] {
      pcre2_pieces = gaincell::regex_split(gaincell::kGpt2Pattern, valid_text).size();
    });
    // Loop-reference BPE over every piece (no cache), against the fast heap version.
    const auto all_pieces = gaincell::pretokenize(text);
    size_t sink = 0;
    const double bpe_reference_s = seconds_of([&] {
      for (const auto p : all_pieces) sink += tok.bpe_word_reference(p).size();
    });
    const double bpe_fast_s = seconds_of([&] {
      for (const auto p : all_pieces) sink += tok.bpe_word(p).size();
    });

    // One long piece: the corpus's first 5,000 ASCII letters run together (no spaces), merged by
    // the O(n log n) heap version and by the loop reference (one pass per merge round).
    std::string long_piece;
    for (size_t i = 0; i < text.size() && long_piece.size() < 5000; ++i) {
      if (std::isalpha(static_cast<unsigned char>(text[i]))) long_piece += text[i];
    }
    const double long_fast_s = seconds_of([&] { sink += tok.bpe_word(long_piece).size(); });
    const double long_reference_s =
        seconds_of([&] { sink += tok.bpe_word_reference(long_piece).size(); });

    const double mb = text.size() / 1e6;
    const double triad = gaincell::bench::measure_triad_gbps(3);
    nlohmann::json out = {
        {"bench", "tokenizer"},
        {"corpus", corpus_name},
        {"bytes", text.size()},
        {"tokens", ids.size()},
        {"pieces", pieces},
        {"load_vocab_s", load_s},
        {"encode_cold_s", cold_s},
        {"encode_cold_mb_per_s", mb / cold_s},
        {"encode_cold_tokens_per_s", ids.size() / cold_s},
        {"encode_warm_s", warm_s},
        {"encode_warm_mb_per_s", mb / warm_s},
        {"encode_warm_tokens_per_s", ids.size() / warm_s},
        {"decode_mb_per_s", mb / decode_s},
        {"pretokenize_mb_per_s", mb / pretokenize_s},
        {"pretokenize_pcre2_mb_per_s", mb / pretokenize_pcre2_s},
        {"pretokenize_pcre2_pieces", pcre2_pieces},
        {"hf_tokenizers", bench_hf_tokenizers(text)},
        {"bpe_uncached_fast_s", bpe_fast_s},
        {"bpe_uncached_reference_s", bpe_reference_s},
        {"bpe_long_piece_bytes", long_piece.size()},
        {"bpe_long_piece_fast_s", long_fast_s},
        {"bpe_long_piece_reference_s", long_reference_s},
        {"machine_sgemm_gflops", gaincell::bench::measure_sgemm_gflops(3)},
        {"machine_triad_gb_per_s", triad},
        {"encode_warm_fraction_of_triad_bandwidth", mb / warm_s / 1e3 / triad},
        {"threads", 1},
        {"sink", sink % 2},
    };
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const gaincell::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
