#include <map>
#include <mutex>

#include "gaincell/attention/attention.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/attention/softmax_attention.h"
#include "gaincell/core/error.h"

namespace gaincell {

namespace {

struct Entry {
  std::string help;
  AttentionFactory factory;
};

// Built-in variants are listed here, in one place; user code may add more with
// register_attention().
void register_builtins(std::map<std::string, Entry>& r) {
  // Each variant file adds its line here.
  r["softmax"] = {"GPT-2 causal softmax attention (spec §3.3)", make_softmax_attention};
  r["sliding"] = {"softmax attention over a sliding window of W tokens (spec §3.4)",
                  make_sliding_attention};
  for (const std::string& name : gaincell_attention_names()) {
    r[name] = {"gain-cell hardware attention, cell '" + to_string(gaincell_cell_model(name)) +
                   "' (spec §3.5, §3.6, §2.7); hardware from --hw",
               [name](const AttentionContext& ctx) { return make_gaincell_attention(name, ctx); }};
  }
}

std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  static std::once_flag once;
  std::call_once(once, [] { register_builtins(r); });
  return r;
}

}  // namespace

void register_attention(const std::string& name, const std::string& help, AttentionFactory f) {
  registry()[name] = {help, std::move(f)};
}

std::unique_ptr<Attention> make_attention(const std::string& name, const AttentionContext& ctx) {
  auto& r = registry();
  auto it = r.find(name);
  if (it == r.end()) {
    std::string names;
    for (const auto& [n, e] : r) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown attention '" + name + "' (available: " + names + ")");
  }
  return it->second.factory(ctx);
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
