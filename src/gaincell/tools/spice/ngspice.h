// In-process ngspice through its shared library (issue 6, point 1). libngspice.so.0 is loaded at
// run time with dlopen, so a missing library is a clear gaincell::Error and the rest of gaincell
// works without it. Defensive embedding after KiCad's ngspice.cpp (style lesson 15): C numeric
// locale around every call, netlists through ngSpice_Circ, "bg_run" with a bounded wait, noaskquit
// and nomoremode, all output captured, and a reload of the library after a ControlledExit.
//
// ngspice keeps global state, so there is one simulator per process: NgSpice::instance(). It is
// not meant to be used from several threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace gaincell::spice {

class NgSpice {
 public:
  // The process-wide simulator; loads the library on first use. Throws gaincell::Error when the
  // library cannot be loaded (path: $GAINCELL_NGSPICE_LIB, else "libngspice.so.0").
  static NgSpice& instance();
  // True when the library can be loaded (tests skip otherwise); never throws.
  static bool available(std::string* why = nullptr);

  // Loads a netlist (text, first line is the title). Throws gaincell::Error with ngspice's
  // messages when the netlist does not parse.
  void load_circuit(const std::string& netlist);
  // Runs the analyses of the loaded circuit in ngspice's background thread and waits at most
  // timeout_s seconds. Throws gaincell::Error with ngspice's messages when the simulation does not
  // converge, aborts or times out (then it is halted).
  void run(double timeout_s = 60.0);
  // Runs one interactive command (e.g. "alter", "op"); throws on reported errors.
  void command(const std::string& cmd);

  // Real part of vector `name` of the current plot (e.g. "v(store)", "vbl#branch", "time").
  std::vector<double> vector(const std::string& name);
  std::vector<std::string> vector_names();
  // Everything ngspice printed since the last load_circuit (stdout and stderr lines).
  std::string output_log() const;
  // Number of times the library was (re)loaded; > 1 after a controlled exit was recovered.
  int load_count() const;

  ~NgSpice();
  NgSpice(const NgSpice&) = delete;
  NgSpice& operator=(const NgSpice&) = delete;

  struct Impl;

 private:
  NgSpice();
  std::unique_ptr<Impl> impl_;
};

}  // namespace gaincell::spice
