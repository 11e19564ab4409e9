#include "gaincell/tools/spice/ngspice.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <clocale>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "gaincell/core/error.h"

#if GAINCELL_HAVE_NGSPICE
#include <ngspice/sharedspice.h>
#endif

// ngspice keeps allocations alive until the process exits (and after a controlled exit, until it
// is unloaded); they are not gaincell's leaks. Weak, so that a program can supply its own list.
extern "C" __attribute__((weak)) const char* __lsan_default_suppressions() {
  return "leak:libngspice.so\n";
}

namespace gaincell::spice {

namespace {

// Sets the C numeric locale for the lifetime of the guard, so ngspice parses "0.5" as a number
// whatever locale the host program uses (style lesson 15).
class CLocaleGuard {
 public:
  CLocaleGuard() {
    const char* old = std::setlocale(LC_NUMERIC, nullptr);
    saved_ = old ? old : "C";
    std::setlocale(LC_NUMERIC, "C");
  }
  ~CLocaleGuard() { std::setlocale(LC_NUMERIC, saved_.c_str()); }

 private:
  std::string saved_;
};

[[maybe_unused]] std::string library_path() {
  const char* env = std::getenv("GAINCELL_NGSPICE_LIB");
  return (env && *env) ? env : "libngspice.so.0";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// ngspice reports failures only as text; these fragments mark an analysis or parse that failed.
[[maybe_unused]] bool is_error_line(const std::string& line) {
  const std::string l = lower(line);
  if (l.find("warning") != std::string::npos) return false;
  static const char* kMarks[] = {"error",          "timestep too small",
                                 "aborted",        "singular matrix",
                                 "no convergence", "iteration limit",
                                 "unknown subckt", "unable to find definition",
                                 "not parsed",     "fatal"};
  for (const char* m : kMarks)
    if (l.find(m) != std::string::npos) return true;
  return false;
}

// Stderr lines worth quoting before an error: not progress notes or unrelated warnings.
[[maybe_unused]] bool is_context_line(const std::string& body) {
  if (body.empty()) return false;
  const std::string l = lower(body);
  for (const char* noise : {"warning", "note:", "trying gmin", "remcirc", "supplies reduced"})
    if (l.find(noise) != std::string::npos) return false;
  return true;
}

}  // namespace

#if GAINCELL_HAVE_NGSPICE

struct NgSpice::Impl {
  using InitFn = int (*)(SendChar*, SendStat*, ControlledExit*, SendData*, SendInitData*,
                         BGThreadRunning*, void*);
  using CommandFn = int (*)(char*);
  using CircFn = int (*)(char**);
  using VecInfoFn = pvector_info (*)(char*);
  using CurPlotFn = char* (*)();
  using AllVecsFn = char** (*)(char*);
  using RunningFn = NG_BOOL (*)();

  void* handle = nullptr;
  InitFn init = nullptr;
  CommandFn command = nullptr;
  CircFn circ = nullptr;
  VecInfoFn vec_info = nullptr;
  CurPlotFn cur_plot = nullptr;
  AllVecsFn all_vecs = nullptr;
  RunningFn running = nullptr;
  int loads = 0;

  mutable std::mutex mutex;
  std::vector<std::string> lines;   // all output since the last circuit load
  std::vector<std::string> errors;  // error lines (and context) since the last clear_errors()
  int trailing_context = 0;
  std::vector<std::string> recent;  // last stderr lines that may explain the next error
  std::atomic<bool> exit_requested{false};
  std::atomic<bool> bg_running{false};

  static int on_char(char* text, int, void* self) {
    auto* impl = static_cast<Impl*>(self);
    std::string line = text ? text : "";
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->lines.push_back(line);
    // ngspice prefixes every line with "stdout " or "stderr ". An error line is often followed by
    // the offending netlist line, so the next two stderr lines are kept with it.
    const bool is_stderr = line.rfind("stderr", 0) == 0;
    const std::string body = line.substr(std::min<size_t>(7, line.size()));
    // Lines just before it ("Undefined parameter [x]") are kept too.
    if (is_stderr && is_error_line(line)) {
      for (auto& r : impl->recent) impl->errors.push_back(r);
      impl->recent.clear();
      impl->errors.push_back(body);
      impl->trailing_context = 2;
    } else if (is_stderr && impl->trailing_context > 0 && !body.empty()) {
      impl->errors.push_back(body);
      --impl->trailing_context;
    } else if (is_stderr && is_context_line(body)) {
      impl->recent.push_back(body);
      if (impl->recent.size() > 6) impl->recent.erase(impl->recent.begin());
    }
    return 0;
  }
  static int on_stat(char*, int, void*) { return 0; }
  static int on_exit(int status, NG_BOOL, NG_BOOL, int, void* self) {
    auto* impl = static_cast<Impl*>(self);
    impl->exit_requested = true;
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->errors.push_back("ngspice exited (status " + std::to_string(status) + ")");
    return status;
  }
  static int on_data(pvecvaluesall, int, int, void*) { return 0; }
  static int on_init_data(pvecinfoall, int, void*) { return 0; }
  static int on_bg(NG_BOOL not_running, int, void* self) {
    // sharedspice.h documents the flag as "running", but ngspice passes true when the thread ends.
    static_cast<Impl*>(self)->bg_running = !not_running;
    return 0;
  }

  template <typename Fn>
  Fn symbol(const char* name) {
    void* p = dlsym(handle, name);
    if (!p) throw Error(std::string("ngspice library lacks symbol '") + name + "'");
    return reinterpret_cast<Fn>(p);
  }

  void load() {
    const std::string path = library_path();
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      throw Error("cannot load the ngspice shared library '" + path +
                  "': " + (why ? why : "unknown error") +
                  " (install libngspice0 or set GAINCELL_NGSPICE_LIB)");
    }
    try {
      init = symbol<InitFn>("ngSpice_Init");
      command = symbol<CommandFn>("ngSpice_Command");
      circ = symbol<CircFn>("ngSpice_Circ");
      vec_info = symbol<VecInfoFn>("ngGet_Vec_Info");
      cur_plot = symbol<CurPlotFn>("ngSpice_CurPlot");
      all_vecs = symbol<AllVecsFn>("ngSpice_AllVecs");
      running = symbol<RunningFn>("ngSpice_running");
    } catch (...) {
      dlclose(handle);
      handle = nullptr;
      throw;
    }
    CLocaleGuard locale;
    exit_requested = false;
    init(on_char, on_stat, on_exit, on_data, on_init_data, on_bg, this);
    raw_command("set noaskquit");
    raw_command("set nomoremode");
    ++loads;
  }

  void unload() {
    if (handle) dlclose(handle);
    handle = nullptr;
  }

  // After a controlled exit ngspice must not be used again: unload and load it afresh.
  void recover_if_exited() {
    if (!exit_requested) return;
    unload();
    load();
  }

  void raw_command(const std::string& cmd) {
    std::string copy = cmd;
    command(copy.data());
  }

  void clear_errors() {
    std::lock_guard<std::mutex> lock(mutex);
    errors.clear();
    recent.clear();
    trailing_context = 0;
  }

  std::string take_errors() {
    std::lock_guard<std::mutex> lock(mutex);
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "; ") + e;
    errors.clear();
    recent.clear();
    trailing_context = 0;
    return all;
  }
};

NgSpice::NgSpice() : impl_(std::make_unique<Impl>()) {
  impl_->load();
}

NgSpice::~NgSpice() = default;  // ngspice is left loaded until process exit (its threads may live)

NgSpice& NgSpice::instance() {
  static std::unique_ptr<NgSpice> the;
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  if (!the) the.reset(new NgSpice());
  return *the;
}

bool NgSpice::available(std::string* why) {
  try {
    instance();
    return true;
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
}

void NgSpice::load_circuit(const std::string& netlist) {
  impl_->recover_if_exited();
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->lines.clear();
  }
  impl_->clear_errors();
  std::vector<std::string> lines;
  std::istringstream in(netlist);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  require(!lines.empty(), "ngspice: empty netlist");
  const bool has_end = std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
    return lower(l).rfind(".end", 0) == 0 && lower(l).rfind(".ends", 0) != 0 &&
           lower(l).rfind(".endc", 0) != 0;
  });
  if (!has_end) lines.push_back(".end");
  std::vector<char*> ptrs;
  for (auto& l : lines) ptrs.push_back(l.data());
  ptrs.push_back(nullptr);
  CLocaleGuard locale;
  impl_->raw_command("remcirc");  // drop a previously loaded circuit (error when none: ignored)
  impl_->clear_errors();
  const int rc = impl_->circ(ptrs.data());
  std::string errors = impl_->take_errors();
  if (rc != 0 || !errors.empty() || impl_->exit_requested) {
    impl_->recover_if_exited();
    throw Error("ngspice: netlist rejected: " + (errors.empty() ? "ngSpice_Circ failed" : errors));
  }
}

void NgSpice::run(double timeout_s) {
  impl_->recover_if_exited();
  impl_->clear_errors();
  CLocaleGuard locale;
  impl_->bg_running = true;
  impl_->raw_command("bg_run");
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // Wait for the thread to start and stop; the callback and ngSpice_running() both report it.
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  while ((impl_->bg_running || impl_->running()) && elapsed() < timeout_s)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (impl_->bg_running || impl_->running()) {
    impl_->raw_command("bg_halt");
    for (int k = 0; k < 2000 && impl_->running(); ++k)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    impl_->take_errors();
    throw Error("ngspice: simulation did not finish within " + std::to_string(timeout_s) +
                " s (halted)");
  }
  const std::string errors = impl_->take_errors();
  if (!errors.empty() || impl_->exit_requested) {
    impl_->recover_if_exited();
    throw Error("ngspice: simulation failed: " + errors);
  }
}

void NgSpice::command(const std::string& cmd) {
  impl_->recover_if_exited();
  impl_->clear_errors();
  CLocaleGuard locale;
  impl_->raw_command(cmd);
  const std::string errors = impl_->take_errors();
  if (!errors.empty()) throw Error("ngspice: command '" + cmd + "' failed: " + errors);
}

std::vector<double> NgSpice::vector(const std::string& name) {
  std::string copy = name;
  CLocaleGuard locale;
  pvector_info info = impl_->vec_info(copy.data());
  if (!info || info->v_length <= 0)
    throw Error("ngspice: the current plot has no vector '" + name + "'");
  std::vector<double> out(static_cast<size_t>(info->v_length));
  if (info->v_realdata) {
    std::copy(info->v_realdata, info->v_realdata + info->v_length, out.begin());
  } else if (info->v_compdata) {
    for (int k = 0; k < info->v_length; ++k) out[k] = info->v_compdata[k].cx_real;
  } else {
    throw Error("ngspice: vector '" + name + "' has no data");
  }
  return out;
}

std::vector<std::string> NgSpice::vector_names() {
  std::vector<std::string> names;
  char* plot = impl_->cur_plot();
  if (!plot) return names;
  char** vecs = impl_->all_vecs(plot);
  for (int k = 0; vecs && vecs[k]; ++k) names.emplace_back(vecs[k]);
  return names;
}

std::string NgSpice::output_log() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::string all;
  for (const auto& l : impl_->lines) all += l + "\n";
  return all;
}

int NgSpice::load_count() const {
  return impl_->loads;
}

#else  // !GAINCELL_HAVE_NGSPICE

struct NgSpice::Impl {};
NgSpice::NgSpice() {
  throw Error("gaincell was built without the ngspice header (install libngspice0-dev)");
}
NgSpice::~NgSpice() = default;
NgSpice& NgSpice::instance() {
  static NgSpice* never = nullptr;
  NgSpice probe;  // throws
  return *never;
}
bool NgSpice::available(std::string* why) {
  if (why) *why = "gaincell was built without the ngspice header (install libngspice0-dev)";
  return false;
}
void NgSpice::load_circuit(const std::string&) {}
void NgSpice::run(double) {}
void NgSpice::command(const std::string&) {}
std::vector<double> NgSpice::vector(const std::string&) {
  return {};
}
std::vector<std::string> NgSpice::vector_names() {
  return {};
}
std::string NgSpice::output_log() const {
  return {};
}
int NgSpice::load_count() const {
  return 0;
}

#endif

}  // namespace gaincell::spice
