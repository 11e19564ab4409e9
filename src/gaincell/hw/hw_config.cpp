#include "gaincell/hw/hw_config.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include "gaincell/core/bf16.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/hw/device_file.h"
#include "gaincell/hw/technology.h"

namespace gaincell {

using nlohmann::json;

const std::array<double, 10>& paper_cell_coefficients() {
  // [CODE:modules/model_gpt.py] DRAM_MAC_temporal_encoding_surrogate_QK; spec §2.3 table.
  static const std::array<double, 10> c = {0.17393044,  0.15653739, 0.14088365, 0.12679529,
                                           5.51975209,  4.96777688, 4.4709992,  -1.44776001,
                                           -1.30298401, 46.05483778};
  return c;
}

double LeakageConfig::effective_retention_s() const {
  if (retention_time_s > 0.0) return retention_time_s;
  if (!technology.empty()) return gaincell::technology(technology).retention_time_s;
  return 0.0;
}

double LeakageConfig::effective_lambda() const {
  if (!enabled) return 0.0;
  const double tau = effective_retention_s();
  if (tau > 0.0) return time_per_token_s / tau;
  return lambda_per_token;
}

double LeakageConfig::retention_s() const {
  const double never = std::numeric_limits<double>::infinity();
  if (!enabled) return never;
  if (const double tau = effective_retention_s(); tau > 0.0) return tau;
  if (lambda_per_token == 0.0) return never;
  if (time_per_token_s <= 0.0)
    throw Error(
        "hardware config: 'leakage.time_per_token_s' is needed to turn lambda_per_token "
        "into a retention time");
  return time_per_token_s / lambda_per_token;
}

double LeakageConfig::qk_decay(double lambda, double age) const {
  const double decay = std::exp(-lambda * age);
  // Autocast computes the mask in fp32 and casts it to bf16.
  return bf16_qk_decay ? round_to_bf16(static_cast<float>(decay)) : decay;
}

bool NoiseConfig::any() const {
  return read_noise_s != 0.0 || read_noise_a != 0.0 || write_noise_kv != 0.0 ||
         gain_variation != 0.0 || leakage_variation != 0.0;
}

std::array<double, 4> HwConfig::alphas() const {
  std::array<double, 4> a{};
  int idx = 0;
  for (int i = 0; i <= 3; ++i) {
    for (int j = 0; j <= 3 - i; ++j) a[i] += coefficients[idx++] * std::pow(vin, j);
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Enum names

namespace {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

constexpr EnumName<CellModel> kCellNames[] = {{CellModel::kPolynomial, "polynomial"},
                                              {CellModel::kLinear, "linear"},
                                              {CellModel::kCubic, "x3"},
                                              {CellModel::kQuintic, "x5"},
                                              {CellModel::kSigmoid, "sigmoid"},
                                              {CellModel::kExp, "exp"}};
constexpr EnumName<OutputQuantMode> kOutModeNames[] = {{OutputQuantMode::kPerTile, "per-tile"},
                                                       {OutputQuantMode::kTileMean, "tile-mean"}};
constexpr EnumName<OutputGrid> kGridNames[] = {{OutputGrid::kCode, "code"},
                                               {OutputGrid::kCounter, "counter"}};
constexpr EnumName<Polarity> kPolarityNames[] = {{Polarity::kNormal, "normal"},
                                                 {Polarity::kInverted, "inverted"}};

template <typename E, size_t N>
std::string enum_to_string(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "?";
}

template <typename E, size_t N>
E enum_from_string(const EnumName<E> (&names)[N], const std::string& s, const std::string& field) {
  std::string allowed;
  for (const auto& n : names) {
    if (s == n.name) return n.value;
    allowed += (allowed.empty() ? "" : ", ") + std::string(n.name);
  }
  throw Error("hardware config: field '" + field + "' has unknown value '" + s +
              "' (allowed: " + allowed + ")");
}

}  // namespace

std::string to_string(CellModel m) {
  return enum_to_string(kCellNames, m);
}
std::string to_string(OutputQuantMode m) {
  return enum_to_string(kOutModeNames, m);
}
std::string to_string(OutputGrid g) {
  return enum_to_string(kGridNames, g);
}
std::string to_string(Polarity p) {
  return enum_to_string(kPolarityNames, p);
}

// ---------------------------------------------------------------------------------------------
// Presets

HwConfig HwConfig::preset(std::string_view name) {
  HwConfig c;  // defaults are the paper's nonlinear configuration
  if (name == "paper-nonlinear") {
    c.name = "paper-nonlinear";  // spec §3.6, ft_dram_gpt2.py
    c.cell = CellModel::kPolynomial;
  } else if (name == "paper-linear") {
    c.name = "paper-linear";  // spec §3.5, ft_lineardram_gpt2.py
    c.cell = CellModel::kLinear;
  } else if (name == "ideal") {
    // No quantisation, no leakage, linear cell: unnormalised HardSigmoid attention.
    c.name = "ideal";
    c.cell = CellModel::kLinear;
    c.q.enabled = c.k.enabled = c.v.enabled = c.out.enabled = false;
    c.leakage.enabled = false;
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown hardware preset '" + std::string(name) + "' (presets: " + names + ")");
  }
  return c;
}

std::vector<std::string> HwConfig::preset_names() {
  return {"paper-nonlinear", "paper-linear", "ideal"};
}

HwConfig HwConfig::load(const std::string& name_or_file) {
  for (const auto& n : preset_names())
    if (n == name_or_file) return preset(n);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(name_or_file, ec)) {
    throw Error("--hw '" + name_or_file + "' is neither a preset nor a readable JSON file");
  }
  const json j = parse_json(read_text_file(name_or_file), "hardware config '" + name_or_file + "'");
  return from_json(j, std::filesystem::path(name_or_file).parent_path().string());
}

// ---------------------------------------------------------------------------------------------
// Validation

void HwConfig::validate() const {
  auto check = [](bool ok, const std::string& field, const std::string& why) {
    if (!ok) throw Error("hardware config: field '" + field + "' " + why);
  };
  auto check_quantizer = [&](const QuantizerConfig& qc, const std::string& f) {
    check(std::isfinite(qc.vmin) && std::isfinite(qc.vmax), f + ".vmin/vmax", "must be finite");
    check(qc.vmax > qc.vmin, f + ".vmax", "must be greater than vmin");
    check(qc.levels >= 2, f + ".levels", "must be at least 2");
  };
  check_quantizer(q, "quantization.q");
  check_quantizer(k, "quantization.k");
  check_quantizer(v, "quantization.v");
  check_quantizer(out, "quantization.out");
  check(q.vmin >= 0.0, "quantization.q.vmin", "must be >= 0 (a pulse width cannot be negative)");
  check(std::isfinite(k_offset) && k_offset >= k.vmin && k_offset <= k.vmax, "k_offset",
        "must lie inside the K voltage range");
  check(std::isfinite(v_offset) && v_offset >= v.vmin && v_offset <= v.vmax, "v_offset",
        "must lie inside the V voltage range");
  for (size_t i = 0; i < coefficients.size(); ++i)
    check(std::isfinite(coefficients[i]), "cell.coefficients[" + std::to_string(i) + "]",
          "must be finite");
  check(std::isfinite(vin) && vin > 0.0, "cell.vin", "must be a positive voltage");
  if (cell == CellModel::kPolynomial) {
    // A cell whose current does not depend on the stored voltage multiplies nothing.
    const std::array<double, 4> a = alphas();
    check(a[1] != 0.0 || a[2] != 0.0 || a[3] != 0.0, "cell.coefficients",
          "give a dead polynomial cell (alpha_1..alpha_3 are all zero: the current does not "
          "depend on the stored voltage)");
  }
  check(std::isfinite(linear_amplitude) && linear_amplitude > 0.0, "cell.linear_amplitude",
        "must be positive");
  check(std::isfinite(s_sat) && s_sat > 0.0, "s_sat", "must be positive");
  check(std::isfinite(a_sat) && a_sat > 0.0, "a_sat", "must be positive");
  check(array_size >= 1 && array_size <= 4096, "array_size", "must be in [1, 4096]");
  check(window >= 1, "window", "must be at least 1");
  check(window % array_size == 0, "window", "must be a multiple of array_size");
  check(std::isfinite(tmax_s) && tmax_s > 0.0, "tmax_s", "must be positive");
  check(std::isfinite(leakage.lambda_per_token) && leakage.lambda_per_token >= 0.0,
        "leakage.lambda_per_token", "must be >= 0");
  check(std::isfinite(leakage.retention_time_s) && leakage.retention_time_s >= 0.0,
        "leakage.retention_time_s", "must be >= 0");
  check(std::isfinite(leakage.time_per_token_s) && leakage.time_per_token_s >= 0.0,
        "leakage.time_per_token_s", "must be >= 0");
  if (!leakage.technology.empty()) {
    try {
      gaincell::technology(leakage.technology);
    } catch (const Error& e) {
      check(false, "leakage.technology", std::string("is not known: ") + e.what());
    }
  }
  check(leakage.effective_retention_s() == 0.0 || leakage.time_per_token_s > 0.0,
        "leakage.time_per_token_s",
        "must be > 0 when a retention time (retention_time_s or technology) is given");
  check(leakage.refresh_interval_tokens >= 0, "leakage.refresh_interval_tokens", "must be >= 0");
  const std::pair<double, const char*> noise_fields[] = {
      {noise.read_noise_s, "noise.read_noise_s"},
      {noise.read_noise_a, "noise.read_noise_a"},
      {noise.write_noise_kv, "noise.write_noise_kv"},
      {noise.gain_variation, "noise.gain_variation"},
      {noise.leakage_variation, "noise.leakage_variation"}};
  for (const auto& [value, field] : noise_fields)
    check(std::isfinite(value) && value >= 0.0, field, "must be a finite value >= 0");
  check(out_grid == OutputGrid::kCode || out.enabled, "quantization.out_grid",
        "'counter' needs the output quantizer enabled");
}

// ---------------------------------------------------------------------------------------------
// JSON

namespace {

json quantizer_to_json(const QuantizerConfig& q) {
  return {{"enabled", q.enabled}, {"levels", q.levels}, {"vmin", q.vmin}, {"vmax", q.vmax}};
}

// Reads JSON objects field by field, rejecting unknown keys and wrong types with the field path.
class JsonReader {
 public:
  JsonReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) throw Error("hardware config: '" + where() + "' must be a JSON object");
  }
  ~JsonReader() = default;

  template <typename T>
  void get(const char* key, T& out) {
    seen_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end()) return;
    const std::string field = prefix() + key;
    if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean())
        throw Error("hardware config: field '" + field + "' must be a boolean");
    } else if constexpr (std::is_integral_v<T>) {
      // Checked: a value that does not fit T (4294967312 levels, a seed of -1) is an error.
      out = json_int<T>(*it, "hardware config: field '" + field + "'");
      return;
    } else if constexpr (std::is_same_v<T, float>) {
      out = json_float(*it, "hardware config: field '" + field + "'");
      return;
    } else if constexpr (std::is_floating_point_v<T>) {
      out = json_number(*it, "hardware config: field '" + field + "'");
      return;
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) throw Error("hardware config: field '" + field + "' must be a string");
    }
    out = it->get<T>();
  }

  template <typename E, size_t N>
  void get_enum(const char* key, const EnumName<E> (&names)[N], E& out) {
    std::string s = enum_to_string(names, out);
    get(key, s);
    out = enum_from_string(names, s, prefix() + key);
  }

  const json* child(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  std::string prefix() const { return path_.empty() ? "" : path_ + "."; }
  std::string where() const { return path_.empty() ? "<top level>" : path_; }

  void reject_unknown() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key()))
        throw Error("hardware config: unknown field '" + prefix() + it.key() + "'");
    }
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

void read_quantizer(const json& j, const std::string& path, QuantizerConfig& q) {
  JsonReader r(j, path);
  r.get("enabled", q.enabled);
  r.get("levels", q.levels);
  r.get("vmin", q.vmin);
  r.get("vmax", q.vmax);
  r.reject_unknown();
}

}  // namespace

json HwConfig::to_json() const {
  json j;
  j["name"] = name;
  j["quantization"] = {{"q", quantizer_to_json(q)},       {"k", quantizer_to_json(k)},
                       {"v", quantizer_to_json(v)},       {"out", quantizer_to_json(out)},
                       {"out_grid", to_string(out_grid)}, {"out_mode", to_string(out_mode)}};
  j["k_offset"] = k_offset;
  j["v_offset"] = v_offset;
  j["cell"] = {{"model", to_string(cell)},
               {"coefficients", coefficients},
               {"vin", vin},
               {"linear_amplitude", linear_amplitude},
               {"device_file", device_file},
               {"alphas", alphas()}};
  j["s_sat"] = s_sat;
  j["a_sat"] = a_sat;
  j["array_size"] = array_size;
  j["window"] = window;
  j["tmax_s"] = tmax_s;
  j["leakage"] = {{"enabled", leakage.enabled},
                  {"lambda_per_token", leakage.lambda_per_token},
                  {"retention_time_s", leakage.retention_time_s},
                  {"time_per_token_s", leakage.time_per_token_s},
                  {"technology", leakage.technology},
                  {"refresh_interval_tokens", leakage.refresh_interval_tokens},
                  {"bf16_qk_decay", leakage.bf16_qk_decay},
                  {"effective_lambda", leakage.effective_lambda()}};
  j["polarity"] = to_string(polarity);
  j["noise"] = {{"read_noise_s", noise.read_noise_s},
                {"read_noise_a", noise.read_noise_a},
                {"read_noise_relative", noise.read_noise_relative},
                {"write_noise_kv", noise.write_noise_kv},
                {"gain_variation", noise.gain_variation},
                {"leakage_variation", noise.leakage_variation},
                {"seed", noise.seed}};
  return j;
}

namespace {

// Issue 6, point 5: a configuration names a fitted device instead of literal values. A value also
// written literally in the same JSON (to_json() writes both) must agree with the device: an
// explicit value that disagrees is an error naming both, never silently replaced (issue 11).
void apply_device_file(HwConfig& c, const std::string& base_dir, const json& top) {
  std::filesystem::path path(c.device_file);
  if (path.is_relative() && !base_dir.empty()) path = std::filesystem::path(base_dir) / path;
  const DeviceModel d = read_device_file(path);
  const json* cell_json = top.contains("cell") ? &top.at("cell") : nullptr;
  auto agrees = [](double a, double b) { return std::fabs(a - b) <= 1e-12 * std::fabs(b) + 1e-15; };
  auto check = [&](const json* where, const char* key, const std::string& field, double given,
                   double device) {
    if (where == nullptr || !where->contains(key) || agrees(given, device)) return;
    std::ostringstream os;
    os.precision(17);
    os << "hardware config: '" << field << "' = " << given << " disagrees with " << device
       << " from device file '" << path.string() << "' (give one or the other)";
    throw Error(os.str());
  };
  for (size_t k = 0; k < 10; ++k)
    check(cell_json, "coefficients", "cell.coefficients[" + std::to_string(k) + "]",
          c.coefficients[k], d.coefficients[k]);
  check(cell_json, "vin", "cell.vin", c.vin, d.vin);
  check(cell_json, "linear_amplitude", "cell.linear_amplitude", c.linear_amplitude, d.linear_slope);
  check(&top, "k_offset", "k_offset", c.k_offset, d.offset);
  check(&top, "v_offset", "v_offset", c.v_offset, d.offset);
  c.coefficients = d.coefficients;
  c.vin = d.vin;
  c.linear_amplitude = d.linear_slope;
  c.k_offset = c.v_offset = d.offset;
}

}  // namespace

HwConfig HwConfig::from_json(const json& j, const std::string& base_dir) {
  if (!j.is_object()) throw Error("hardware config must be a JSON object");
  std::string base = "paper-nonlinear";
  if (auto it = j.find("preset"); it != j.end()) {
    if (!it->is_string()) throw Error("hardware config: field 'preset' must be a string");
    base = it->get<std::string>();
  }
  HwConfig c = preset(base);
  JsonReader r(j, "");
  r.child("preset");
  r.get("name", c.name);
  if (const json* qj = r.child("quantization")) {
    JsonReader rq(*qj, "quantization");
    if (const json* x = rq.child("q")) read_quantizer(*x, "quantization.q", c.q);
    if (const json* x = rq.child("k")) read_quantizer(*x, "quantization.k", c.k);
    if (const json* x = rq.child("v")) read_quantizer(*x, "quantization.v", c.v);
    if (const json* x = rq.child("out")) read_quantizer(*x, "quantization.out", c.out);
    rq.get_enum("out_grid", kGridNames, c.out_grid);
    rq.get_enum("out_mode", kOutModeNames, c.out_mode);
    rq.reject_unknown();
  }
  r.get("k_offset", c.k_offset);
  r.get("v_offset", c.v_offset);
  if (const json* cj = r.child("cell")) {
    JsonReader rc(*cj, "cell");
    rc.get_enum("model", kCellNames, c.cell);
    if (const json* coeffs = rc.child("coefficients")) {
      if (!coeffs->is_array() || coeffs->size() != 10)
        throw Error("hardware config: field 'cell.coefficients' must be an array of 10 numbers");
      for (size_t i = 0; i < 10; ++i) {
        c.coefficients[i] = json_number(
            (*coeffs)[i], "hardware config: field 'cell.coefficients[" + std::to_string(i) + "]'");
      }
    }
    rc.get("vin", c.vin);
    rc.get("linear_amplitude", c.linear_amplitude);
    rc.get("device_file", c.device_file);
    rc.child("alphas");  // derived, written for readers; ignored on input
    rc.reject_unknown();
  }
  r.get("s_sat", c.s_sat);
  r.get("a_sat", c.a_sat);
  r.get("array_size", c.array_size);
  r.get("window", c.window);
  r.get("tmax_s", c.tmax_s);
  if (const json* lj = r.child("leakage")) {
    JsonReader rl(*lj, "leakage");
    rl.get("enabled", c.leakage.enabled);
    rl.get("lambda_per_token", c.leakage.lambda_per_token);
    rl.get("retention_time_s", c.leakage.retention_time_s);
    rl.get("time_per_token_s", c.leakage.time_per_token_s);
    rl.get("technology", c.leakage.technology);
    rl.get("refresh_interval_tokens", c.leakage.refresh_interval_tokens);
    rl.get("bf16_qk_decay", c.leakage.bf16_qk_decay);
    rl.child("effective_lambda");  // derived
    rl.reject_unknown();
  }
  r.get_enum("polarity", kPolarityNames, c.polarity);
  if (const json* nj = r.child("noise")) {
    JsonReader rn(*nj, "noise");
    rn.get("read_noise_s", c.noise.read_noise_s);
    rn.get("read_noise_a", c.noise.read_noise_a);
    rn.get("read_noise_relative", c.noise.read_noise_relative);
    rn.get("write_noise_kv", c.noise.write_noise_kv);
    rn.get("gain_variation", c.noise.gain_variation);
    rn.get("leakage_variation", c.noise.leakage_variation);
    rn.get("seed", c.noise.seed);
    rn.reject_unknown();
  }
  r.reject_unknown();
  if (!c.device_file.empty()) apply_device_file(c, base_dir, j);
  c.validate();
  return c;
}

}  // namespace gaincell
