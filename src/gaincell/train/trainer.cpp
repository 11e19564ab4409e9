#include "gaincell/train/trainer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/memory_estimate.h"
#include "gaincell/train/checkpoint_store.h"

namespace gaincell {

namespace {

using json = nlohmann::json;

constexpr char kStateMagic[8] = {'G', 'C', 'T', 'R', 'A', 'I', 'N', '1'};
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateHeaderBytes = 32;
const char* const kStateFormat = "gaincell-training-state";

// Seed offset of the validation batches: fixed, so every evaluation sees the same batches and a
// resumed run needs no validation RNG state.
constexpr uint64_t kValidationSeedSalt = 0x76616c6964617465ull;  // "validate"

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  }
  return buf;
}

void write_state_binary(const std::filesystem::path& path, int64_t step,
                        const std::vector<float>& m, const std::vector<float>& v) {
  const std::string tmp = path.string() + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot create " + tmp + ": " + std::strerror(errno));
  char header[kStateHeaderBytes] = {};
  std::memcpy(header, kStateMagic, 8);
  const uint64_t n = m.size();
  std::memcpy(header + 8, &kStateVersion, 4);
  std::memcpy(header + 16, &step, 8);
  std::memcpy(header + 24, &n, 8);
  bool ok = std::fwrite(header, 1, sizeof header, f) == sizeof header &&
            std::fwrite(m.data(), sizeof(float), n, f) == n &&
            std::fwrite(v.data(), sizeof(float), n, f) == n && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error("cannot write " + path.string() + ": " + reason);
  }
}

// Reads the moments straight into `m` and `v` (already sized), without a temporary copy.
void read_state_binary(const std::filesystem::path& path, size_t expected_n, int64_t expected_step,
                       std::vector<float>& m, std::vector<float>& v) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), "cannot open " + path.string());
  char header[kStateHeaderBytes];
  in.read(header, sizeof header);
  require(in.gcount() == static_cast<std::streamsize>(sizeof header),
          path.string() + " is truncated (no header)");
  require(std::memcmp(header, kStateMagic, 8) == 0,
          path.string() + " is not a gaincell training state (bad magic)");
  uint32_t version;
  int64_t step;
  uint64_t n;
  std::memcpy(&version, header + 8, 4);
  std::memcpy(&step, header + 16, 8);
  std::memcpy(&n, header + 24, 8);
  require(version == kStateVersion,
          path.string() + ": unsupported version " + std::to_string(version));
  require(n == expected_n, path.string() + " holds optimizer state for " + std::to_string(n) +
                               " parameters, the model has " + std::to_string(expected_n));
  require(step == expected_step, path.string() + " is at step " + std::to_string(step) +
                                     ", training_state.json at " + std::to_string(expected_step));
  require(m.size() == n && v.size() == n, "optimizer state size mismatch");
  in.read(reinterpret_cast<char*>(m.data()), static_cast<std::streamsize>(n * sizeof(float)));
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  require(in.good(), path.string() + " is truncated");
  in.peek();
  require(in.eof(), path.string() + " has trailing bytes");
}

json file_record(const std::filesystem::path& path) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(file_hash(path)));
  return {{"size", std::filesystem::file_size(path)}, {"fnv1a64", hex}};
}

template <typename T>
T get_field(const json& j, const char* key, T fallback) {
  if (!j.contains(key)) return fallback;
  const std::string what = std::string("training options: '") + key + "'";
  if constexpr (std::is_same_v<T, bool>) {
    return json_bool(j.at(key), what);
  } else if constexpr (std::is_integral_v<T>) {
    return json_int<T>(j.at(key), what);
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(json_number(j.at(key), what));
  } else {
    return json_string(j.at(key), what);
  }
}

}  // namespace

uint64_t file_hash(const std::filesystem::path& path) {
  // Read in chunks rather than mapped: a mapping of the 1 GB optimizer state of GPT-2 124M would
  // count towards the process's resident memory while the checkpoint is hashed.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path.string() + ": " + std::strerror(errno));
  constexpr size_t kChunk = 1 << 20;  // a multiple of 8: words never straddle chunks
  std::vector<uint8_t> buffer(kChunk);
  uint64_t h = 0xcbf29ce484222325ull;
  constexpr uint64_t kPrime = 0x100000001b3ull;
  uint64_t size = 0;
  for (;;) {
    size_t filled = 0;
    while (filled < kChunk) {
      const ssize_t n = ::read(fd, buffer.data() + filled, kChunk - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ::close(fd);
        throw Error("cannot read " + path.string() + ": " + std::strerror(errno));
      }
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    size += filled;
    for (size_t i = 0; i < filled; i += 8) {
      uint64_t w = 0;
      std::memcpy(&w, buffer.data() + i, std::min<size_t>(8, filled - i));
      h = (h ^ w) * kPrime;
    }
    if (filled < kChunk) break;
  }
  ::close(fd);
  return (h ^ size) * kPrime;
}

void TrainOptions::validate() const {
  require(steps >= 0, "training: --steps must be >= 0");
  require(batch_size >= 1, "training: batch size must be >= 1");
  require(seq_len >= 1, "training: sequence length must be >= 1");
  require(grad_accum >= 1, "training: gradient accumulation must be >= 1");
  require(std::isfinite(lr) && lr > 0, "training: learning rate must be > 0");
  require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr,
          "training: min lr must be in [0, lr]");
  require(warmup_steps >= 0, "training: warm-up steps must be >= 0");
  require(lr_decay_steps >= 0, "training: lr decay steps must be >= 0");
  require(std::isfinite(weight_decay) && weight_decay >= 0, "training: weight decay must be >= 0");
  require(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "training: betas must be in [0, 1)");
  require(eps > 0, "training: eps must be > 0");
  require(std::isfinite(grad_clip) && grad_clip >= 0, "training: gradient clip must be >= 0");
  require(eval_interval >= 0, "training: eval interval must be >= 0");
  require(eval_iters >= 1, "training: eval iterations must be >= 1");
  require(checkpoint_interval >= 0, "training: checkpoint interval must be >= 0");
  require(log_interval >= 0, "training: log interval must be >= 0");
}

LrSchedule TrainOptions::schedule() const {
  return {lr, min_lr, warmup_steps, lr_decay_steps > 0 ? lr_decay_steps : steps};
}

json TrainOptions::to_json() const {
  return {{"steps", steps},
          {"batch_size", batch_size},
          {"seq_len", seq_len},
          {"grad_accum", grad_accum},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},
          {"lr_decay_steps", lr_decay_steps > 0 ? lr_decay_steps : steps},
          {"weight_decay", weight_decay},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"grad_clip", grad_clip},
          {"eval_interval", eval_interval},
          {"eval_iters", eval_iters},
          {"checkpoint_interval", checkpoint_interval},
          {"seed", seed},
          {"log_interval", log_interval},
          {"out_dir", out_dir.string()},
          {"data_dir", data_dir.string()}};
}

TrainOptions TrainOptions::from_json(const json& j) {
  require(j.is_object(), "training options: expected a JSON object");
  TrainOptions o;
  o.steps = get_field(j, "steps", o.steps);
  o.batch_size = get_field(j, "batch_size", o.batch_size);
  o.seq_len = get_field(j, "seq_len", o.seq_len);
  o.grad_accum = get_field(j, "grad_accum", o.grad_accum);
  o.lr = get_field(j, "lr", o.lr);
  o.min_lr = get_field(j, "min_lr", o.min_lr);
  o.warmup_steps = get_field(j, "warmup_steps", o.warmup_steps);
  o.lr_decay_steps = get_field(j, "lr_decay_steps", o.lr_decay_steps);
  o.weight_decay = get_field(j, "weight_decay", o.weight_decay);
  o.beta1 = get_field(j, "beta1", o.beta1);
  o.beta2 = get_field(j, "beta2", o.beta2);
  o.eps = get_field(j, "eps", o.eps);
  o.grad_clip = get_field(j, "grad_clip", o.grad_clip);
  o.eval_interval = get_field(j, "eval_interval", o.eval_interval);
  o.eval_iters = get_field(j, "eval_iters", o.eval_iters);
  o.checkpoint_interval = get_field(j, "checkpoint_interval", o.checkpoint_interval);
  o.seed = get_field(j, "seed", o.seed);
  o.log_interval = get_field(j, "log_interval", o.log_interval);
  o.out_dir = get_field<std::string>(j, "out_dir", "");
  o.data_dir = get_field<std::string>(j, "data_dir", "");
  o.validate();
  return o;
}

json TrainResult::to_json() const {
  json j = {{"steps", steps}, {"final_loss", final_loss}, {"seconds", seconds}, {"tokens", tokens}};
  j["final_val_loss"] = final_val_loss ? json(*final_val_loss) : json(nullptr);
  return j;
}

namespace {

// Before the optimizer state and activations are allocated: refuse what cannot fit.
void check_training_memory(const GPT2Model& model, const TrainOptions& o) {
  require_memory(estimated_training_bytes(model.config(), o.batch_size, o.seq_len), "training",
                 "weights, gradients, AdamW moments and the activations of a " +
                     std::to_string(o.batch_size) + " x " + std::to_string(o.seq_len) + " batch");
}

std::vector<ParamSegment> trainable_segments(const GPT2Model& model) {
  std::vector<ParamSegment> segments;
  for (const ParamInfo& p : model.params()) {
    if (p.trainable) segments.push_back({p.offset, static_cast<size_t>(p.numel), p.weight_decay});
  }
  return segments;
}

}  // namespace

Trainer::Trainer(GPT2Model& model, const TokenDataset& train, const TokenDataset* val,
                 const TrainOptions& options, Comm& comm)
    : model_(model),
      train_(train),
      val_(val),
      options_((options.validate(), check_training_memory(model, options), options)),
      comm_(comm),
      shard_(batch_shard(options.batch_size, comm.rank(), comm.size())),
      grad_sync_(comm, model),
      segments_(trainable_segments(model)),
      optimizer_(model.num_params(), segments_,
                 {options.beta1, options.beta2, options.eps, options.weight_decay}),
      sampler_(train, options.batch_size, options.seq_len, options.seed),
      inputs_(static_cast<size_t>(options.batch_size) * options.seq_len),
      targets_(inputs_.size()) {
  require(options.seq_len <= model.config().block_size,
          "training: sequence length " + std::to_string(options.seq_len) +
              " exceeds the model's n_positions " + std::to_string(model.config().block_size));
  if (val_) {
    require(val_->size() >= static_cast<size_t>(options.seq_len) + 1,
            "training: the validation set has " + std::to_string(val_->size()) +
                " tokens, fewer than seq_len + 1 = " + std::to_string(options.seq_len + 1));
  }
  if (comm_.size() > 1) {
    // Everything that decides the run; out_dir and data_dir may be spelled differently per node.
    json run = options_.to_json();
    run.erase("out_dir");
    run.erase("data_dir");
    run["model"] = model_.config().to_json();
    run["num_params"] = model_.num_params();
    run["train_tokens"] = train_.size();
    run["val_tokens"] = val_ ? val_->size() : 0;
    check_same_run(comm_, run.dump());
    broadcast_parameters(comm_, model_);
    share_statistics(comm_, model_);  // target recording sees the whole global batch
  }
}

StepInfo Trainer::train_step() {
  const int T = options_.seq_len;
  // Every rank draws the whole global batch (the same sequence of batches as one process, and
  // a resume with another number of ranks) and computes its own rows.
  const size_t at = static_cast<size_t>(shard_.first_row) * T;
  model_.zero_grad();
  double loss_sum = 0.0;
  for (int micro = 0; micro < options_.grad_accum; ++micro) {
    if (batch_source_) {
      batch_source_(inputs_.data(), targets_.data());
    } else {
      sampler_.next(inputs_.data(), targets_.data());
    }
    const float loss = model_.forward(inputs_.data() + at, targets_.data() + at, shard_.rows, T,
                                      /*training=*/true);
    require(std::isfinite(loss), "training diverged at step " + std::to_string(step() + 1) +
                                     ": the loss is " + std::to_string(loss));
    // The last micro-batch's gradients are final: their buckets are summed over the ranks while
    // backward goes on.
    if (micro + 1 == options_.grad_accum) grad_sync_.arm();
    model_.backward();
    loss_sum += loss;
  }
  grad_sync_.finish();
  // Each rank's loss (and gradient) is a mean over its rows; their sum over the ranks divided by
  // the number of ranks is the mean over the global batch.
  comm_.allreduce_sum(&loss_sum, 1);
  const int ranks = comm_.size();
  float* grads = model_.grad_data();
  if (options_.grad_accum * ranks > 1)
    scale_grads(grads, segments_, 1.0f / static_cast<float>(options_.grad_accum * ranks));
  StepInfo info;
  info.grad_norm = clip_grad_norm(grads, segments_, options_.grad_clip);
  require(std::isfinite(info.grad_norm), "training diverged at step " + std::to_string(step() + 1) +
                                             ": gradient norm is not finite");
  info.lr = options_.schedule().at(step());  // step() is the 0-based index of this step
  optimizer_.step(model_.param_data(), grads, info.lr);
  info.step = step();
  info.loss = static_cast<float>(loss_sum / (static_cast<double>(options_.grad_accum) * ranks));
  losses_.push_back(info.loss);
  return info;
}

float Trainer::evaluate() {
  require(val_ != nullptr, "training: no validation set");
  const int B = options_.batch_size, T = options_.seq_len;
  BatchSampler sampler(*val_, B, T, options_.seed ^ kValidationSeedSalt);
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  // An inference forward materialises [rows, T, vocab] logits: run few rows at a time so that
  // validation does not raise the training peak memory (206 MB at B=4, T=256 for GPT-2).
  constexpr int64_t kMaxLogitFloats = int64_t{16} << 20;
  const int64_t per_row = static_cast<int64_t>(T) * model_.config().vocab_size;
  const int rows = static_cast<int>(std::clamp<int64_t>(kMaxLogitFloats / per_row, 1, B));
  // Each rank scores its shard's rows of every batch; the sums meet in one all-reduce.
  const int end = shard_.first_row + shard_.rows;
  double sum = 0.0;
  for (int i = 0; i < options_.eval_iters; ++i) {
    sampler.next(x.data(), y.data());
    for (int r = shard_.first_row; r < end; r += rows) {
      const int n = std::min(rows, end - r);
      const size_t at = static_cast<size_t>(r) * T;
      sum += static_cast<double>(model_.forward(x.data() + at, y.data() + at, n, T, false)) * n;
    }
  }
  comm_.allreduce_sum(&sum, 1);
  return static_cast<float>(sum / (static_cast<double>(options_.eval_iters) * B));
}

void Trainer::log_progress(const StepInfo& info, double eta_s) const {
  if (!comm_.is_root()) return;  // one progress line per step, not one per rank
  std::string line = "step " + std::to_string(info.step) + "/" + std::to_string(options_.steps);
  char buf[160];
  std::snprintf(buf, sizeof buf, " | loss %.4f | lr %.3e | norm %.3f | %.0f tok/s | ETA %s",
                info.loss, info.lr, info.grad_norm, info.tokens_per_s,
                format_duration(eta_s).c_str());
  line += buf;
  if (info.val_loss) {
    std::snprintf(buf, sizeof buf, " | val loss %.4f (ppl %.2f)", *info.val_loss,
                  std::exp(*info.val_loss));
    line += buf;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

TrainResult Trainer::run() {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const int64_t first_step = step();
  const int64_t tokens_per_step =
      static_cast<int64_t>(options_.batch_size) * options_.seq_len * options_.grad_accum;
  TrainResult result;
  // Temporaries of a killed earlier run (a half-written checkpoint) go before the first new one.
  // Every rank has read the checkpoint it resumes from before rank 0 tidies the directory.
  comm_.barrier();
  if (!options_.out_dir.empty() && comm_.is_root()) {
    prepare_checkpoint_dir(options_.out_dir);
    if (!resumed_from_.empty()) remove_superseded_checkpoints(options_.out_dir, resumed_from_);
  }
  while (step() < options_.steps) {
    StepInfo info = train_step();
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    const int64_t done = step() - first_step;
    info.elapsed_s = elapsed;
    info.tokens_per_s = elapsed > 0 ? done * tokens_per_step / elapsed : 0.0;
    const bool last = step() == options_.steps;
    const bool eval_due = options_.eval_interval > 0 && step() % options_.eval_interval == 0;
    if (val_ && (eval_due || last)) {
      info.val_loss = evaluate();
      val_losses_.emplace_back(step(), *info.val_loss);
    }
    for (auto& callback : callbacks_) callback(*this, info);
    const bool log_due = options_.log_interval > 0 && (step() % options_.log_interval == 0 ||
                                                       done == 1 || last || info.val_loss);
    if (log_due) log_progress(info, elapsed / done * (options_.steps - step()));
    const bool ckpt_due =
        options_.checkpoint_interval > 0 && step() % options_.checkpoint_interval == 0;
    if (!options_.out_dir.empty() && (ckpt_due || last)) save_checkpoint(options_.out_dir);
    result.final_loss = info.loss;
    result.final_val_loss = info.val_loss;
  }
  result.steps = step();
  result.seconds = std::chrono::duration<double>(clock::now() - start).count();
  result.tokens = (step() - first_step) * tokens_per_step;
  if (!losses_.empty()) result.final_loss = losses_.back();
  // Resumed from the final checkpoint (a kill after it was committed): the last step's validation
  // loss is in the restored history, so the result does not depend on where the kill landed.
  if (!result.final_val_loss && !val_losses_.empty() && val_losses_.back().first == step())
    result.final_val_loss = val_losses_.back().second;
  return result;
}

void Trainer::save_checkpoint(const std::filesystem::path& dir) const {
  // Collective: the replicas must agree (else the checkpoint would hold one rank's divergence),
  // then rank 0 alone commits.
  check_replicas_agree(comm_, model_, "step " + std::to_string(step()));
  if (!comm_.is_root()) return;
  commit_checkpoint(dir, step(),
                    [this](const std::filesystem::path& tmp) { write_checkpoint(tmp); });
}

void Trainer::write_checkpoint(const std::filesystem::path& dir) const {
  save_model(model_, dir);
  write_state_binary(dir / "training_state.bin", step(), optimizer_.m(), optimizer_.v());
  json state;
  state["format"] = kStateFormat;
  state["version"] = kStateVersion;
  state["step"] = step();
  state["num_params"] = model_.num_params();
  state["options"] = options_.to_json();
  state["sampler"] = sampler_.state();
  state["losses"] = losses_;
  json val = json::array();
  for (const auto& [s, l] : val_losses_) val.push_back({s, l});
  state["val_losses"] = val;
  state["files"] = {{"model.safetensors", file_record(dir / "model.safetensors")},
                    {"training_state.bin", file_record(dir / "training_state.bin")}};
  // Written last: its presence and matching hashes mark a complete checkpoint.
  write_file_atomic(dir / "training_state.json", state.dump(1) + "\n");
}

namespace {

json read_state_json_unchecked(const std::filesystem::path& dir) {
  const auto path = dir / "training_state.json";
  require(std::filesystem::exists(path),
          dir.string() +
              " has no training_state.json: not a training checkpoint, or its write "
              "was interrupted");
  json state = read_json_file(path);
  require(state.is_object(), path.string() + " is not a JSON object");
  require(json_string_or(state, "format", "", path.string()) == kStateFormat,
          path.string() + " is not a gaincell training state");
  require(state.contains("version") &&
              json_int<int64_t>(state["version"], path.string() + ": 'version'") ==
                  static_cast<int64_t>(kStateVersion),
          path.string() + ": unsupported version");
  for (const char* key : {"step", "num_params", "options", "sampler", "losses", "files"}) {
    require(state.contains(key), path.string() + " lacks '" + key + "'");
  }
  return state;
}

json read_state_json(const std::filesystem::path& dir) {
  try {
    return read_state_json_unchecked(dir);
  } catch (const json::exception& e) {
    throw Error((dir / "training_state.json").string() + " is malformed: " + e.what());
  }
}

// The training state of a checkpoint directory whose files match the sizes and hashes it
// records (else an Error naming the mismatch).
json read_verified_state(const std::filesystem::path& dir) {
  const json state = read_state_json(dir);
  try {
    require(state["files"].is_object(),
            dir.string() + "/training_state.json: 'files' must be an object");
    for (const auto& [name, record] : state["files"].items()) {
      require(name.find('/') == std::string::npos && name != "..",
              dir.string() + "/training_state.json: bad file name '" + name + "'");
      const auto path = dir / name;
      std::error_code ec;
      require(std::filesystem::is_regular_file(path, ec), dir.string() + " lacks " + name);
      const json actual = file_record(path);
      require(actual == record, path.string() + " does not match training_state.json (size " +
                                    actual["size"].dump() + " vs " + record["size"].dump() +
                                    "): the checkpoint is incomplete or was modified");
    }
    const std::string source = (dir / "training_state.json").string() + ": ";
    const int64_t step = json_int<int64_t>(state["step"], source + "'step'");
    require(step >= 0, source + "'step' must not be negative");
  } catch (const json::exception& e) {
    throw Error(dir.string() + "/training_state.json is malformed: " + e.what());
  }
  return state;
}

}  // namespace

std::filesystem::path Trainer::checkpoint_to_resume(const std::filesystem::path& out_dir) {
  return find_resumable_checkpoint(out_dir, [](const std::filesystem::path& dir) {
    return read_verified_state(dir)["step"].get<int64_t>();
  });
}

TrainOptions Trainer::saved_options(const std::filesystem::path& out_dir) {
  return TrainOptions::from_json(read_state_json(checkpoint_to_resume(out_dir))["options"]);
}

void Trainer::resume(const std::filesystem::path& out_dir) {
  const std::filesystem::path dir = checkpoint_to_resume(out_dir);
  resumed_from_ = dir;
  const json state = read_verified_state(dir);
  try {
    const std::string source = (dir / "training_state.json").string() + ": ";
    const int64_t saved_step = state["step"].get<int64_t>();
    require(json_int<uint64_t>(state["num_params"], source + "'num_params'") == model_.num_params(),
            "checkpoint " + dir.string() + " was written for a model with " +
                state["num_params"].dump() + " parameters, this one has " +
                std::to_string(model_.num_params()));
    read_state_binary(dir / "training_state.bin", model_.num_params(), saved_step, optimizer_.m(),
                      optimizer_.v());
    optimizer_.set_step(saved_step);
    sampler_.set_state(state["sampler"]);
    require(state["losses"].is_array(), source + "'losses' must be an array");
    losses_.clear();
    for (const auto& l : state["losses"]) losses_.push_back(json_float(l, source + "'losses'"));
    require(static_cast<int64_t>(losses_.size()) == saved_step,
            "training_state.json: loss history does not match the step");
    val_losses_.clear();
    if (state.contains("val_losses")) {
      for (const auto& e : state["val_losses"]) {
        require(e.is_array() && e.size() == 2,
                source + "'val_losses' must hold [step, loss] pairs");
        val_losses_.emplace_back(json_int<int64_t>(e[0], source + "'val_losses'"),
                                 json_float(e[1], source + "'val_losses'"));
      }
    }
  } catch (const json::exception& e) {
    throw Error(dir.string() + "/training_state.json is malformed: " + e.what());
  }
}

}  // namespace gaincell
