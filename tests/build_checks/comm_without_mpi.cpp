// Compile check, part of every build that has MPI: core/comm.cpp as a build without MPI compiles
// it (GAINCELL_HAVE_MPI is set on comm.cpp alone, not on this file), so the single-process path
// cannot rot unseen. Never linked.
#include "../../src/gaincell/core/comm.cpp"
