#include <map>
#include <mutex>

#include "gaincell/attention/attention.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/attention/softmax_attention.h"
#include "gaincell/core/error.h"

namespace gaincell {

KvCacheFormat parse_kv_cache_format(const std::string& name) {
  if (name == "f32") return KvCacheFormat::kF32;
  if (name == "bf16") return KvCacheFormat::kBf16;
  throw Error("unknown KV cache format '" + name + "' (expected f32 or bf16)");
}

const char* kv_cache_format_name(KvCacheFormat format) {
  return format == KvCacheFormat::kBf16 ? "bf16" : "f32";
}

std::unique_ptr<AttentionDecodeState> Attention::make_decode_state(KvCacheFormat format) const {
  if (format != KvCacheFormat::kF32 && !has_kv_cache()) {
    throw Error(std::string("a ") + kv_cache_format_name(format) +
                " KV cache was asked for, but '" + name() +
                "' attention has no KV cache (the hardware variants hold keys and values in "
                "their simulated arrays); use f32");
  }
  return new_decode_state(format);
}

namespace {

struct Entry {
  std::string help;
  AttentionFactory factory;
  AttentionHardware hardware;
};

// Built-in variants are listed here, in one place; user code may add more with
// register_attention().
void register_builtins(std::map<std::string, Entry>& r) {
  // Each variant file adds its line here.
  r["softmax"] = {"GPT-2 causal softmax attention (spec §3.3)", make_softmax_attention, {}};
  r["sliding"] = {"softmax attention over a sliding window of W tokens (spec §3.4)",
                  make_sliding_attention,
                  {}};
  for (const std::string& name : gaincell_attention_names()) {
    r[name] = {"gain-cell hardware attention, cell '" + to_string(gaincell_cell_model(name)) +
                   "' (spec §3.5, §3.6, §2.7); hardware from --hw",
               [name](const AttentionContext& ctx) { return make_gaincell_attention(name, ctx); },
               {[name] { return gaincell_default_hw(name); },
                [name](const HwConfig& hw) { return gaincell_variant_hw(name, hw); }}};
  }
}

std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  static std::once_flag once;
  std::call_once(once, [] { register_builtins(r); });
  return r;
}

const Entry& entry(const std::string& name) {
  auto& r = registry();
  auto it = r.find(name);
  if (it == r.end()) {
    std::string names;
    for (const auto& [n, e] : r) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown attention '" + name + "' (available: " + names + ")");
  }
  return it->second;
}

}  // namespace

void register_attention(const std::string& name, const std::string& help, AttentionFactory f,
                        AttentionHardware hardware) {
  registry()[name] = {help, std::move(f), std::move(hardware)};
}

std::unique_ptr<Attention> make_attention(const std::string& name, const AttentionContext& ctx) {
  return entry(name).factory(ctx);
}

bool attention_uses_hardware(const std::string& name) {
  return static_cast<bool>(entry(name).hardware.default_hw);
}

std::optional<HwConfig> attention_default_hardware(const std::string& name) {
  const Entry& e = entry(name);
  if (!e.hardware.default_hw) return std::nullopt;
  return e.hardware.default_hw();
}

HwConfig attention_hardware(const std::string& name, const HwConfig& hw) {
  const Entry& e = entry(name);
  return e.hardware.resolve ? e.hardware.resolve(hw) : hw;
}

std::vector<std::string> attention_names() {
  std::vector<std::string> names;
  for (const auto& [n, e] : registry()) names.push_back(n);
  return names;
}

std::string attention_help(const std::string& name) {
  auto& r = registry();
  auto it = r.find(name);
  return it == r.end() ? std::string() : it->second.help;
}

}  // namespace gaincell
