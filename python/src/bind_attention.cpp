// The whole-sequence gain-cell attention of one layer, as the C++ trainer runs it
// (attention/gaincell_attention.h): per-head scalers, clamps and quantisers, the fast kernel,
// the output scaler; backward = the spec §4 surrogate gradient. Arrays are used in place and the
// GIL is released while the kernels run.
//
// Grouped-query attention: q and the output have H heads, k and v Hkv (dividing H); query head h
// reads key/value head h / (H / Hkv). The scalers are then one flat vector in the C++ parameter
// order, q.a[H] q.b[H] k.a[Hkv] k.b[Hkv] v.a[Hkv] v.b[Hkv] output.a[H] output.b[H] (with
// Hkv == H this is the [4, 2, H] layout flattened, which is also accepted).
//
// Python side: gaincell.torch wraps AttentionCore/AttentionCall in a torch.autograd.Function.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "bindings.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"

namespace gaincell::python {

namespace {

constexpr int kScalers = 4;  // q, k, v, output; each (a, b) per head

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Heads of scaler s (0..3): per query head for q and output, per key/value head for k and v.
int scaler_heads(int s, int H, int Hkv) {
  return s == 1 || s == 2 ? Hkv : H;
}

// Entries of the flat scaler vector: (a, b) x (2 H + 2 Hkv).
int scaler_count(int H, int Hkv) {
  return 4 * (H + Hkv);
}

// The variant whose cell model the configuration names (the C++ variants select the cell).
std::string variant_for(const HwConfig& hw) {
  for (const std::string& name : gaincell_attention_names())
    if (gaincell_cell_model(name) == hw.cell) return name;
  throw Error("hardware config: no gain-cell attention variant simulates cell model '" +
              to_string(hw.cell) + "'");
}

// The result of one forward: a private copy of the layer (holding what backward needs) and the
// scaler values it ran with. backward() may run once or more (e.g. retain_graph).
class AttentionCall {
 public:
  AttentionCall(const GainCellAttention& proto, const float* scalers)
      : attn_(proto), H_(proto.n_head()), Hkv_(proto.n_kv_head()) {
    const int n = scaler_count(H_, Hkv_);
    for (int i = 0; i < n; ++i) {
      if (!std::isfinite(scalers[i])) {
        throw py::value_error("scalers: non-finite value at flat index " + std::to_string(i));
      }
    }
    // Storage in param_specs() order: a, b of q, k, v, output (== the flat scaler layout), then
    // the 8 target buffers of the same sizes (unused here); gradients of the first 8 likewise.
    data_.assign(2 * n, 0.0f);
    grad_.assign(n, 0.0f);
    std::copy(scalers, scalers + n, data_.begin());
    std::vector<TensorRef> refs;
    size_t offset = 0;
    for (int i = 0; i < 16; ++i) {
      const int heads = scaler_heads((i % 8) / 2, H_, Hkv_);
      refs.push_back({data_.data() + offset, i < 8 ? grad_.data() + offset : nullptr, heads});
      offset += heads;
    }
    attn_.bind_params(refs);
  }

  GainCellAttention& attn() { return attn_; }
  std::vector<float>& grad() { return grad_; }
  int B = 0, T = 0;
  std::vector<py::ssize_t> scaler_shape;  // as the caller passed them ([4, 2, H] or flat)
  // Seconds spent inside the C++ layer (GIL released) by forward and the last backward, for the
  // overhead benchmark (bench/bench_python_attention.py).
  double forward_s = 0.0, backward_s = 0.0;

 private:
  GainCellAttention attn_;
  int H_, Hkv_;
  std::vector<float> data_, grad_;
};

class AttentionCore {
 public:
  AttentionCore(const HwConfig& hw, int n_head, int head_dim, int layer, const std::string& variant,
                bool use_reference_kernel, int n_kv_head) {
    if (n_head < 1 || head_dim < 1) throw py::value_error("n_head and head_dim must be >= 1");
    if (n_kv_head < 0 || (n_kv_head > 0 && n_head % n_kv_head != 0)) {
      throw py::value_error("n_kv_head (" + std::to_string(n_kv_head) + ") must divide n_head (" +
                            std::to_string(n_head) + ")");
    }
    AttentionContext ctx;
    ctx.n_head = n_head;
    ctx.n_kv_head = n_kv_head > 0 ? n_kv_head : n_head;
    ctx.head_dim = head_dim;
    ctx.layer = layer;
    ctx.hw = hw;
    ctx.hw.validate();
    const std::string name = variant.empty() ? variant_for(hw) : variant;
    if (!is_gaincell_attention(name)) {
      throw py::value_error("'" + name + "' is not a gain-cell attention variant");
    }
    proto_ = std::make_unique<GainCellAttention>(name, ctx);
    proto_->set_use_reference_kernel(use_reference_kernel);
  }

  int n_head() const { return proto_->n_head(); }
  int n_kv_head() const { return proto_->n_kv_head(); }
  int head_dim() const { return proto_->head_dim(); }
  std::string variant() const { return proto_->name(); }
  const HwConfig& hw() const { return proto_->hw(); }

  // q: [B, H, T, D], k, v: [B, Hkv, T, D] float32 C-contiguous; scalers [4, 2, H] (Hkv == H) or
  // flat [4 (H + Hkv)]. Returns (out, call).
  py::tuple forward(const py::array& q, const py::array& k, const py::array& v,
                    const py::array& scalers, bool keep) {
    const py::ssize_t H = n_head(), Hkv = n_kv_head(), D = head_dim();
    const auto shape = require_float_array(q, "q", {-1, H, -1, D});
    const std::vector<py::ssize_t> kv_shape = {shape[0], Hkv, shape[2], D};
    require_float_array(k, "k", kv_shape);
    require_float_array(v, "v", kv_shape);
    const auto scaler_shape = require_scalers(scalers);
    const int B = static_cast<int>(shape[0]), T = static_cast<int>(shape[2]);
    if (B < 1 || T < 1) throw py::value_error("q, k, v must have B >= 1 and T >= 1");
    auto call = std::make_shared<AttentionCall>(*proto_, static_cast<const float*>(scalers.data()));
    call->B = B;
    call->T = T;
    call->scaler_shape = scaler_shape;
    py::array_t<float> out(shape);
    {
      const float *qp = static_cast<const float*>(q.data()),
                  *kp = static_cast<const float*>(k.data()),
                  *vp = static_cast<const float*>(v.data());
      float* op = out.mutable_data();
      py::gil_scoped_release release;
      const auto start = std::chrono::steady_clock::now();
      call->attn().forward(qp, kp, vp, op, B, T, keep);
      call->forward_s = seconds_since(start);
    }
    return py::make_tuple(out, call);
  }

 private:
  // [4, 2, H] when the key/value heads are the query heads, else (or also) flat [4 (H + Hkv)].
  std::vector<py::ssize_t> require_scalers(const py::array& scalers) const {
    const py::ssize_t H = n_head(), Hkv = n_kv_head();
    if (H == Hkv && scalers.ndim() == 3) return require_float_array(scalers, "scalers", {4, 2, H});
    if (scalers.ndim() != 1 && H != Hkv) {
      throw py::value_error("scalers: with " + std::to_string(Hkv) + " key/value heads for " +
                            std::to_string(H) + " query heads they are one flat vector of " +
                            std::to_string(scaler_count(H, Hkv)) +
                            " (q.a, q.b [H], k.a, k.b, v.a, v.b [Hkv], output.a, output.b [H])");
    }
    return require_float_array(scalers, "scalers", {scaler_count(H, Hkv)});
  }

  std::unique_ptr<GainCellAttention> proto_;
};

// dout [B, H, T, D]; q, k, v the forward's inputs. Returns (dq, dk, dv, dscalers), dk and dv
// [B, Hkv, T, D] (summed over each group's query heads), dscalers shaped as the forward's scalers.
py::tuple call_backward(AttentionCall& call, const py::array& q, const py::array& k,
                        const py::array& v, const py::array& dout) {
  const py::ssize_t H = call.attn().n_head(), Hkv = call.attn().n_kv_head(),
                    D = call.attn().head_dim();
  const std::vector<py::ssize_t> shape = {call.B, H, call.T, D};
  const std::vector<py::ssize_t> kv_shape = {call.B, Hkv, call.T, D};
  require_float_array(q, "q", shape);
  require_float_array(k, "k", kv_shape);
  require_float_array(v, "v", kv_shape);
  require_float_array(dout, "grad_output", shape);
  py::array_t<float> dq(shape), dk(kv_shape), dv(kv_shape);
  py::array_t<float> dscalers(call.scaler_shape);
  {
    const float *qp = static_cast<const float*>(q.data()),
                *kp = static_cast<const float*>(k.data()),
                *vp = static_cast<const float*>(v.data()),
                *gp = static_cast<const float*>(dout.data());
    float *dqp = dq.mutable_data(), *dkp = dk.mutable_data(), *dvp = dv.mutable_data();
    py::gil_scoped_release release;
    const auto start = std::chrono::steady_clock::now();
    std::fill(call.grad().begin(), call.grad().end(), 0.0f);
    call.attn().backward(qp, kp, vp, gp, dqp, dkp, dvp, call.B, call.T);
    call.backward_s = seconds_since(start);
  }
  std::copy(call.grad().begin(), call.grad().end(), dscalers.mutable_data());
  return py::make_tuple(dq, dk, dv, dscalers);
}

// Mean and std of the scaler outputs of a training forward (spec §5.1), or None: [4, H] arrays,
// or with fewer key/value heads lists of 4 arrays ([H], [Hkv], [Hkv], [H]).
py::object call_statistics(AttentionCall& call) {
  const ScalerStatistics* s = call.attn().scaler_statistics();
  if (!s) return py::none();
  const py::ssize_t H = call.attn().n_head();
  if (call.attn().n_kv_head() != H) {
    py::list mean, std_;
    for (int i = 0; i < kScalers; ++i) {
      mean.append(
          py::array_t<float>(static_cast<py::ssize_t>(s->mean[i].size()), s->mean[i].data()));
      std_.append(py::array_t<float>(static_cast<py::ssize_t>(s->std[i].size()), s->std[i].data()));
    }
    return py::make_tuple(mean, std_);
  }
  py::array_t<float> mean(std::vector<py::ssize_t>{kScalers, H}), std_(mean.request().shape);
  for (int i = 0; i < kScalers; ++i) {
    std::copy(s->mean[i].begin(), s->mean[i].end(), mean.mutable_data() + i * H);
    std::copy(s->std[i].begin(), s->std[i].end(), std_.mutable_data() + i * H);
  }
  return py::make_tuple(mean, std_);
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def("gaincell_attention_names", &gaincell_attention_names);
  m.def("variant_for", &variant_for, py::arg("hw"),
        "The gain-cell attention variant whose cell model the configuration names.");

  py::class_<AttentionCall, std::shared_ptr<AttentionCall>>(m, "AttentionCall")
      .def("backward", &call_backward, py::arg("q"), py::arg("k"), py::arg("v"),
           py::arg("grad_output"))
      .def("statistics", &call_statistics)
      .def_readonly("forward_s", &AttentionCall::forward_s)
      .def_readonly("backward_s", &AttentionCall::backward_s);

  py::class_<AttentionCore>(m, "AttentionCore", R"(One layer's gain-cell attention core.

AttentionCore(hw, n_head, head_dim, layer=0, variant="", n_kv_head=0) builds the C++
GainCellAttention (variant "" = the one matching hw's cell model; n_kv_head 0 = n_head).
forward(q, k, v, scalers, keep) runs the whole-sequence kernel on float32 arrays q [B, H, T, D],
k, v [B, Hkv, T, D] with scalers [4, 2, H] (q, k, v, output x a, b; Hkv == H) or flat
[4 (H + Hkv)] (q.a, q.b, k.a, k.b, v.a, v.b, output.a, output.b) and returns (out, call);
call.backward(q, k, v, grad_output) returns (dq, dk, dv, dscalers). use_reference_kernel runs
the plain loop-level reference kernel (tests).)")
      .def(py::init<const HwConfig&, int, int, int, const std::string&, bool, int>(), py::arg("hw"),
           py::arg("n_head"), py::arg("head_dim"), py::arg("layer") = 0, py::arg("variant") = "",
           py::arg("use_reference_kernel") = false, py::arg("n_kv_head") = 0)
      .def("forward", &AttentionCore::forward, py::arg("q"), py::arg("k"), py::arg("v"),
           py::arg("scalers"), py::arg("keep") = true)
      .def_property_readonly("n_head", &AttentionCore::n_head)
      .def_property_readonly("n_kv_head", &AttentionCore::n_kv_head)
      .def_property_readonly("head_dim", &AttentionCore::head_dim)
      .def_property_readonly("variant", &AttentionCore::variant)
      .def_property_readonly("hw", &AttentionCore::hw);
}

}  // namespace gaincell::python
