// Token-by-token simulation of one attention head on gain-cell arrays (spec §1.2, §11 items 7-8,
// §12 item 18). The head owns window / array_size sub-tiles; sub-tile s holds a K array
// [dim][slot] and a V array [slot][dim] of stored voltages, and every slot remembers the token
// index it was written at (leakage by age). Token t goes to slot t mod window (circular overwrite),
// i.e. sub-tile (t mod window) div array_size.
//
// A head dimension D above the array size N tiles over ceil(D / N) physical arrays per sub-tile
// (K arrays stacked along the rows, their column charges adding on the shared charge-to-pulse
// input; V arrays side by side along the columns): the math is that of one D-row array, and only
// the event counts (tile_reads) and the cost model see the tiling.
//
// One decode step is write(k, v) then read(q):
//   S_j   = sum_d Q_d f(decay_j (K_jd - k_off))          per written, in-window slot j (§2.3)
//   phi_j = clip(sign * S_j / s_sat, 0, 1)                charge-to-pulse, HardSigmoid (§2.4)
//   A_tau = sum_{j in tile tau} phi_j f(decay_j (V_jd - v_off))
//   out   = sum_tau Qz(clip(sign * A_tau / a_sat, -1, 1))  per-tile (or tile-mean) output (§3.6)
// decay_j = exp(-lambda * (t - t_j)), the newest token has age 0; unwritten slots contribute
// nothing, not even the alpha_0 offset term (§12 item 17). The output scaler a_o * out + b_o is the
// caller's (attention layer's) job, as are the q/k/v scalers, clamps and input quantisers.
//
// Cell models: the polynomial and linear cells use the exact factorisation
// f(decay y) = sum_i alpha_i decay^i y^i (the code's decay^i); the ablation cells (x3, x5,
// sigmoid, exp) are evaluated physically as f(decay * y) per cell. The paper's ablation classes
// ignore decay (spec §2.7); with leakage disabled both agree.
//
// Beyond the paper (hw.noise, all off in the presets; draws from gaincell/device/noise.h, a pure
// function of (seed, event), so results are reproducible and independent of call order):
//   write noise   V_stored = clamp(V + N(0, write_noise_kv), vmin, vmax)      per written cell
//   gain var.     y = (V_stored - offset) * (1 + N(0, gain_variation))        per cell, drawn once
//   leakage var.  lambda_cell = max(0, lambda * (1 + N(0, leakage_variation))) per cell, drawn once
//   read noise    S_j += N(0, sigma_S), A_tau,d += N(0, sigma_A); sigma = level (absolute) or
//                 level * |signal| (relative); S noise before phi, A noise before the clamp.
//
// Storage. With the K and V write DACs quantising, no write noise and no gain variation (every
// preset) and the factorised path, every stored y is one of the DAC's levels: the arrays then
// hold a uint8 level code per cell and a per-array table of the level's y (computed in float as
// write() computes y), 4x fewer bytes for decode to stream per read. The kernels decode a block
// of codes into floats and run the same arithmetic, so results are bit-identical to fp32 storage.
// A write whose voltage is not exactly a level (write() is public: callers may pass any voltage)
// turns the head to fp32 storage for good, decoding the codes first.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "gaincell/device/charge_to_pulse.h"
#include "gaincell/device/gain_cell.h"
#include "gaincell/device/output_stage.h"
#include "gaincell/hw/hardware_events.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell {

// Hardware events of the simulated arrays (the event fields of hw/hardware_events.h) plus the
// array's own step counts. Totals; `+=` merges steps, heads and layers.
struct ArrayEvents : HardwareEvents {
  int64_t tokens = 0;  // decode steps (one per write)
  int64_t reads = 0;   // read() calls

  nlohmann::json to_json() const;
  ArrayEvents& operator+=(const ArrayEvents& o);
  bool operator==(const ArrayEvents& o) const = default;
};

// How the arrays hold their stored voltages (see "Storage" above) and how level codes become
// floats. Defaults are what decode uses; the others exist to test one path against another.
struct HeadArrayStorage {
  bool allow_level_codes = true;  // false: fp32 storage whatever the configuration
  // Code-to-float lookup of the kernels: kAuto = the widest the build has (AVX-512 permute for
  // up to 16 levels, AVX2 for up to 8), else the portable table lookup. A variant the build or
  // the level count does not allow falls back to the portable lookup.
  enum class Lookup { kAuto, kAvx512, kAvx2, kPortable };
  Lookup lookup = Lookup::kAuto;
};

class HeadArray {
 public:
  // seed: the head's noise seed (see head_noise_seed in gaincell/device/noise.h); unused when
  // hw.noise is all zero. Validates hw.
  HeadArray(const HwConfig& hw, int head_dim, uint64_t seed, HeadArrayStorage storage = {});

  // Writes the token's key and value voltages (already scaled, clamped and quantised by the caller)
  // at slot t mod window, t = tokens_written(); write noise and gain variation are applied here.
  void write(const float* k_volts, const float* v_volts);
  // Applies the Q pulse widths (units of Tmax, already quantised) to every stored token and writes
  // the head output before the output scaler, out[head_dim]. Needs at least one written token.
  void read(const float* q_pulses, float* out);

  int64_t tokens_written() const { return tokens_written_; }
  int head_dim() const { return head_dim_; }
  int window() const { return window_; }
  int num_tiles() const { return num_tiles_; }
  // Forgets every stored token and the events (variation draws are kept: same chip).
  void reset();

  const ArrayEvents& events() const { return events_; }               // totals since construction
  const ArrayEvents& last_step_events() const { return last_step_; }  // since the last write()

  // Named intermediates of the last read (style-lessons §11); masked slots hold 0.
  std::span<const float> last_scores() const { return scores_; }  // S per slot [window]
  std::span<const float> last_phi() const { return phi_; }        // phi per slot [window]
  // Per sub-tile sign * A / a_sat before clamp and quantisation [num_tiles][head_dim]; tiles
  // without a written token hold 0.
  std::span<const float> last_tile_outputs() const { return tile_out_; }
  // Stored effective voltages (V - offset, after write noise and gain variation), for debugging:
  // K array of sub-tile-independent slot `slot`, dim d; V likewise. A slot not written since
  // construction or reset() reads 0.
  float stored_k(int slot, int d) const;
  float stored_v(int slot, int d) const;
  // True while the arrays hold level codes (uint8 per cell), false for fp32 storage.
  bool level_coded() const { return coded_; }
  // Bytes of stored K and V state that one read streams at the current fill.
  int64_t state_bytes_per_read() const;
  int64_t write_time(int slot) const { return write_time_[slot]; }
  // Writes the named intermediates of the last read and the stored state as an uncompressed .npz
  // (scores [window], phi [window], tile_outputs [tiles][D], k_stored [D][window],
  // v_stored [window][D], write_time [window]; -1 = empty), for diffing against a reference.
  void dump_npz(const std::filesystem::path& path) const;

 private:
  int valid_slots() const;
  void compute_scores_factorised(const float* q, int n_valid, int64_t t);
  void compute_scores_per_cell(const float* q, int n_valid, int64_t t);
  void accumulate_tile_factorised(int tile, int n_valid, int64_t t, float* acc) const;
  void accumulate_tile_per_cell(int tile, int n_valid, int64_t t, float* acc) const;
  float cell_current(float y) const;
  bool store_codes(int slot, const float* k_volts, const float* v_volts);
  void store_floats(int slot, int64_t t, const float* k_volts, const float* v_volts);
  void convert_to_float_storage();
  std::vector<float> stored_array(bool keys) const;  // decoded, unwritten slots 0
  template <class F>
  void with_stored_rows(bool keys, F&& f) const;

  HwConfig hw_;
  int head_dim_;
  int window_;
  int array_size_;
  int num_tiles_;
  uint64_t seed_;
  GainCell cell_;
  ChargeToPulse c2p_;
  OutputStage output_stage_;
  bool factorised_;  // polynomial/linear cell and one lambda for all cells
  bool cubic_;       // alpha_2 or alpha_3 nonzero (else linear fast path)
  float alpha_[4];
  double lambda_;
  std::vector<float> decay_by_age_;      // [window], nominal lambda
  std::vector<float> key_decay_by_age_;  // the QK stage's (bf16-rounded if hw asks for it)

  // The levels of one array's write DAC: the y of each code as write() computes it (step * i -
  // offset in float), padded to 256 entries so that any code indexes the table.
  struct LevelTable {
    std::array<float, 256> y{};
    float step = 1.0f;
    int first = 0;  // grid index i of code 0 (written voltage step * i)
    int count = 0;  // codes in use
    bool build(const QuantizerConfig& c, float offset);
    int code_of(float volts, float y_volts) const;  // -1 unless y_volts is exactly a level's y
  };

  // fp32 storage (coded_ false): y per cell. Level-code storage (coded_ true): a code per cell.
  bool coded_ = false;
  HeadArrayStorage::Lookup lookup_ = HeadArrayStorage::Lookup::kPortable;
  std::vector<float> k_y_;       // K arrays, [dim][slot] (window columns across all sub-tiles)
  std::vector<float> v_y_;       // V arrays, [slot][dim]
  std::vector<uint8_t> k_code_;  // K level codes, [dim][slot]
  std::vector<uint8_t> v_code_;  // V level codes, [slot][dim]
  LevelTable k_levels_, v_levels_;
  std::vector<uint8_t> code_scratch_;   // [2][head_dim] codes of the token being written
  std::vector<int64_t> write_time_;     // [slot], -1 = never written
  std::vector<float> k_gain_, v_gain_;  // [slot][dim] gain variation factors (or empty)
  std::vector<float> k_leak_, v_leak_;  // [slot][dim] lambda scale factors (or empty)

  int64_t tokens_written_ = 0;
  ArrayEvents events_, last_step_;
  std::vector<float> scores_, phi_, tile_out_;
  std::vector<float> acc1_, acc2_, acc3_;  // [window] score accumulators
  std::vector<float> pulsed_values_;       // [head_dim] nonzero Q pulses ...
  std::vector<int> pulsed_rows_;           // ... and their rows
  mutable std::vector<float> weights_;     // [3][array_size] per-power weights of a tile's slots
  mutable std::vector<int> weight_slots_;  // [array_size]
};

}  // namespace gaincell
