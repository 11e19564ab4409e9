// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The embedded ngspice (issue 6, point 1): analyses against hand-derived results, and clear errors
// for a bad netlist, a non-converging simulation, a timeout, a controlled exit and a missing
// library.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/tools/spice/ngspice.h"

using gaincell::Error;
using gaincell::spice::NgSpice;
namespace fs = std::filesystem;

namespace {

#define SKIP_WITHOUT_NGSPICE()                                                     \
  do {                                                                             \
    std::string why;                                                               \
    if (!NgSpice::available(&why)) GTEST_SKIP() << "ngspice unavailable: " << why; \
  } while (0)

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

const char* kDivider = "divider\nV1 a 0 DC 1\nR1 a b 1k\nR2 b 0 3k\n.dc V1 0 2 0.5\n.end\n";

}  // namespace

TEST(SpiceNgspice, DcDividerMatchesOhmsLaw) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  sim.load_circuit(kDivider);
  sim.run(10);
  const auto a = sim.vector("a"), b = sim.vector("b");
  ASSERT_EQ(a.size(), 5u);
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_NEAR(a[k], 0.5 * k, 1e-12);
    EXPECT_NEAR(b[k], 0.75 * a[k], 1e-9);
  }
  EXPECT_THROW(sim.vector("nosuch"), Error);
}

TEST(SpiceNgspice, RcTransientMatchesExponential) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  // tau = 1k * 1n = 1 us; step at t = 0 with initial condition 0.
  sim.load_circuit("rc\nV1 a 0 DC 1\nR1 a b 1k\nC1 b 0 1n IC=0\n.tran 10n 5u 0 10n UIC\n.end\n");
  sim.run(10);
  const auto t = sim.vector("time"), v = sim.vector("b");
  ASSERT_GT(t.size(), 100u);
  for (size_t k = 0; k < t.size(); k += 37) EXPECT_NEAR(v[k], 1 - std::exp(-t[k] / 1e-6), 2e-3);
}

TEST(SpiceNgspice, BadNetlistGivesNgspiceMessage) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  const std::string e1 = error_of([&] { sim.load_circuit("t\nV1 a 0 1\nX1 a b nosuch\n.end\n"); });
  EXPECT_NE(e1.find("netlist rejected"), std::string::npos) << e1;
  EXPECT_NE(e1.find("nosuch"), std::string::npos) << e1;
  const std::string e2 = error_of([&] { sim.load_circuit("t\nV1 a 0 1\nQ7 zz\n.op\n.end\n"); });
  EXPECT_NE(e2.find("netlist rejected"), std::string::npos) << e2;
  EXPECT_NE(e2.find("q7 zz"), std::string::npos) << e2;
  // An undefined parameter makes ngspice give up entirely (a controlled exit): the message names
  // the parameter and the next load works on a reloaded library.
  const std::string e3 =
      error_of([&] { sim.load_circuit("t\nV1 a 0 1\nR1 a 0 {undefinedparam}\n.op\n.end\n"); });
  EXPECT_NE(e3.find("netlist rejected"), std::string::npos) << e3;
  EXPECT_NE(e3.find("Undefined parameter [undefinedparam]"), std::string::npos) << e3;
  // The simulator still works afterwards.
  sim.load_circuit(kDivider);
  sim.run(10);
  EXPECT_NEAR(sim.vector("b").back(), 1.5, 1e-9);
}

TEST(SpiceNgspice, NonConvergingSimulationGivesError) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  // Kirchhoff at node a demands 1 + v^2 = v / 1e12: no real solution.
  sim.load_circuit("nc\nB1 0 a I=1+v(a)*v(a)\nR1 a 0 1e12\n.op\n.end\n");
  const std::string e = error_of([&] { sim.run(20); });
  EXPECT_NE(e.find("simulation failed"), std::string::npos) << e;
  EXPECT_NE(e.find("imestep too small"), std::string::npos) << e;
  sim.load_circuit(kDivider);
  EXPECT_NO_THROW(sim.run(10));
}

TEST(SpiceNgspice, TimeoutHaltsTheRun) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  // Ten million forced 0.1 ps steps: far longer than the 0.2 s allowed.
  sim.load_circuit("long\nV1 a 0 SIN(0 1 1G)\nR1 a b 1k\nC1 b 0 1p\n.tran 0.1p 1u 0 0.1p\n.end\n");
  const std::string e = error_of([&] { sim.run(0.2); });
  EXPECT_NE(e.find("did not finish"), std::string::npos) << e;
  sim.load_circuit(kDivider);
  sim.run(10);
  EXPECT_NEAR(sim.vector("b").back(), 1.5, 1e-9);
}

TEST(SpiceNgspice, ControlledExitIsRecoveredByReloading) {
  SKIP_WITHOUT_NGSPICE();
  NgSpice& sim = NgSpice::instance();
  const int before = sim.load_count();
  const std::string e = error_of([&] { sim.command("quit"); });
  EXPECT_NE(e.find("exited"), std::string::npos) << e;
  sim.load_circuit(kDivider);
  sim.run(10);
  EXPECT_NEAR(sim.vector("b").back(), 1.5, 1e-9);
  EXPECT_EQ(sim.load_count(), before + 1);
}

TEST(SpiceNgspice, NumbersParseInTheCLocaleWhateverTheHostLocale) {
  SKIP_WITHOUT_NGSPICE();
  // Try a locale with a decimal comma; skip the check when none is installed.
  const char* old = std::setlocale(LC_NUMERIC, nullptr);
  const std::string saved = old ? old : "C";
  if (!std::setlocale(LC_NUMERIC, "de_DE.UTF-8") && !std::setlocale(LC_NUMERIC, "fr_FR.UTF-8"))
    GTEST_SKIP() << "no decimal-comma locale installed";
  NgSpice& sim = NgSpice::instance();
  sim.load_circuit("loc\nV1 a 0 DC 0.5\nR1 a b 1k\nR2 b 0 1k\n.op\n.end\n");
  sim.run(10);
  const double b = sim.vector("b").at(0);
  std::setlocale(LC_NUMERIC, saved.c_str());
  EXPECT_NEAR(b, 0.25, 1e-12);
}

TEST(SpiceNgspice, MissingLibraryIsAClearCliError) {
  const fs::path out = fs::temp_directory_path() / ("gaincell_nolib_" + std::to_string(getpid()));
  const std::string cmd = "GAINCELL_NGSPICE_LIB=/nonexistent/libngspice.so " +
                          std::string(GAINCELL_CLI_PATH) + " characterize --quick --out " +
                          out.string() + " > " + out.string() + ".log 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  const std::string log = gaincell::read_text_file(out.string() + ".log");
  EXPECT_NE(log.find("gaincell: error: cannot load the ngspice shared library"), std::string::npos)
      << log;
  EXPECT_FALSE(fs::exists(out / "device.json"));  // nothing half-written
  fs::remove(out.string() + ".log");
  fs::remove_all(out);
}
