// Attention decode with a KV cache on an NVIDIA GPU, timed with CUDA events and metered with
// NVML: the GPU side of gaincell's cost model (docs/cost-model.md §6). Writes one JSON object in
// the format of the paper's measured files (spec §9.3: S, H, D_h, N_tokens, per-token latency,
// power and energy), plus a batch sweep and the card's description.
//
// Protocol (the paper's, spec §9.3, with an optimised kernel instead of torch.matmul on
// transposed views): S sequences, H heads, head dim D, a cache of N slots that every step reads in
// full (the steady state of a sliding window of N tokens). For t in 0..N-1 every sequence writes
// its new k, v into slot t and attends with its q over all N slots; one timed pass is N steps.
// Per-token latency = pass time / (S x N); per-token energy = (mean power - idle power) x pass
// time / (S x N), as the paper's files define them; the board energy including idle is reported
// beside it.
//
// The kernel is checked against a plain CPU loop on a small case before anything is timed.
//
// Build: CMake builds `gpu_attention_decode` when nvcc is found (GAINCELL_BUILD_GPU_BENCH). NVML
// is loaded at run time, so it builds on machines without a GPU or NVML headers.
// Run:   ./build/gpu_attention_decode --out bench/gpu/results/<gpu>.json
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// NVML, loaded at run time from the driver (libnvidia-ml.so.1): the toolkit on the build machines
// has no NVML headers, and the driver library exists only where a GPU is. The few entry points
// used here have had these C signatures since NVML 7 (nvml.h).
using nvmlDevice_t = struct nvmlDevice_st*;
constexpr int NVML_SUCCESS = 0;
struct Nvml {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  int (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  int (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  int (*power_mw)(nvmlDevice_t, unsigned int*) = nullptr;
  int (*energy_mj)(nvmlDevice_t, unsigned long long*) = nullptr;  // Volta and later
};
Nvml nvml;

void load_nvml() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
  if (!lib)
    throw std::runtime_error("cannot load libnvidia-ml.so.1 (NVIDIA driver): " +
                             std::string(dlerror()));
  auto sym = [&](const char* n, bool required) {
    void* f = dlsym(lib, n);
    if (!f && required) throw std::runtime_error(std::string("NVML has no ") + n);
    return f;
  };
  nvml.init = reinterpret_cast<int (*)()>(sym("nvmlInit_v2", true));
  nvml.shutdown = reinterpret_cast<int (*)()>(sym("nvmlShutdown", true));
  nvml.handle_by_index = reinterpret_cast<int (*)(unsigned int, nvmlDevice_t*)>(
      sym("nvmlDeviceGetHandleByIndex_v2", true));
  nvml.name =
      reinterpret_cast<int (*)(nvmlDevice_t, char*, unsigned int)>(sym("nvmlDeviceGetName", true));
  nvml.power_mw =
      reinterpret_cast<int (*)(nvmlDevice_t, unsigned int*)>(sym("nvmlDeviceGetPowerUsage", true));
  nvml.energy_mj = reinterpret_cast<int (*)(nvmlDevice_t, unsigned long long*)>(
      sym("nvmlDeviceGetTotalEnergyConsumption", false));
}

void check_nvml(int r, const char* what) {
  if (r != NVML_SUCCESS)
    throw std::runtime_error(std::string(what) + ": NVML error " + std::to_string(r));
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDim = 256;

// One block per (sequence, head): scores of the query against every cached key (one warp per
// key, lanes over the head dimension), a block-wide softmax, then the weighted sum of values
// (each warp over a share of the keys, reduced across warps in shared memory).
// Layout: cache [S][H][N][D], q and out [S][H][D], all fp32.
__global__ void decode_attention(const float* __restrict__ q, const float* __restrict__ k_cache,
                                 const float* __restrict__ v_cache, float* __restrict__ out,
                                 int slots, int dim, float scale) {
  extern __shared__ float scores[];  // [slots]
  __shared__ float partial[kWarps][kMaxDim];
  __shared__ float reduce[kWarps];
  const int sh = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* qv = q + size_t(sh) * dim;
  const float* kc = k_cache + size_t(sh) * slots * dim;
  const float* vc = v_cache + size_t(sh) * slots * dim;

  for (int j = warp; j < slots; j += kWarps) {
    float s = 0.0f;
    for (int d = lane; d < dim; d += 32) s += qv[d] * kc[size_t(j) * dim + d];
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) scores[j] = s * scale;
  }
  __syncthreads();

  float m = -INFINITY;
  for (int j = threadIdx.x; j < slots; j += kThreads) m = fmaxf(m, scores[j]);
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = reduce[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, reduce[w]);
  __syncthreads();
  float sum = 0.0f;
  for (int j = threadIdx.x; j < slots; j += kThreads) {
    const float p = __expf(scores[j] - m);
    scores[j] = p;
    sum += p;
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) reduce[warp] = sum;
  __syncthreads();
  sum = 0.0f;
  for (int w = 0; w < kWarps; ++w) sum += reduce[w];

  for (int d = lane; d < dim; d += 32) partial[warp][d] = 0.0f;
  for (int j = warp; j < slots; j += kWarps) {
    const float p = scores[j];
    for (int d = lane; d < dim; d += 32) partial[warp][d] += p * vc[size_t(j) * dim + d];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < dim; d += kThreads) {
    float acc = 0.0f;
    for (int w = 0; w < kWarps; ++w) acc += partial[w][d];
    out[size_t(sh) * dim + d] = acc / sum;
  }
}

// Writes every (sequence, head)'s new key and value into cache slot `slot`.
__global__ void append_kv(const float* __restrict__ k, const float* __restrict__ v,
                          float* __restrict__ k_cache, float* __restrict__ v_cache, int slots,
                          int dim, int slot, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int sh = i / dim, d = i % dim;
  const size_t at = (size_t(sh) * slots + slot) * dim + d;
  k_cache[at] = k[i];
  v_cache[at] = v[i];
}

struct Options {
  int sequences = 64, heads = 12, dim = 64, tokens = 1024, warmup = 2, passes = 5;
  std::vector<int> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  std::string out;
};

struct Buffers {
  float *q = nullptr, *k = nullptr, *v = nullptr, *kc = nullptr, *vc = nullptr, *o = nullptr;
  ~Buffers() {
    for (float* p : {q, k, v, kc, vc, o}) cudaFree(p);
  }
};

void fill_random(float* device, size_t n, uint32_t seed) {
  std::vector<float> host(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);  // torch.rand, as in the paper
  for (auto& x : host) x = u(rng);
  check_cuda(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), "copy");
}

void allocate(Buffers& b, int sequences, int heads, int dim, int slots) {
  const size_t vec = size_t(sequences) * heads * dim, cache = vec * slots;
  for (float** p : {&b.q, &b.k, &b.v, &b.o})
    check_cuda(cudaMalloc(p, vec * sizeof(float)), "cudaMalloc");
  for (float** p : {&b.kc, &b.vc}) check_cuda(cudaMalloc(p, cache * sizeof(float)), "cudaMalloc");
  fill_random(b.q, vec, 1);
  fill_random(b.k, vec, 2);
  fill_random(b.v, vec, 3);
  fill_random(b.kc, cache, 4);
  fill_random(b.vc, cache, 5);
}

void step(const Buffers& b, int sequences, int heads, int dim, int slots, int t) {
  const int total = sequences * heads * dim;
  append_kv<<<(total + 255) / 256, 256>>>(b.k, b.v, b.kc, b.vc, slots, dim, t % slots, total);
  decode_attention<<<sequences * heads, kThreads, slots * sizeof(float)>>>(
      b.q, b.kc, b.vc, b.o, slots, dim, 1.0f / std::sqrt(float(dim)));
}

// The kernel against a plain CPU loop on a small case (after one append into slot 0).
void verify_kernel() {
  const int S = 2, H = 3, D = 64, N = 100;
  Buffers b;
  allocate(b, S, H, D, N);
  step(b, S, H, D, N, 0);
  check_cuda(cudaDeviceSynchronize(), "verification run");
  const size_t vec = size_t(S) * H * D, cache = vec * N;
  std::vector<float> q(vec), kc(cache), vc(cache), o(vec);
  check_cuda(cudaMemcpy(q.data(), b.q, vec * 4, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(kc.data(), b.kc, cache * 4, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(vc.data(), b.vc, cache * 4, cudaMemcpyDeviceToHost), "copy");
  check_cuda(cudaMemcpy(o.data(), b.o, vec * 4, cudaMemcpyDeviceToHost), "copy");
  double worst = 0.0;
  for (int sh = 0; sh < S * H; ++sh) {
    std::vector<double> s(N);
    double m = -1e300, sum = 0.0;
    for (int j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int d = 0; d < D; ++d) acc += double(q[sh * D + d]) * kc[(size_t(sh) * N + j) * D + d];
      s[j] = acc / std::sqrt(double(D));
      m = std::max(m, s[j]);
    }
    for (int j = 0; j < N; ++j) sum += (s[j] = std::exp(s[j] - m));
    for (int d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int j = 0; j < N; ++j) acc += s[j] * vc[(size_t(sh) * N + j) * D + d];
      worst = std::max(worst, std::fabs(acc / sum - o[sh * D + d]));
    }
  }
  std::fprintf(stderr, "kernel check against the CPU loop: max |difference| %.3g\n", worst);
  if (!(worst < 1e-4)) throw std::runtime_error("the decode kernel disagrees with the CPU loop");
}

// Board power in W, averaged over a background sampler while `work` runs; idle power before.
struct Metered {
  double seconds = 0.0, mean_power_w = 0.0, energy_counter_j = -1.0;
};

template <class Work>
Metered metered(nvmlDevice_t dev, Work work) {
  std::atomic<bool> done{false};
  std::vector<double> samples;
  std::thread sampler([&] {
    while (!done.load()) {
      unsigned int mw = 0;
      if (nvml.power_mw(dev, &mw) == NVML_SUCCESS) samples.push_back(mw / 1000.0);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  unsigned long long e0 = 0, e1 = 0;
  const bool have_counter = nvml.energy_mj && nvml.energy_mj(dev, &e0) == NVML_SUCCESS;
  cudaEvent_t a, z;
  check_cuda(cudaEventCreate(&a), "event");
  check_cuda(cudaEventCreate(&z), "event");
  check_cuda(cudaEventRecord(a), "event");
  work();
  check_cuda(cudaEventRecord(z), "event");
  check_cuda(cudaEventSynchronize(z), "event");
  float ms = 0.0f;
  check_cuda(cudaEventElapsedTime(&ms, a, z), "event");
  Metered m;
  if (have_counter && nvml.energy_mj(dev, &e1) == NVML_SUCCESS)
    m.energy_counter_j = double(e1 - e0) / 1000.0;  // mJ
  done = true;
  sampler.join();
  m.seconds = ms / 1000.0;
  for (double s : samples) m.mean_power_w += s / double(samples.size());
  cudaEventDestroy(a);
  cudaEventDestroy(z);
  return m;
}

double idle_power(nvmlDevice_t dev) {
  double sum = 0.0;
  for (int i = 0; i < 10; ++i) {
    unsigned int mw = 0;
    check_nvml(nvml.power_mw(dev, &mw), "nvmlDeviceGetPowerUsage");
    sum += mw / 1000.0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return sum / 10.0;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

std::string nvidia_smi_description() {
  std::string text;
  if (FILE* p =
          popen("nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm,"
                "clocks.max.mem --format=csv 2>/dev/null",
                "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) text += buf;
    pclose(p);
  }
  return text;
}

struct PassResult {
  int sequences = 0;
  double latency_per_token_s = 0, power_per_token_w = 0, energy_per_token_j = 0;
  double board_energy_per_token_j = 0, mean_power_w = 0, bytes_per_s = 0;
};

PassResult run_setting(nvmlDevice_t dev, const Options& o, int sequences, double idle_w,
                       int passes) {
  Buffers b;
  allocate(b, sequences, o.heads, o.dim, o.tokens);
  auto pass = [&] {
    for (int t = 0; t < o.tokens; ++t) step(b, sequences, o.heads, o.dim, o.tokens, t);
  };
  for (int i = 0; i < o.warmup; ++i) pass();
  check_cuda(cudaDeviceSynchronize(), "warm-up");
  const Metered m = metered(dev, [&] {
    for (int i = 0; i < passes; ++i) pass();
  });
  check_cuda(cudaGetLastError(), "decode kernels");
  const double tokens = double(sequences) * o.tokens * passes;
  PassResult r;
  r.sequences = sequences;
  r.latency_per_token_s = m.seconds / tokens;
  r.mean_power_w = m.mean_power_w;
  const double dynamic_w = std::max(0.0, m.mean_power_w - idle_w);
  r.power_per_token_w = dynamic_w / tokens * passes;  // the paper's field: mean power / (S x N)
  r.energy_per_token_j = dynamic_w * m.seconds / tokens;
  r.board_energy_per_token_j =
      (m.energy_counter_j >= 0 ? m.energy_counter_j : m.mean_power_w * m.seconds) / tokens;
  const double bytes_per_step =
      double(sequences) * o.heads * o.dim * (2.0 * o.tokens + 4.0) * sizeof(float);
  r.bytes_per_s = bytes_per_step * o.tokens * passes / m.seconds;
  std::fprintf(stderr, "S=%d: %.3g s per token, %.1f W (idle %.1f W), %.0f GB/s\n", sequences,
               r.latency_per_token_s, m.mean_power_w, idle_w, r.bytes_per_s / 1e9);
  return r;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + a);
      return argv[++i];
    };
    auto positive = [&](const std::string& v) {
      char* end = nullptr;
      const long x = std::strtol(v.c_str(), &end, 10);
      if (!end || *end || x < 1 || x > (1 << 20))
        throw std::runtime_error(a + ": '" + v + "' is not a positive integer");
      return int(x);
    };
    if (a == "--sequences")
      o.sequences = positive(value());
    else if (a == "--heads")
      o.heads = positive(value());
    else if (a == "--head-dim")
      o.dim = positive(value());
    else if (a == "--tokens")
      o.tokens = positive(value());
    else if (a == "--passes")
      o.passes = positive(value());
    else if (a == "--warmup")
      o.warmup = positive(value());
    else if (a == "--out")
      o.out = value();
    else if (a == "--batches") {
      o.batches.clear();
      std::string list = value(), item;
      for (size_t p = 0; p <= list.size(); ++p) {
        if (p == list.size() || list[p] == ',') {
          o.batches.push_back(positive(item));
          item.clear();
        } else {
          item += list[p];
        }
      }
    } else if (a == "--help") {
      std::printf(
          "gpu_attention_decode [--sequences 64] [--heads 12] [--head-dim 64] [--tokens 1024]\n"
          "                     [--passes 5] [--warmup 2] [--batches 1,2,...,256] [--out FILE]\n");
      std::exit(0);
    } else {
      throw std::runtime_error("unknown option " + a + " (see --help)");
    }
  }
  if (o.dim > kMaxDim) throw std::runtime_error("--head-dim must be <= 256");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount (is a GPU attached?)");
    load_nvml();
    check_nvml(nvml.init(), "nvmlInit");
    nvmlDevice_t dev;
    check_nvml(nvml.handle_by_index(0, &dev), "nvmlDeviceGetHandleByIndex");
    char name[96] = {0};
    check_nvml(nvml.name(dev, name, sizeof name), "nvmlDeviceGetName");
    verify_kernel();
    const double idle_w = idle_power(dev);
    const PassResult main = run_setting(dev, o, o.sequences, idle_w, o.passes);
    std::string sweep;
    for (int b : o.batches) {
      const PassResult r = run_setting(dev, o, b, idle_w, std::max(1, o.passes / 2));
      char line[512];
      std::snprintf(line, sizeof line,
                    "%s{\"S\": %d, \"mean_latency_per_token\": %.9g, \"mean_energy_per_token\": "
                    "%.9g, \"board_energy_per_token\": %.9g, \"mean_power_w\": %.6g, "
                    "\"achieved_bytes_per_s\": %.6g}",
                    sweep.empty() ? "" : ", ", r.sequences, r.latency_per_token_s,
                    r.energy_per_token_j, r.board_energy_per_token_j, r.mean_power_w,
                    r.bytes_per_s);
      sweep += line;
    }
    char head[2048];
    std::snprintf(head, sizeof head,
                  "{\"is_jetson\": false, \"is_sequential\": true, \"S\": %d, \"H\": %d, \"D_h\": "
                  "%d, \"N_tokens\": %d, \"mean_latency_per_token\": %.9g, "
                  "\"mean_power_per_token\": %.9g, \"mean_energy_per_token\": %.9g,\n"
                  " \"board_energy_per_token\": %.9g, \"idle_power_w\": %.6g, \"mean_power_w\": "
                  "%.6g, \"achieved_bytes_per_s\": %.6g,\n \"gpu\": \"%s\", \"protocol\": "
                  "\"gaincell bench/gpu/attention_decode.cu: fused fp32 decode kernel over a full "
                  "N-slot cache, CUDA-event timing, NVML power minus idle\",\n",
                  main.sequences, o.heads, o.dim, o.tokens, main.latency_per_token_s,
                  main.power_per_token_w, main.energy_per_token_j, main.board_energy_per_token_j,
                  idle_w, main.mean_power_w, main.bytes_per_s, json_escape(name).c_str());
    const std::string json = std::string(head) + " \"nvidia_smi\": \"" +
                             json_escape(nvidia_smi_description()) + "\",\n \"batch_sweep\": [" +
                             sweep + "]}\n";
    if (o.out.empty()) {
      std::fputs(json.c_str(), stdout);
    } else {
      const std::string tmp = o.out + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (!f || std::fputs(json.c_str(), f) < 0 || std::fclose(f) != 0 ||
          std::rename(tmp.c_str(), o.out.c_str()) != 0)
        throw std::runtime_error("cannot write " + o.out);
      std::fprintf(stderr, "wrote %s\n", o.out.c_str());
    }
    nvml.shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_attention_decode: error: %s\n", e.what());
    return 1;
  }
}
